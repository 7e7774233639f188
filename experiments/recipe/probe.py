"""Where in the network does a run tell the two senses of rotation apart?

    python experiments/recipe/probe.py [RUN_DIR ...] [--clips 300] [--out experiments/recipe]

For each run (a ``src/train.py`` run directory: its ``config.yaml`` and ``checkpoints/last.ckpt``) and
each stage of its backbone: the stage's output averaged over space and kept per frame, ``(T x C)``
features of a clip, evaluated as in validation (centre crop, middle frame of each segment). A
logistic regression (float64, L2, fit from scratch on ``--clips`` rotation clips of the training
split) tells clockwise from counter-clockwise on the rotation clips of the validation and test
splits; its accuracy (0.5: chance) says how far into the network the sense of rotation is readable.
Writes ``probe.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import machine  # noqa: E402

from tsm.models.checkpoints import load_recognizer  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
DEFAULT_RUNS = [
    RUNS / "screen" / "default_seed3",
    RUNS / "seed_split" / "init3_order103",
    RUNS / "seed_split" / "init103_order3",
    RUNS / "screen" / "reverse_seed42",
]
ROTATION = ("rotate_clockwise", "rotate_counterclockwise")


def rotation_clips(data, splits: list[str], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` rotation clips of ``splits`` as evaluation sees them, and 0/1 for their sense."""
    clips, senses = [], []
    for split in splits:
        dataset = data.unaugmented(split)
        classes = list(dataset.source.classes)
        wanted = {classes.index(name): sense for sense, name in enumerate(ROTATION)}
        for index in range(len(dataset)):
            if len(clips) == count:
                break
            if dataset.source.label(index) in wanted:
                clip, label, _ = dataset[index]
                clips.append(clip)
                senses.append(wanted[label])
    if len(set(senses)) < 2:
        raise ValueError(f"the {'+'.join(splits)} split(s) need clips of both {ROTATION}; found {len(clips)} clips")
    return torch.stack(clips), torch.tensor(senses)


def stage_features(model, clips: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(clips, T*C)`` per backbone stage (spatial mean, frames kept), and the per-frame logits."""
    outputs: dict[str, torch.Tensor] = {}
    stages = model.backbone.blocks
    hooks = [
        stage.register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(f"stage {i}", out))
        for i, stage in enumerate(stages)
    ]
    try:
        with torch.inference_mode():
            logits = model.frame_logits(clips)
    finally:
        for hook in hooks:
            hook.remove()
    b = clips.shape[0]
    features = {name: out.mean((2, 3)).reshape(b, -1) for name, out in outputs.items()}
    return {**features, "logits": logits.reshape(b, -1)}


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Accuracy of an L2-regularised logistic regression fit on standardised ``train_x``."""
    a, b = train_x.double(), test_x.double()
    mean, std = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mean) / std, (b - mean) / std
    weight = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(a @ weight + bias, train_y.double()) + 1e-2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((b @ weight + bias > 0).long() == test_y).double().mean().item()


def probe_run(run_dir: Path, count: int) -> dict[str, float]:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    data = hydra.utils.instantiate({**OmegaConf.to_container(cfg.data, resolve=True), "log_dir": None})
    model = load_recognizer(run_dir / "checkpoints" / "last.ckpt").eval()
    train_x, train_y = rotation_clips(data, ["train"], count)
    test_x, test_y = rotation_clips(data, ["val", "test"], count)
    train_f, test_f = stage_features(model, train_x), stage_features(model, test_x)
    return {name: probe_accuracy(train_f[name], train_y, test_f[name], test_y) for name in train_f}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    results = {run: probe_run(run, args.clips) for run in args.runs}
    names = list(next(iter(results.values())))
    lines = [
        f"`python experiments/recipe/probe.py` ({machine()}): accuracy of a linear probe telling clockwise from "
        "counter-clockwise rotation clips (0.5: chance), per backbone stage of each run's last checkpoint.",
        "",
        f"| run | val top-1 (last) | {' | '.join(names)} |",
        "|---|---|" + "---|" * len(names),
    ]
    for run, accs in results.items():
        metrics = OmegaConf.load(run / "metrics.json") if (run / "metrics.json").is_file() else {}
        val = f"{metrics['val/acc']:.3f}" if "val/acc" in metrics else "-"
        label = run.relative_to(RUNS) if run.is_relative_to(RUNS) else run.name
        lines.append(f"| {label} | {val} | " + " | ".join(f"{accs[n]:.2f}" for n in names) + " |")
    (args.out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
