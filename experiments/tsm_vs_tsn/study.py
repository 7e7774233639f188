"""TSN vs TSM (residual, in-place, causal) on synthetic gestures, at one or two resolutions, over seeds.

    python -m experiments.tsm_vs_tsn.study [--scale quick|small|tiny] [--parallel 1] [--out experiments/tsm_vs_tsn]

Same budget for every variant: the default model (``python src/train.py``: TSM over ResNet10-T x0.5 from
scratch, 8 segments); only ``model/shift`` differs. Runs land in ``<out>/runs/<scale>/`` and are reused when
present, so the table and the plot can be regenerated without training again.
Writes ``results_<scale>.md`` (test top-1, mean and min-max over seeds) and ``tsm_vs_tsn_<scale>.png``
(validation top-1 per epoch, mean and min-max band).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from experiments.common import (
    crop_of,
    epoch_curve,
    machine,
    plot_band,
    run_many,
    runs_note,
    summary,
    synthetic_overrides,
)

SCALES = {
    # frame size (the crop is 8/9 of it) -> seeds; training and evaluation clips, epochs, batch size.
    # quick: the default run's budget (python src/train.py) at its resolution, one seed (4 runs, about 40
    # minutes on one core); small: that and a lower resolution, three seeds (24 runs, hours on 2 CPU cores)
    "quick": {"frames": {72: (1,)}, "train": 3000, "eval": 200, "epochs": 7, "batch": 16},
    "small": {"frames": {72: (1, 2, 3), 54: (1, 2, 3)}, "train": 3000, "eval": 200, "epochs": 7, "batch": 16},
    "tiny": {"frames": {18: (1,), 27: (1,)}, "train": 8, "eval": 4, "epochs": 2, "batch": 4},
}
VARIANTS = {"TSN": "none", "TSM residual": "residual", "TSM in-place": "inplace", "TSM causal": "causal"}
COLORS = ("tab:gray", "tab:blue", "tab:green", "tab:orange")


def budget_overrides(s: dict, frame: int, seed: int) -> list[str]:
    """The data, schedule and seed of one run of scale ``s`` at ``frame``-pixel frames (the default model)."""
    extra = [f"data.batch_size={s['batch']}", f"trainer.max_epochs={s['epochs']}", f"seed={seed}"]
    extra.append("trainer.precision=32-true")  # as its runs were made (the default is now bf16 where the CPU has it)
    return [*synthetic_overrides(s["train"], s["eval"], frame), *extra]


def overrides(s: dict, frame: int, shift: str, seed: int) -> list[str]:
    return [*budget_overrides(s, frame, seed), f"model/shift={shift}"]


def run_dir(runs: Path, frame: int, variant: str, seed: int) -> Path:
    return runs / f"crop{crop_of(frame)}_{VARIANTS[variant]}_seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="quick")
    parser.add_argument("--parallel", type=int, default=1, help="training runs at a time, one thread each")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    grid = [(frame, name, seed) for frame, seeds in s["frames"].items() for seed in seeds for name in VARIANTS]
    dirs = {key: run_dir(runs, *key) for key in grid}
    jobs = [(overrides(s, frame, VARIANTS[name], seed), dirs[(frame, name, seed)]) for frame, name, seed in grid]
    metrics = dict(zip(grid, run_many(jobs, args.parallel), strict=True))
    curves = {k: epoch_curve(d) for k, d in dirs.items()}
    write_report(args.out, args.scale, s, metrics, curves, runs_note(args.parallel))


def write_report(out: Path, scale: str, s: dict, metrics: dict, curves: dict, note: str) -> None:
    crops = [crop_of(f) for f in s["frames"]]
    lines = [
        f"Scale `{scale}`: the default model (TSM over ResNet10-T x0.5) from scratch, 8 segments, "
        f"{s['train']} training clips, {s['epochs']} epochs, batch {s['batch']}, {s['eval']} validation and "
        f"test clips; {machine()}; {note}.",
        "",
        "Test top-1 (mean and min-max where there are several seeds):",
        "",
        "| variant | "
        + " | ".join(f"{c}x{c}, seeds {list(seeds)}" for c, seeds in zip(crops, s["frames"].values(), strict=True))
        + " |",
        "|---|" + "---|" * len(crops),
    ]
    for name in VARIANTS:
        cells = [summary([metrics[(f, name, seed)]["test/acc"] for seed in seeds]) for f, seeds in s["frames"].items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / f"results_{scale}.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(9, 3.5))
    for ax, (frame, seeds), crop in zip(
        fig.subplots(1, len(crops), sharey=True, squeeze=False)[0], s["frames"].items(), crops, strict=True
    ):
        for name, color in zip(VARIANTS, COLORS, strict=True):
            plot_band(ax, [curves[(frame, name, seed)] for seed in seeds], name, color)
        ax.set_title(f"{crop}x{crop} crops, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
        ax.set_xlabel("epoch")
    fig.axes[0].set_ylabel("validation top-1")
    fig.axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / f"tsm_vs_tsn_{scale}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
