"""What one training step of the from-scratch recipe costs, per backbone and input size, on this machine.

    python -m experiments.recipe.step_time [--repeats 5] [--out experiments/recipe]

Each candidate is the default run's model (``conf/model/default.yaml``: in-place shift, channels-last
memory) with the overrides of ``CANDIDATES``, built as ``src/train.py`` builds it. A step is the forward
pass of a training batch (16 clips of 8 frames, random pixels and labels), cross-entropy, the backward
pass and the recipe's optimizer step (``TSMLitModule.recipe_optimizer``: SGD with momentum and weight decay,
one fused kernel where torch has it), on all of torch's threads, in the precision ``src/train.py`` resolves
(the default ``trainer.precision=auto``: ``bf16-mixed`` on a CPU with native bf16, the forward and the loss in
bf16 autocast as Lightning runs them); median of interleaved repeats, so that machine drift hits every
candidate alike. Writes ``step_time.md`` with each step's time and its ratio to
the default's: a run's training takes about its steps x this, so a candidate 1.1x slower per step
needs a tenth fewer steps to keep the default's wall time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from torch.nn import functional as F

from experiments.common import compose_train, interleaved, machine
from tsm.benchmark import count
from tsm.training.precision import resolve_precision

# name -> overrides of the default run (the default first: the reference of the ratios)
CANDIDATES = {
    "default (resnet10t_050, 64x64)": [],
    "default in float32": ["trainer.precision=32-true"],
    "mobilenetv2_050 (the previous default), 64x64": ["model.backbone=mobilenetv2_050"],
    "mobilenetv2_050 in bf16 mixed precision": ["model.backbone=mobilenetv2_050", "trainer.precision=bf16-mixed"],
    "mobilenetv2_050, 80x80": ["model.backbone=mobilenetv2_050", "data.crop_size=80"],
    "mobilenetv2_100, 64x64": ["model.backbone=mobilenetv2_100"],
    "resnet10t (full width), 64x64": ["model.backbone=resnet10t"],
    "resnet18, 64x64": ["model.backbone=resnet18"],
}


def training_step(overrides: list[str], batch: int) -> tuple[Callable[[], None], dict[str, int], str]:
    """One SGD step of the default run's model with ``overrides``, its parameters and MACs per clip, and its
    precision (``auto`` resolved as ``src/train.py`` resolves it)."""
    cfg = compose_train(overrides)
    module = hydra.utils.instantiate(cfg.model).train()
    resolve_precision(cfg, module.net)
    size, frames = cfg.data.crop_size, cfg.data.num_segments
    clips = torch.rand(batch, frames, 3, size, size)
    labels = torch.randint(cfg.data.num_classes, (batch,))
    optimizer = module.recipe_optimizer(batch)  # as src/train.py's run steps: groups, decay, fused update
    bf16 = cfg.trainer.precision == "bf16-mixed"  # as Lightning runs it: the forward and the loss under autocast

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(module(clips), labels)
        loss.backward()
        optimizer.step()

    return step, count(module.net, (1, frames, 3, size, size)), cfg.trainer.precision


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    chosen = list(CANDIDATES)
    built = {name: training_step(CANDIDATES[name], args.batch) for name in chosen}
    ms = interleaved({name: step for name, (step, _, _) in built.items()}, args.repeats, inference=False)
    reference = ms[chosen[0]]
    lines = [
        f"Command: `python -m experiments.recipe.step_time --repeats {args.repeats} --batch {args.batch}`",
        "",
        f"Machine: {machine()}. One training step: {args.batch} clips of 8 frames, forward, cross-entropy, "
        f"backward, SGD; median of {args.repeats} interleaved repeats. Ratio: to the first row.",
        "",
        "| model | overrides | precision | params (M) | MMACs per clip | ms per step | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in chosen:
        _, counts, precision = built[name]
        overrides = " ".join(CANDIDATES[name]) or "-"
        lines.append(
            f"| {name} | `{overrides}` | {precision} | {counts['params'] / 1e6:.2f} | {counts['macs'] / 1e6:.0f} | "
            f"{ms[name]:.0f} | {ms[name] / reference:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
