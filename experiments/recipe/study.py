"""Does the from-scratch recipe (conf/model/default.yaml) work on every seed?

    python -m experiments.recipe.study [--scale small|tiny] [--parallel 2] [--out experiments/recipe]

Two tasks, TSM beside TSN (the shift off), several seeds each, ``--parallel`` runs at a time on one thread each:

1. The default run, ``python src/train.py`` as users type it (synthetic gestures, TSM-ResNet10-T at
   half width, 8 segments at 64x64, 5 epochs, ``trainer.precision=auto``: bf16-mixed on a CPU with native
   bf16), the same in float32 (``trainer.precision=32-true``), its TSN twin ``python src/train.py
   +experiment=synthetic_tsn``, and the previous default, MobileNetV2 x0.5 (``model.backbone=mobilenetv2_050``,
   in bf16 as the default): only ``seed`` changes (the ``tiny`` scale shrinks the data and the schedule).
2. A small folder in Jester's publisher layout (labels CSV, ``id;label`` train and validation CSVs,
   ``20bn-jester-v1/<id>/00001.jpg`` frames), written here from the synthetic generator: four direction
   gestures in two time-reversed pairs named as Jester's Swiping Left/Right/Up/Down, trained from
   scratch with ``data=jester model.backbone=mobilenetv2_100 data.crop_size=64`` for 12 epochs.

Runs land in ``<out>/runs/<scale>/`` and are reused when present (their wall time is kept in
``wall_s.txt``), so the report can be regenerated without training again. Writes
``results_<scale>.md`` (validation top-1, mean and min-max over seeds, per seed, wall time per run)
and ``recipe_<scale>.png`` (validation top-1 per epoch, mean and min-max band).
"""

from __future__ import annotations

import argparse
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.common import (
    QUIET,
    epoch_curve,
    in_own_interpreter,
    machine,
    per_seed_table,
    plot_panels,
    summary,
    synthetic_overrides,
    timed_run,
    write_jester_folder,
)
from tsm.data.sources.synthetic import SyntheticGestures

# The gestures rendered, each from the synthetic class that moves the same way: two time-reversed pairs.
GESTURES = {"Swiping Left": 0, "Swiping Right": 1, "Swiping Up": 2, "Swiping Down": 3}
# The labels file holds the four gestures only: data.num_classes is left out and read from it.
LABELS = tuple(GESTURES)

SCALES = {
    # seeds; synthetic: extra overrides of the default run (none: python src/train.py as is);
    # jester: clips per split, frames per clip, frame side, epochs, extra overrides
    "small": {
        # seeds per (task, variant): every TSM seed is a pass/fail check; TSN, the baseline, fewer
        "seeds": {
            ("synthetic", "TSM"): (1, 2, 3, 4, 5, 6, 7, 8),
            ("jester", "TSM"): (1, 2, 3, 4, 5),
            ("synthetic", "TSM-MobileNetV2"): (1, 2, 3, 4, 5),
            ("synthetic", "TSM-fp32"): (1, 2),
            ("synthetic", "TSN"): (1, 2),
            ("jester", "TSN"): (1,),
        },
        "synthetic": [],
        "jester": {"train": 240, "validation": 120, "frames": 16, "size": 100, "epochs": 12, "extra": []},
    },
    "tiny": {
        "seeds": {
            **{(task, variant): (1,) for task in ("synthetic", "jester") for variant in ("TSM", "TSN")},
            ("synthetic", "TSM-MobileNetV2"): (),
            ("synthetic", "TSM-fp32"): (),
        },
        "synthetic": [*synthetic_overrides(8, 4, 36), "data.batch_size=4", "trainer.max_epochs=1"],
        "jester": {"train": 8, "validation": 4, "frames": 8, "size": 40, "epochs": 1, "extra": ["data.batch_size=4"]},
    },
}
# task -> variant -> overrides that make it (beside the task's own and the seed)
VARIANTS = {
    # TSM-MobileNetV2: the previous from-scratch default (MobileNetV2 x0.5), which converged on 3 of 5 seeds
    "synthetic": {
        "TSM": [],
        # in the default's bf16 (auto would train its depthwise convolutions in float32, faster on a CPU)
        "TSM-MobileNetV2": ["model.backbone=mobilenetv2_050", "trainer.precision=bf16-mixed"],
        # the default in float32, where trainer.precision=auto chose bf16-mixed (a CPU with native bf16)
        "TSM-fp32": ["trainer.precision=32-true"],
        "TSN": ["+experiment=synthetic_tsn"],
    },
    "jester": {"TSM": [], "TSN": ["model/shift=none"]},
}
TITLES = {"synthetic": "synthetic gestures (python src/train.py)", "jester": "Jester-format folder, 4 gestures"}
COLORS = {"TSM": "tab:blue", "TSM-MobileNetV2": "tab:orange", "TSM-fp32": "tab:green", "TSN": "tab:gray"}


def write_jester(root: Path, j: dict) -> Path:
    """A Jester V1 folder of synthetic Swiping Left/Right/Up/Down clips (labelled in turn), ``j['train']``
    and ``j['validation']`` of them, ``j['frames']`` JPEG frames of ``j['size']`` pixels each; kept if complete."""
    sources = {
        part: SyntheticGestures(split, {split: j[part]}, num_frames=j["frames"], frame_size=j["size"], seed=7)
        for split, part in (("train", "train"), ("val", "validation"))
    }

    def render(part: str, index: int, name: str):
        return sources[part].render(index, list(range(j["frames"])), GESTURES[name]).numpy()

    return write_jester_folder(root, LABELS, j, render)


