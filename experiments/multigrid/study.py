"""Does multigrid training reach the default run's accuracy sooner?

    python -m experiments.multigrid.study [--scale small|tiny] [--parallel 2] [--out experiments/multigrid]

The default run, ``python src/train.py`` (synthetic gestures, TSM-ResNet10-T x0.5, 8 frames at 64x64, 5 epochs),
beside the same with ``+multigrid=default trainer.max_epochs=12`` (the paper's long and short cycles; more epochs,
as multigrid schedules are longer, each coarse epoch far cheaper: the twelve take 423 optimizer steps of the
default's size against its 935, 0.45x the computation), and ``multigrid-half``, a long cycle that starts at T/2
frames instead of T/4 (``multigrid.long_cycle=[[0.5,0.7071],[0.5,1.0],[1.0,1.0]]``, 10 epochs: 490 steps, 0.52x),
tried after the paper's schedule lost, on fixed seeds. Time to accuracy: ``time/train_s`` (seconds since training
started, logged at every validation) at the first epoch whose validation top-1 reaches the target. Runs land in
``<out>/runs/<scale>/`` and are reused when present. Writes ``results_<scale>.md`` and ``multigrid_<scale>.png``
(validation top-1 against training time).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from experiments.common import QUIET, epoch_curve, machine, run_many, runs_note, summary, synthetic_overrides

SCALES = {
    "small": {"seeds": (1, 2, 3), "extra": [], "variants": ("default", "multigrid", "multigrid-half")},
    "tiny": {
        "seeds": (1,),
        "extra": [*synthetic_overrides(96, 8, 36), "data.batch_size=4"],
        "variants": ("default", "multigrid"),
    },
}
# variant -> its overrides (beside the scale's and the seed); multigrid-half: a long cycle from T/2, not T/4
VARIANTS = {
    "default": [],
    "multigrid": ["+multigrid=default", "trainer.max_epochs=12"],
    "multigrid-half": [
        "+multigrid=default",
        "multigrid.long_cycle=[[0.5,0.7071],[0.5,1.0],[1.0,1.0]]",
        "trainer.max_epochs=10",
    ],
}
TINY_EPOCHS = {"default": ["trainer.max_epochs=1"], "multigrid": ["trainer.max_epochs=2"]}
COLORS = {"default": "tab:gray", "multigrid": "tab:blue", "multigrid-half": "tab:green"}
TARGET = 0.95


def time_to(target: float, accuracy: list[float], seconds: list[float]) -> float | None:
    """Training seconds at the first validation reaching ``target`` (None: never reached)."""
    return next((s for a, s in zip(accuracy, seconds, strict=True) if a >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time, one torch thread each")
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    jobs, keys = [], []
    for seed in s["seeds"]:
        for variant in s["variants"]:
            overrides = VARIANTS[variant]
            epochs = TINY_EPOCHS[variant] if args.scale == "tiny" else []
            jobs.append(([*overrides, *s["extra"], *epochs, f"seed={seed}"], runs / f"{variant}_seed{seed}"))
            keys.append((variant, seed))
    metrics = run_many(jobs, args.parallel)
    curves = {
        key: (epoch_curve(run_dir), epoch_curve(run_dir, "time/train_s"), m)
        for key, (_, run_dir), m in zip(keys, jobs, metrics, strict=True)
    }
    write_report(args.out, args.scale, s, curves, args.parallel)


def write_report(out: Path, scale: str, s: dict, curves: dict, parallel: int) -> None:
    lines = [
        f"Scale `{scale}`, seeds {list(s['seeds'])}; {machine()}; {runs_note(parallel)}.",
        "",
        "Commands (N: the seed; the study adds hydra.run.dir):",
        "",
        *[
            f"- {v}: `python src/train.py {' '.join([*QUIET, *VARIANTS[v], *s['extra']])} seed=N`"
            for v in s["variants"]
        ],
        "",
        f"Time to validation top-1 >= {TARGET}: training seconds at the first epoch that reached it, mean "
        "(min-max) over seeds, and how many seeds reached it; validation top-1 at the last epoch; whole run.",
        "",
        "| variant | seeds reaching the target | time to target (s) | val top-1 last epoch | training time (s) |",
        "|---|---|---|---|---|",
    ]
    per_seed = []
    for variant in s["variants"]:
        runs = [(seed, *curves[(variant, seed)]) for seed in s["seeds"]]
        reached = [t for _, acc, secs, _ in runs if (t := time_to(TARGET, acc, secs)) is not None]
        last = [acc[-1] for _, acc, _, _ in runs]
        total = [secs[-1] for _, _, secs, _ in runs]
        to_target = f"{statistics.mean(reached):.0f} ({min(reached):.0f}-{max(reached):.0f})" if reached else "-"
        lines.append(
            f"| {variant} | {len(reached)} of {len(runs)} | {to_target} | {summary(last)} | "
            f"{statistics.mean(total):.0f} ({min(total):.0f}-{max(total):.0f}) |"
        )
        for seed, acc, secs, _ in runs:
            t = time_to(TARGET, acc, secs)
            epochs = ", ".join(f"{a:.3f} @ {x:.0f} s" for a, x in zip(acc, secs, strict=True))
            per_seed.append(f"| {variant} | {seed} | {'-' if t is None else f'{t:.0f}'} | {epochs} |")
    lines += ["", "Per seed (validation top-1 @ training seconds, per epoch):", ""]
    lines += ["| variant | seed | time to target (s) | epochs |", "|---|---|---|---|", *per_seed]
    (out / f"results_{scale}.md").write_text("\n".join(lines) + "\n")
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for variant in s["variants"]:
        for i, seed in enumerate(s["seeds"]):
            acc, secs, _ = curves[(variant, seed)]
            ax.plot(secs, acc, marker="o", color=COLORS[variant], label=variant if i == 0 else None, alpha=0.8)
    ax.axhline(TARGET, color="tab:red", linewidth=0.8, linestyle="--")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation top-1")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / f"multigrid_{scale}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
