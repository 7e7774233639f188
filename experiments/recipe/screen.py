"""Screen changes to the previous default run, TSM-MobileNetV2 x0.5, on the seeds where it failed (seed 3
stopped at the rotation plateau).

    python experiments/recipe/screen.py [--seeds 3] [--variants fold_div4 adamw ...] [--parallel 2] [--report-only]

Each variant is ``python src/train.py model.backbone=mobilenetv2_050 seed=N`` plus its overrides
(``VARIANTS``); runs land in ``experiments/recipe/runs/screen/<variant>_seed<N>`` and are reused when
they finished. A run stopped before its last epoch is reported with the epochs it completed. Writes
``screen.md``: validation top-1 per epoch, best and last, per variant and seed. Screening only: a variant
that passes here still has to pass every seed of ``study.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import ADAMW, MOBILENET, epoch_curve, machine, run_many  # noqa: E402

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "default": [],
    "fold_div4": ["model.shift.fold_div=4"],
    "adamw": ADAMW,
    "lr_x2": ["model.optimizer.base_lr=0.4"],
    "epochs12": ["trainer.max_epochs=12"],
    "light_crops": ["data.augment.scales=[1.0,0.875]", "data.augment.max_distort=0"],
    "dense_stride2": ["data.sampling.mode=dense", "data.sampling.stride=2"],
    "speed1.5": ["data.source.speed=1.5"],
    "reverse": ["data.augment.reverse=true"],
    "reverse_2500": ["data.augment.reverse=true", "data.source.sizes.train=2500"],
    "width075": ["model.backbone=mobilenetv2_075"],
    "mnv4_small_050": ["model.backbone=mobilenetv4_conv_small_050"],
    "fold_div2": ["model.shift.fold_div=2"],
    "frame64": ["data.source.frame_size=64"],
    "fan_in": ["model.conv_init=fan_in"],
    "lr_half": ["model.optimizer.base_lr=0.1"],
    # the classifier frozen at nn.Linear's own draw (rows 0.8 apart), and fixed at 12x that scale
    "frozen_small_classifier": ["model.optimizer.head_lr_mult_scratch.weight=0"],
    "frozen_small_classifier_lr0.3": [
        "model.optimizer.head_lr_mult_scratch.weight=0",
        "model.optimizer.base_lr=0.3",
    ],
    "fixed_classifier": ["model.fixed_classifier=true"],
    "crop80_2200": [
        "data.source.frame_size=90",
        "data.crop_size=80",
        "data.scale_size=80",
        "data.source.sizes.train=2200",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[3])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run (tests: a tiny size)")
    args = parser.parse_args()
    runs = args.out / "runs" / "screen"
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    if not args.report_only:
        run_many(
            [([*MOBILENET, *VARIANTS[v], *args.extra, f"seed={s}"], runs / f"{v}_seed{s}") for v, s in jobs],
            args.parallel,
        )
    lines = [
        f"Machine: {machine()}; runs {args.parallel} at a time, one torch thread each (wall times not comparable).",
        "",
        f"Each run: `python src/train.py {' '.join(MOBILENET)} seed=N` (TSM-MobileNetV2 x0.5, the from-scratch "
        "default when this screen ran) with the variant's overrides.",
        "",
        "| variant | overrides | seed | val top-1 per epoch | best | last | finished |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, seed in jobs:
        run_dir = runs / f"{variant}_seed{seed}"
        if not run_dir.is_dir():
            continue
        curve = epoch_curve(run_dir)
        finished = "yes" if (run_dir / "metrics.json").is_file() else f"stopped after {len(curve)} epochs"
        lines.append(
            f"| {variant} | `{' '.join(VARIANTS[variant]) or '-'}` | {seed} | {', '.join(f'{v:.3f}' for v in curve)} "
            f"| {max(curve):.3f} | {curve[-1]:.3f} | {finished} |"
        )
    (args.out / "screen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
