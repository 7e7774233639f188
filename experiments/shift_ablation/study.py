"""How much to shift, and where: fold_div and placement on synthetic gestures, accuracy and step time.

    python -m experiments.shift_ablation.study [--scale quick|small|tiny] [--parallel 1] [--out DIR]

Variants of the default model (TSM over ResNet10-T x0.5, one BasicBlock per stage) from scratch (8 segments,
bidirectional shift): fold_div 2, 4, 8, 16 (shifting 1, 1/2, 1/4, 1/8 of the channels) in every residual
branch; fold_div 8 in every other stage's block, in the last two stages only, and in-place; TSN (no shift)
for reference. Each is trained with
the budget of the tsm_vs_tsn study at its last resolution and seeds (runs reused from
``<out>/runs/<scale>/``; TSN, fold_div 8 and in-place are that study's own runs), and its training step
(forward, backward, SGD update) is timed in this process, interleaved, at the study's batch.
Writes ``results_<scale>.md`` and ``shift_ablation_<scale>.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from experiments.common import crop_of, interleaved, machine, run_many, runs_note, summary
from experiments.tsm_vs_tsn.study import SCALES as TSM_VS_TSN_SCALES
from experiments.tsm_vs_tsn.study import budget_overrides
from experiments.tsm_vs_tsn.study import run_dir as tsm_vs_tsn_run_dir
from tsm.models import build_recognizer

BACKBONE = "resnet10t_050"  # the default model's (conf/model/default.yaml)
# the fold_div 8, residual, all-blocks shift of the paper
PAPER = {"enabled": True, "fold_div": 8, "direction": "bidirectional", "place": "residual", "blocks": "all"}
# ResNet10-T has one block per stage: every other block is stages 0 and 2, the last stages are 2 and 3
EVERY_OTHER, LAST_STAGES = [0, 2], [2, 3]
VARIANTS = {
    "TSN (no shift)": {**PAPER, "enabled": False},
    "1/1 shifted (fold_div 2)": {**PAPER, "fold_div": 2},
    "1/2 shifted (fold_div 4)": {**PAPER, "fold_div": 4},
    "1/4 shifted (fold_div 8)": PAPER,
    "1/8 shifted (fold_div 16)": {**PAPER, "fold_div": 16},
    "fold_div 8, every other block": {**PAPER, "blocks": EVERY_OTHER},
    "fold_div 8, last stages only": {**PAPER, "blocks": LAST_STAGES},
    "fold_div 8, in-place": {**PAPER, "place": "inplace"},
}
# the budget, last resolution and seeds of the tsm_vs_tsn study (what a 2-core CPU affords)
SCALES = {
    name: {**s, "frame": list(s["frames"])[-1], "seeds": list(s["frames"].values())[-1]}
    for name, s in TSM_VS_TSN_SCALES.items()
}
# variants that are runs of the tsm_vs_tsn study: shared, not trained twice
SHARED = {"TSN (no shift)": "TSN", "1/4 shifted (fold_div 8)": "TSM residual", "fold_div 8, in-place": "TSM in-place"}


def overrides(s: dict, shift: dict, seed: int) -> list[str]:
    blocks = shift["blocks"] if isinstance(shift["blocks"], str) else "[" + ",".join(map(str, shift["blocks"])) + "]"
    return [
        *budget_overrides(s, s["frame"], seed),
        f"model.backbone={BACKBONE}",
        *(f"model.shift.{key}={value}" for key, value in shift.items() if key != "blocks"),
        f"model.shift.blocks={blocks}",
    ]


def step_times(s: dict, repeats: int) -> dict[str, float]:
    """Median ms of one training step per variant, timed interleaved."""
    crop = crop_of(s["frame"])
    clips = torch.randn(s["batch"], 8, 3, crop, crop)
    labels = torch.randint(0, 9, (s["batch"],))
    fns = {}
    for name, shift in VARIANTS.items():
        model = build_recognizer(BACKBONE, 9, 8, shift=shift).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(clips), labels).backward()
            optimizer.step()

        fns[name] = step
    return interleaved(fns, repeats, inference=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="quick")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at a time, one thread each")
    parser.add_argument("--repeats", type=int, default=20, help="timed training steps per variant")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument(
        "--tsm-vs-tsn",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tsm_vs_tsn",
        help="the tsm_vs_tsn study's folder, whose runs serve the shared variants (trained here if missing)",
    )
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    shared_runs = args.tsm_vs_tsn / "runs" / args.scale
    grid = [(name, seed) for seed in s["seeds"] for name in VARIANTS]

    def run_dir(name: str, seed: int) -> Path:
        if name in SHARED:
            return tsm_vs_tsn_run_dir(shared_runs, s["frame"], SHARED[name], seed)
        return runs / f"variant{list(VARIANTS).index(name)}_seed{seed}"

    jobs = [(overrides(s, VARIANTS[name], seed), run_dir(name, seed)) for name, seed in grid]
    metrics = dict(zip(grid, run_many(jobs, args.parallel), strict=True))
    write_report(args.out, args.scale, s, metrics, step_times(s, args.repeats), runs_note(args.parallel))


def write_report(out: Path, scale: str, s: dict, metrics: dict, times: dict[str, float], note: str) -> None:
    crop = crop_of(s["frame"])
    baseline = times["TSN (no shift)"]
    lines = [
        f"Scale `{scale}`: the default model (TSM over ResNet10-T x0.5) from scratch, 8 segments of "
        f"{crop}x{crop}, {s['train']} training clips, {s['epochs']} epochs, batch {s['batch']}, "
        f"{s['eval']} test clips, seeds {list(s['seeds'])}; "
        f"{note}; step time: forward + backward + SGD update at batch {s['batch']}, median of interleaved "
        f"repeats; {machine()}.",
        "",
        "| variant | test top-1 (mean, min-max over seeds) | step ms | step / TSN |",
        "|---|---|---|---|",
    ]
    accs = {name: [metrics[(name, seed)]["test/acc"] for seed in s["seeds"]] for name in VARIANTS}
    for name in VARIANTS:
        lines.append(f"| {name} | {summary(accs[name])} | {times[name]:.1f} | {times[name] / baseline:.3f} |")
    (out / f"results_{scale}.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    names = list(VARIANTS)[::-1]  # first variant on top
    for i, name in enumerate(names):
        ax.scatter(accs[name], [i] * len(accs[name]), color="tab:blue", s=18)
        ax.vlines(sum(accs[name]) / len(accs[name]), i - 0.3, i + 0.3, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("test top-1 (dots: seeds, bar: mean)")
    ax.set_title(f"Shift ablation, synthetic gestures {crop}x{crop}")
    fig.tight_layout()
    fig.savefig(out / f"shift_ablation_{scale}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
