"""Does starting from the default run's weights let the Jester recipe learn the folders it could not from scratch?

    python -m experiments.generalisation.fine_tune [--scale small|tiny] [--parallel 2] [--out DIR]

The study's three Jester-format folders (``experiments.generalisation.study``, the same files), trained with the
README's small-folder command plus ``model.init_from=<the default run's last.ckpt>``: the weights of
``python src/train.py`` (TSM on the synthetic gestures, its seed 1) for TSM, of ``python src/train.py
+experiment=synthetic_tsn`` for TSN, the classifier fresh. Published video weights are how real Jester recipes
start; nothing may be downloaded here, so the project's own default run stands in for them. The synthetic gestures
are the objects folder's renderer (other clips, classes and frame size): only the hand and the particles are unseen
by the pretrained network. The command is the study's; one config change was found on the hand folder (a fresh
classifier learns at the backbone's rate, conf/model/default.yaml), seeds 4 and 5 run after it.
Runs land in ``<out>/runs/<scale>/`` beside the study's and are reused when present. Writes
``fine_tune_<scale>.md`` and ``fine_tune_<scale>.png`` (validation top-1 per epoch) in ``--out`` (default: beside
this file).
"""

from __future__ import annotations

import argparse
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
    run_train,
    synthetic_overrides,
    timed_run,
    write_jester_folder,
)
from experiments.generalisation.study import (
    CLASSES,
    FRAMES,
    PASS,
    SCALES,
    clips_of,
    curves_of,
    overrides_of,
    renderer,
    result_rows,
)

# variant -> (its pretraining run's directory, that run's overrides); the fine-tuning runs' own overrides
PRETRAINED = {"TSM fine-tuned": ("pretrain_tsm", []), "TSN fine-tuned": ("pretrain_tsn", ["+experiment=synthetic_tsn"])}
FINE_TUNE_SHIFT = {"TSM fine-tuned": [], "TSN fine-tuned": ["model/shift=none"]}
SEEDS = {"small": {"TSM fine-tuned": (1, 2, 3, 4, 5), "TSN fine-tuned": (1,)}, "tiny": {"TSM fine-tuned": (1,)}}
# the default run as it is at the small scale; at the tiny one, a few clips of one epoch
PRETRAIN = {"small": [], "tiny": [*synthetic_overrides(8, 4, 36), "data.batch_size=4", "trainer.max_epochs=1"]}
COLORS = {"TSM fine-tuned": "tab:blue", "TSN fine-tuned": "tab:gray"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time, one torch thread each")
    parser.add_argument("--folders", nargs="+", choices=FRAMES, default=list(FRAMES), help="fine-tune on these only")
    args = parser.parse_args()
    s, seeds = SCALES[args.scale], SEEDS[args.scale]
    runs = args.out / "runs" / args.scale
    folders = {f: write_jester_folder(runs / f"{f}_data", CLASSES, clips_of(s, f), renderer(f, s)) for f in FRAMES}
    pretrained = {variant: runs / PRETRAINED[variant][0] for variant in seeds}
    with ThreadPoolExecutor(args.parallel) as pool:
        pretraining = {  # untimed: forked from the training server, one torch thread each
            variant: pool.submit(run_train, [*PRETRAIN[args.scale], *PRETRAINED[variant][1], "seed=1"], run_dir, 1)
            for variant, run_dir in pretrained.items()
        }
        pretrain_acc = {variant: job.result()["val/acc"] for variant, job in pretraining.items()}
    jobs = [
        ((folder, variant, seed), [*fine_tune_overrides(s, root, pretrained[variant], variant), f"seed={seed}"])
        for variant in seeds
        for seed in seeds[variant]
        for folder, root in folders.items()
        if folder in args.folders
    ]
    results: dict = {}
    lock = threading.Lock()

    def run(job: tuple) -> None:
        (folder, variant, seed), overrides = job
        run_dir = runs / f"{folder}_{variant.split()[0].lower()}-fine-tuned_seed{seed}"
        metrics, wall = timed_run(overrides, run_dir, in_own_interpreter(args.scale))
        with lock:
            results[(folder, variant, seed)] = (metrics["val/acc_best"], epoch_curve(run_dir), wall)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(run, jobs))
    write_report(args, s, seeds, results, pretrain_acc)


def fine_tune_overrides(s: dict, root: Path, pretrained: Path, variant: str) -> list[str]:
    """The study's command for ``root``, started from the pretraining run's weights."""
    init = f"model.init_from={pretrained / 'checkpoints' / 'last.ckpt'}"
    return [*overrides_of(s, root), *FINE_TUNE_SHIFT[variant], init]


def write_report(args, s: dict, seeds: dict, results: dict, pretrain_acc: dict) -> None:
    lines = [
        f"Scale `{args.scale}`: the study's folders ({s['train']} training and {s['validation']} validation clips of "
        f"{s['frames']} frames). {machine()}; {args.parallel} run(s) at a time, one torch thread each.",
        "",
        "Commands (N: the seed; the study adds hydra.run.dir):",
        *(
            f"- pretraining for {v}: `OMP_NUM_THREADS=1 python src/train.py "
            f"{' '.join([*QUIET, *PRETRAIN[args.scale], *PRETRAINED[v][1]])} seed=1` "
            f"(validation top-1 {pretrain_acc[v]:.3f} on the synthetic gestures)"
            for v in seeds
        ),
        f"- fine-tuning: `OMP_NUM_THREADS=1 python src/train.py {' '.join([*QUIET, *overrides_of(s, Path('FOLDER'))])} "
        "model.init_from=<pretraining run>/checkpoints/last.ckpt seed=N` (TSN adds `model/shift=none`)",
        "",
        f"Validation top-1, mean (min-max) over seeds; pass: TSM >= {PASS:.2f} at the last epoch on every seed.",
        "",
        "| folder | variant | seeds run | val top-1 last epoch | val top-1 best | wall time per run (s) |",
        "|---|---|---|---|---|---|",
    ]
    per_seed = []
    for folder in FRAMES:
        for variant in seeds:
            row, seed_rows = result_rows(f"{folder} | {variant}", results, folder, variant, seeds[variant])
            lines.append(row)
            per_seed += seed_rows
    lines += per_seed_table(["folder", "variant", "seed", "val last", "val best"], per_seed)
    (args.out / f"fine_tune_{args.scale}.md").write_text("\n".join(lines) + "\n")
    panels = {
        folder: [(v, COLORS[v], c) for v in seeds if (c := curves_of(results, folder, v, seeds[v]))]
        for folder in args.folders
    }
    plot_panels(args.out / f"fine_tune_{args.scale}.png", panels, panel_width=3.3, target=PASS, legend="center right")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