def task_overrides(s: dict, task: str, root: Path, variant: str) -> list[str]:
    if task == "synthetic":
        return list(s["synthetic"])
    j = s["jester"]
    return [
        "data=jester",
        f"data.root={root}",
        "model.backbone=mobilenetv2_100",
        "data.crop_size=64",  # data.scale_size follows it: 73 (64 x 256 / 224), the README's command as typed
        f"trainer.max_epochs={j['epochs']}",
        "data.num_workers=0",  # one core for the whole run (loader processes would take the other)
        # as the runs were made (auto now trains MobileNetV2's depthwise convolutions in float32, faster here)
        "trainer.precision=bf16-mixed",
        *j["extra"],
    ]


def command(task: str, variant: str, overrides: list[str]) -> str:
    return " ".join(["OMP_NUM_THREADS=1 python src/train.py", *QUIET, *VARIANTS[task][variant], *overrides, "seed=N"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--report-only", action="store_true", help="tabulate the runs already there, train none")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time, one torch thread each")
    parser.add_argument("--only", nargs="+", default=None, help="train these TASK:VARIANT only, e.g. synthetic:TSM")
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    root = write_jester(runs / "jester_data", s["jester"])
    # TSM seeds first (the pass criteria), the two tasks interleaved, then TSN
    order = sorted(((t, v, x) for (t, v), seeds in s["seeds"].items() for x in seeds), key=lambda k: (k[1], k[2]))
    results, curves, commands = {}, {}, {}
    jobs = []
    for task, variant, seed in order:
        overrides = task_overrides(s, task, root, variant)
        commands[(task, variant)] = command(task, variant, overrides)
        run_dir = runs / f"{task}_{variant.lower()}_seed{seed}"
        wanted = not args.report_only and (args.only is None or f"{task}:{variant}" in args.only)
        if wanted or (run_dir / "metrics.json").is_file():
            jobs.append(((task, variant, seed), [*VARIANTS[task][variant], *overrides, f"seed={seed}"], run_dir))

    lock = threading.Lock()

    def run(job: tuple) -> None:
        key, overrides, run_dir = job
        metrics = timed_run(overrides, run_dir, in_own_interpreter(args.scale))
        with lock:
            results[key], curves[key] = metrics, epoch_curve(run_dir)
            write_report(args.out, args.scale, s, results, curves, commands, args.parallel)

    with ThreadPoolExecutor(args.parallel) as pool:  # the report is rewritten after every run
        list(pool.map(run, jobs))
    write_report(args.out, args.scale, s, results, curves, commands, args.parallel)


def write_report(out: Path, scale: str, s: dict, results: dict, curves: dict, commands: dict, parallel: int) -> None:
    j = s["jester"]
    lines = [
        f"Scale `{scale}`: the seeds are fixed in the study's SCALES (none picked after the fact); the table "
        f"says which have run. {machine()}; {parallel} run(s) at a time, each on one torch thread (OMP_NUM_THREADS=1).",
        "",
        f"Jester-format folder: {j['train']} training and {j['validation']} validation clips of {j['frames']} "
        f"{j['size']}x{j['size']} JPEG frames, Swiping Left/Right/Up/Down in turn, a labels file of {len(LABELS)} "
        "classes.",
        "",
        "Validation top-1: best epoch (what val/acc_best reports), and last epoch; test top-1 (the synthetic test "
        "split; Jester's test is its validation set). Mean (min-max) over the seeds that ran.",
        "",
        "| task | variant | seeds run | val top-1 best | val top-1 last epoch | test top-1 | wall time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    per_seed = []
    for task in VARIANTS:
        for variant in VARIANTS[task]:
            done = [seed for seed in s["seeds"][(task, variant)] if (task, variant, seed) in results]
            if not done:
                lines.append(f"| {TITLES[task]} | {variant} | none | - | - | - | - |")
                continue
            best = [results[(task, variant, x)][0]["val/acc_best"] for x in done]
            last = [curves[(task, variant, x)][-1] for x in done]
            test = [results[(task, variant, x)][0]["test/acc"] for x in done]
            wall = [results[(task, variant, x)][1] for x in done]
            lines.append(
                f"| {TITLES[task]} | {variant} | {done} | {summary(best)} | {summary(last)} | {summary(test)} | "
                f"{statistics.mean(wall):.0f} ({min(wall):.0f}-{max(wall):.0f}) |"
            )
            for x, b, la, te, w in zip(done, best, last, test, wall, strict=True):
                per_seed.append(f"| {task} | {variant} | {x} | {b:.3f} | {la:.3f} | {te:.3f} | {w:.0f} |")
    lines += [
        *per_seed_table(["task", "variant", "seed", "val best", "val last", "test", "wall (s)"], per_seed),
        "",
        "Commands (N: the seed; the study adds hydra.run.dir):",
        "",
        *[f"- {TITLES[t]}, {v}: `{c}`" for (t, v), c in commands.items()],
    ]
    (out / f"results_{scale}.md").write_text("\n".join(lines) + "\n")
    panels = {
        TITLES[task]: [
            (variant, COLORS[variant], [curves[(task, variant, x)] for x in done])
            for variant in VARIANTS[task]
            if (done := [x for x in s["seeds"][(task, variant)] if (task, variant, x) in curves])
        ]
        for task in VARIANTS
    }
    plot_panels(out / f"recipe_{scale}.png", panels)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
