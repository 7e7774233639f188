"""How far apart does a run's classifier keep the rows of each time-reversed pair of classes?

    python experiments/recipe/head_rows.py [RUN_DIR ...] [--out experiments/recipe]

For each run (a ``src/train.py`` run directory with ``checkpoints/last.ckpt`` and ``metrics.json``):
the Euclidean distance between the classifier's weight rows of each time-reversed pair of the
synthetic gestures (move left/right, up/down, zoom in/out, rotate clockwise/counter-clockwise),
beside the run's best validation top-1. While a pair's features are the same for both classes, the
gradient that would make them differ is proportional to the difference of the pair's rows: rows
that drift together leave the pair at ln 2 for good. Writes ``head_rows.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import machine  # noqa: E402

from tsm.data.sources.synthetic import CLASSES, REVERSED  # noqa: E402
from tsm.models.weight_files import safe_load  # noqa: E402

HERE = Path(__file__).resolve().parent
PAIRS = sorted({tuple(sorted(pair)) for pair in REVERSED.items() if pair[0] != pair[1]})
# the finished runs of MobileNetV2 x0.5, the previous default (a learned classifier), the classifier frozen
# at nn.Linear's draw, and the classifier fixed at 12x that scale (model.fixed_classifier=true)
DEFAULT_RUNS = [
    run
    for pattern in (
        "small/synthetic_tsm-mobilenetv2_seed*",
        "screen/frozen_small_classifier_seed*",
        "screen/fixed_classifier_seed*",
    )
    for run in sorted((HERE / "runs").glob(pattern))
    if (run / "metrics.json").is_file()
]


def pair_distances(run_dir: Path) -> list[float]:
    """Distance between the classifier rows of each pair in ``PAIRS``, from the run's last checkpoint."""
    state = safe_load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    name = "net.fc.weight"
    if name not in state or state[name].shape[0] != len(CLASSES):
        raise ValueError(f"{run_dir}: the checkpoint has no {len(CLASSES)}-class classifier {name!r}")
    rows = state[name].double()
    return [(rows[a] - rows[b]).norm().item() for a, b in PAIRS]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    pair_names = [f"{CLASSES[a]} / {CLASSES[b]}" for a, b in PAIRS]
    lines = [
        f"Machine: {machine()}. Distance between the classifier rows of each time-reversed pair, last checkpoint.",
        "",
        f"| run | val top-1 best | {' | '.join(pair_names)} |",
        f"|---|---|{'---|' * len(PAIRS)}",
    ]
    for run_dir in args.runs:
        best = json.loads((run_dir / "metrics.json").read_text())["val/acc_best"]
        row = " | ".join(f"{d:.2f}" for d in pair_distances(run_dir))
        name = run_dir.relative_to(HERE) if run_dir.is_relative_to(HERE) else run_dir
        lines.append(f"| {name} | {best:.3f} | {row} |")
    (args.out / "head_rows.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
