"""Is it seed 3's initial weights or its order of training clips that keeps the previous default run
(TSM-MobileNetV2 x0.5) at the plateau?

    python experiments/recipe/seed_split.py [--pairs 3:103 103:3] [--parallel 2] [--report-only]

Each run is that run (``python src/train.py model.backbone=mobilenetv2_050``) whose network is initialised
under one seed and whose training (clip order, augmentation, dropout) runs under another: ``seed=INIT`` as usual, then
``seed_everything(ORDER)`` right after the network is built. Runs land in
``experiments/recipe/runs/seed_split/init<INIT>_order<ORDER>`` and are reused; writes ``seed_split.md``.
(Exploratory: ``INIT:INIT`` is the plain MobileNetV2 x0.5 run of that seed.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import MOBILENET, QUIET, ROOT, epoch_curve, machine, train_in_process  # noqa: E402

HERE = Path(__file__).resolve().parent


def train_split(init: int, order: int, run_dir: str, extra: list[str]) -> None:
    """In this process: the default run with the network built under ``init`` and trained under ``order``."""
    import pytorch_lightning as pl

    from tsm.training import module

    build = module.build_recognizer

    def build_then_reseed(*args, **kwargs):
        net = build(*args, **kwargs)
        pl.seed_everything(order, workers=True)
        return net

    module.build_recognizer = build_then_reseed  # the module's own reference, used in its __init__
    train_in_process([*QUIET, *MOBILENET, *extra, f"seed={init}"], run_dir)


def run(init: int, order: int, runs: Path, extra: list[str]) -> Path:
    run_dir = runs / f"init{init}_order{order}"
    if not (run_dir / "metrics.json").is_file():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, __file__, "--run", str(init), str(order), str(run_dir), "--extra", *extra]
        subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", nargs="+", default=["3:103", "103:3"], help="INIT:ORDER seed pairs")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run (tests: a tiny size)")
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)  # child process: INIT ORDER RUN_DIR
    args = parser.parse_args()
    if args.run:
        train_split(int(args.run[0]), int(args.run[1]), args.run[2], args.extra)
        return
    pairs = [tuple(int(s) for s in pair.split(":")) for pair in args.pairs]
    runs = args.out / "runs" / "seed_split"
    if not args.report_only:
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda pair: run(*pair, runs, args.extra), pairs))
    lines = [
        f"Command: `python experiments/recipe/seed_split.py --pairs {' '.join(args.pairs)}`; {machine()}, "
        f"{args.parallel} runs at a time on one torch thread each.",
        "",
        "| network initialised with seed | trained with seed | val top-1 per epoch | best | test top-1 |",
        "|---|---|---|---|---|",
    ]
    for init, order in pairs:
        run_dir = runs / f"init{init}_order{order}"
        if not (run_dir / "metrics.json").is_file():
            continue
        curve = epoch_curve(run_dir)
        test = json.loads((run_dir / "metrics.json").read_text())["test/acc"]
        lines.append(f"| {init} | {order} | {', '.join(f'{v:.3f}' for v in curve)} | {max(curve):.3f} | {test:.3f} |")
    text = "\n".join(lines) + "\n"
    (args.out / "seed_split.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
