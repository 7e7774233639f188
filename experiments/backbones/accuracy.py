"""Which backbone learns the synthetic gestures: TSM against TSN for the smallest member of each family.

    python -m experiments.backbones.accuracy [--scale default|tiny] [--seeds 1] [--only NAME ...] [--parallel 2]

Each run is the default ``python src/train.py`` (synthetic gestures from scratch, 8 frames at 64x64,
3,000 training clips, 7 epochs, the in-place shift) with ``model.backbone=`` the family's smallest
member (``BACKBONES`` of study.py); TSN is the same run with ``+experiment=synthetic_tsn``. Runs land in
``<out>/runs/accuracy_<scale>/`` and are reused when their ``metrics.json`` exists, so ``--report-only``
rewrites the report from what ran. Writes ``accuracy_<scale>.md`` (test top-1 per family, mean and
min-max over the seeds that ran, wall time per run) and ``accuracy_<scale>.png`` (test top-1 against the
streaming latency per frame of results.md in the labels).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from matplotlib.figure import Figure

from experiments.backbones import study as EFFICIENCY
from experiments.common import ADAMW, QUIET, in_own_interpreter, machine, read_run, summary, timed_run

HERE = Path(__file__).resolve().parent
BACKBONES = EFFICIENCY.BACKBONES
VARIANTS = {"TSM": [], "TSN": ["+experiment=synthetic_tsn"]}
SCALES = {
    # the default run's recipe when these runs were made (it now trains 5 epochs, in bf16 where the CPU has it)
    "default": ["trainer.max_epochs=7", "trainer.precision=32-true"],
    "tiny": [
        "data.source.sizes.train=8",
        "data.source.sizes.val=4",
        "data.source.sizes.test=4",
        "data.batch_size=4",
        "data.num_segments=4",
        "trainer.max_epochs=1",
    ],
}


# Families trained with AdamW, as they are published (LayerNorm, layer scale): with the default SGD
# ConvNeXt atto stayed at chance for 4 epochs (val top-1 0.10-0.15, exploratory). Same lr and weight
# decay as the AdamW arms of experiments/kd and experiments/recipe (experiments.common.ADAMW).
ADAMW_FAMILIES = ("convnext", "vit")


def overrides(backbone: str, variant: str, scale: str) -> list[str]:
    """The run's overrides: the variant, ``model.backbone``, the family's optimizer and what the member
    needs at a 64-pixel crop (a ViT's ``img_size``), then the scale's sizes."""
    recipe = ADAMW if backbone.startswith(ADAMW_FAMILIES) else []
    vit = []
    if backbone.startswith("vit"):
        # the token shift inside the residual branch, before the attention (vit_fit.py)
        vit = ["model.backbone_args={img_size:64}", *(["model/shift=residual"] if variant == "TSM" else [])]
    return [*VARIANTS[variant], f"model.backbone={backbone}", *recipe, *vit, *SCALES[scale]]


def report(results: dict, names: list[str], seeds: list[int], args: argparse.Namespace) -> str:
    budget = f"the default budget of 3,000 clips at 64x64 with `{' '.join(SCALES[args.scale])}`"
    if args.scale != "default":
        budget = f"with `{' '.join(SCALES[args.scale])}`"
    lines = [
        f"Command: `python -m experiments.backbones.accuracy --scale {args.scale} --seeds "
        f"{' '.join(map(str, seeds))} --parallel {args.parallel}` (runs reused when present)",
        "",
        f"Machine: {machine()}; {args.parallel} run(s) at a time, each on one torch thread. Each run: "
        f"`OMP_NUM_THREADS=1 python src/train.py {' '.join(QUIET)} model.backbone=NAME seed=N` (TSN: "
        "`+experiment=synthetic_tsn`; the ViT adds `model.backbone_args={img_size:64}` and, for TSM, "
        "`model/shift=residual`; ConvNeXt, ConvNeXt-V2 and "
        f"the ViT train with AdamW, `{' '.join(ADAMW)}`), "
        f"{budget}. Test top-1, mean (min-max) over the seeds that ran; a dash: "
        "not run. Chance is 0.111; a model without temporal order (TSN) can at best tell the four "
        "time-reversed pairs apart from each other and from static (0.556).",
        "",
        "| backbone | timm name | TSM test top-1 | TSN test top-1 | seeds (TSM, and TSN where other) "
        "| wall time per TSM run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        done_seeds = {v: [s for s in seeds if (name, v, s) in results] for v in VARIANTS}
        cells = [
            summary([results[(name, v, s)][0]["test/acc"] for s in arm_seeds]) if arm_seeds else "-"
            for v, arm_seeds in done_seeds.items()
        ]
        walls = [results[(name, "TSM", s)][1] for s in done_seeds["TSM"]]
        wall = f"{statistics.mean(walls):.0f}" if walls else "-"
        ran = done_seeds["TSM"] or "-"
        if done_seeds["TSN"] and done_seeds["TSN"] != done_seeds["TSM"]:
            ran = f"{ran}, TSN {done_seeds['TSN']}"
        lines.append(f"| {name} | `{BACKBONES[name]}` | {cells[0]} | {cells[1]} | {ran} | {wall} |")
    return "\n".join(lines) + "\n"


def plot(means: dict[tuple[str, str], float], path: Path) -> None:
    """Test top-1 (mean over seeds) per family, TSM and TSN side by side, the families ordered by TSM's;
    each label gives the streaming latency per frame from results.md."""
    latency = {name: row["ort_frame"] for name, row in EFFICIENCY.read_results(HERE / "results.md").items()}
    names = sorted({n for n, _ in means}, key=lambda n: means.get((n, "TSM"), 0.0))
    fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.6))
    ax = fig.subplots()
    for offset, variant, color in ((0.2, "TSM", "tab:blue"), (-0.2, "TSN", "tab:orange")):
        rows = [(i, means[(n, variant)]) for i, n in enumerate(names) if (n, variant) in means]
        if rows:
            ys, accs = zip(*rows, strict=True)
            ax.barh([y + offset for y in ys], accs, height=0.4, color=color, label=variant)
    for i, n in enumerate(names):
        for offset, variant in ((0.2, "TSM"), (-0.2, "TSN")):
            if (n, variant) not in means:
                ax.text(0.01, i + offset, f"{variant} not run", va="center", fontsize=7, color="grey")
    labels = [f"{n} ({latency[n]:.1f} ms)" if n in latency else n for n in names]
    ax.set_yticks(range(len(names)), labels, fontsize=8)
    ax.axvline(1 / 9, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test top-1, synthetic gestures from scratch at 64x64")
    ax.set_title("TSM against TSN per family (in brackets: streaming ms per frame at 224x224)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--only", nargs="+", choices=list(BACKBONES.values()), help="timm names, in the order to run (default: all)"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time, one torch thread each")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the runs present")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    runs = args.out / "runs" / f"accuracy_{args.scale}"
    # --only also sets the order the runs start in (cheapest first fits most into a session)
    by_timm_name = {timm_name: name for name, timm_name in BACKBONES.items()}
    names = [by_timm_name[t] for t in args.only] if args.only else list(BACKBONES)
    # every TSM run before any TSN run: the table fills with the shift's accuracy first
    jobs = [(n, v, s) for v in args.variants for n in names for s in args.seeds]
    if not args.report_only:
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda job: run(job, args.scale, runs), jobs))
    results = {}
    accs = defaultdict(list)  # (name, variant) -> test top-1 of each seed
    for name in BACKBONES:
        for variant in VARIANTS:
            for metrics in sorted(runs.glob(f"{BACKBONES[name]}_{variant}_seed*/metrics.json")):
                seed = int(metrics.parent.name.rsplit("seed", 1)[1])
                results[(name, variant, seed)] = read_run(metrics.parent)
                accs[(name, variant)].append(results[(name, variant, seed)][0]["test/acc"])
    seeds = sorted({s for _, _, s in results})
    text = report(results, list(BACKBONES), seeds, args)
    (args.out / f"accuracy_{args.scale}.md").write_text(text)
    plot({arm: statistics.mean(values) for arm, values in accs.items()}, args.out / f"accuracy_{args.scale}.png")
    print(text)


def run(job: tuple[str, str, int], scale: str, runs: Path) -> None:
    name, variant, seed = job
    run_dir = runs / f"{BACKBONES[name]}_{variant}_seed{seed}"
    timed_run([*overrides(BACKBONES[name], variant, scale), f"seed={seed}"], run_dir, in_own_interpreter(scale))
    print(f"{name} {variant} seed {seed}: done", flush=True)


if __name__ == "__main__":
    main()
