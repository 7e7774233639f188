"""Does the Jester recipe hold on Jester-format data it was not tuned on?

    python -m experiments.generalisation.study [--scale small|tiny] [--parallel 2] [--out experiments/generalisation]

Three folders in Jester's publisher layout, four swipes each (Swiping Left/Right/Up/Down, two time-reversed
pairs), rendered by three different pieces of code that differ in what moves, its texture, size and speed,
the background and the noise (``folders.png`` shows them):

- ``objects``: ``tsm.data.sources.synthetic`` (a textured square or disc over a smooth colour field), 100x100;
- ``hand``: :func:`~experiments.generalisation.scenes.hand_swipe` (a hand crossing a cluttered room), 100x150;
- ``particles``: :func:`~experiments.generalisation.scenes.particle_drift` (a cloud of blobs, no object), 96x128.

Each is trained from scratch with the README's command for a small Jester-format folder,
``python src/train.py data=jester data.root=FOLDER data.crop_size=64 trainer.max_epochs=12`` (TSM: the default
model, ResNet10-T x0.5 with the in-place shift, chosen on the synthetic gestures), the same with
``model/shift=none`` (TSN), and with ``model.backbone=mobilenetv2_100`` (the command this study first tried:
it did not learn the hand folder), on fixed seeds. No setting was tuned on these folders. Runs land in
``<out>/runs/<scale>/`` and are reused when present.
Writes ``results_<scale>.md`` and ``generalisation_<scale>.png`` (validation top-1 per epoch).
"""

from __future__ import annotations

import argparse
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.common import (
    QUIET,
    epoch_curve,
    in_own_interpreter,
    machine,
    per_seed_table,
    plot_panels,
    summary,
    timed_run,
    write_jester_folder,
)
from experiments.generalisation.scenes import SWIPES, hand_swipe, particle_drift, swipe
from tsm.data.sources.synthetic import SyntheticGestures

CLASSES = tuple(SWIPES)
# folder -> (frame height, width)
FRAMES = {"objects": (100, 100), "hand": (100, 150), "particles": (96, 128)}
# the hand folder with one thing changed (hand_swipe's options), to find what defeats it; TSM only, no pass criterion
DIAGNOSTICS = {
    "hand-bare": {"clutter": False},
    "hand-textured": {"textured": True},
    "hand-slow": {"slow": True},
    "hand-small": {"small": True},
    "hand-steady": {"steady": True},
    "hand-4x-clips": {"clips": 4},  # the same renderer, 4x the training clips (the first quarter: the hand folder's)
}
ALL = {**FRAMES, **dict.fromkeys(DIAGNOSTICS, FRAMES["hand"])}
# the synthetic class that moves as each swipe: two time-reversed pairs
OBJECT_CLASS = {"Swiping Left": 0, "Swiping Right": 1, "Swiping Up": 2, "Swiping Down": 3}
SCALES = {
    # clips per part, frames per clip, epochs, frame side factor, seeds per variant (TSN: the baseline, fewer)
    "small": {
        "train": 360,
        "validation": 120,
        "frames": 16,
        "epochs": 12,
        "shrink": 1,
        "seeds": {"TSM": (1, 2, 3), "TSN": (1,), "TSM-MobileNetV2": (1,)},
        "diagnostic_seeds": (1, 2, 3),
    },
    "tiny": {
        "train": 8,
        "validation": 4,
        "frames": 8,
        "epochs": 1,
        "shrink": 2,
        "seeds": {"TSM": (1,), "TSN": (), "TSM-MobileNetV2": ()},
        "diagnostic_seeds": (),
    },
}
RECIPE = ["data=jester", "data.crop_size=64"]
VARIANTS = {"TSM": [], "TSN": ["model/shift=none"], "TSM-MobileNetV2": ["model.backbone=mobilenetv2_100"]}
COLORS = {
    "TSM": "tab:blue",
    "TSN": "tab:gray",
    "TSM-MobileNetV2": "tab:orange",
    "hand-bare": "tab:green",
    "hand-textured": "tab:purple",
    "hand-slow": "tab:brown",
    "hand-small": "tab:pink",
    "hand-steady": "tab:olive",
    "hand-4x-clips": "tab:red",
}
DIAGNOSTIC_LINES = [(folder, "TSM") for folder in DIAGNOSTICS]
PASS = 0.90  # TSM's validation top-1 at the last epoch, every seed


def seeds_of(s: dict, folder: str, variant: str) -> tuple[int, ...]:
    """The seeds ``variant`` trains on ``folder``: the scale's, or for a diagnostic folder TSM's diagnostic seeds."""
    if folder in DIAGNOSTICS:
        return s["diagnostic_seeds"] if variant == "TSM" else ()
    return s["seeds"][variant]


def renderer(folder: str, s: dict):
    """``render(part, index, name)`` for :func:`write_jester_folder`: the folder's frames of one clip."""
    height, width = (side // s["shrink"] for side in ALL[folder])
    parts = ("train", "validation")
    if folder == "objects":
        sources = {
            part: SyntheticGestures(split, {split: s[part]}, s["frames"], frame_size=height, seed=11)
            for split, part in zip(("train", "val"), parts, strict=True)
        }
        return lambda part, i, name: sources[part].render(i, list(range(s["frames"])), OBJECT_CLASS[name]).numpy()
    options = {key: value for key, value in DIAGNOSTICS.get(folder, {}).items() if key != "clips"}
    scene = {"hand": hand_swipe, "particles": particle_drift}.get(folder) or partial(hand_swipe, **options)
    seed = list(FRAMES).index(folder if folder in FRAMES else "hand")  # a diagnostic draws as the hand folder

    def render(part: str, index: int, name: str) -> np.ndarray:
        rng = np.random.default_rng([seed, parts.index(part), index])
        return swipe(scene, rng, name, s["frames"], height, width)

    return render


def clips_of(s: dict, folder: str) -> dict[str, int]:
    """Training and validation clips of ``folder``: the scale's, times a diagnostic's ``clips`` for training."""
    return {"train": s["train"] * DIAGNOSTICS.get(folder, {}).get("clips", 1), "validation": s["validation"]}


def motion_probe(root: Path) -> float:
    """A hand-written check that the swipes are in a folder's frames: the share of validation clips whose label
    is the direction of the centroid of large frame differences (its fitted slope along each axis, the steeper
    one relative to the frame side)."""
    right = 0
    lines = (root / "jester-v1-validation.csv").read_text().splitlines()
    for line in lines:
        clip_id, name = line.split(";")
        files = sorted((root / "20bn-jester-v1" / clip_id).glob("*.jpg"))
        gray = np.stack([np.asarray(Image.open(f), dtype=np.float32).mean(-1) for f in files])
        moved = np.abs(np.diff(gray, axis=0))
        moved[moved < 25] = 0
        weight = moved.sum((1, 2)) + 1e-6
        t = np.arange(len(moved))
        slopes = []
        for axis, side in ((2, gray.shape[2]), (1, gray.shape[1])):  # x, then y
            centroid = (moved.sum(3 - axis) * np.arange(side)).sum(1) / weight
            slopes.append(np.polyfit(t, centroid, 1, w=weight)[0] / side)
        if abs(slopes[0]) > abs(slopes[1]):
            guess = "Swiping Left" if slopes[0] < 0 else "Swiping Right"
        else:
            guess = "Swiping Up" if slopes[1] < 0 else "Swiping Down"
        right += guess == name
    return right / len(lines)


def preview(folders: dict[str, Path], out: Path) -> None:
    """``folders.png``: the first validation clip of each swipe per folder, every third frame."""
    rows = []
    for root in folders.values():
        ids = [line.split(";")[0] for line in (root / "jester-v1-validation.csv").read_text().splitlines()[:4]]
        for clip_id in ids:
            frames = sorted((root / "20bn-jester-v1" / clip_id).glob("*.jpg"))[::3]
            strip = np.concatenate([np.asarray(Image.open(f).resize((96, 72))) for f in frames], axis=1)
            rows.append(np.pad(strip, ((0, 3), (0, 0), (0, 0)), constant_values=255))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows)).save(out / "folders.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--report-only", action="store_true", help="tabulate the runs already there, train none")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time, one torch thread each")
    parser.add_argument("--folders", nargs="+", choices=ALL, default=list(ALL), help="train on these only")
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    wanted = [f for f in ALL if f in FRAMES or s["diagnostic_seeds"]]
    folders = {f: write_jester_folder(runs / f"{f}_data", CLASSES, clips_of(s, f), renderer(f, s)) for f in wanted}
    preview({f: folders[f] for f in FRAMES}, args.out)
    probes = {folder: motion_probe(root) for folder, root in folders.items()}
    jobs = []
    for variant in VARIANTS:  # TSM first (the pass criterion), the folders interleaved
        for seed in sorted({x for f in folders for x in seeds_of(s, f, variant)}):
            for folder, root in folders.items():
                if seed not in seeds_of(s, folder, variant):
                    continue
                run_dir = runs / f"{folder}_{variant.lower()}_seed{seed}"
                trains = not args.report_only and folder in args.folders  # runs already there are reported anyway
                if trains or (run_dir / "metrics.json").is_file():
                    overrides = [*overrides_of(s, root), *VARIANTS[variant], f"seed={seed}"]
                    jobs.append(((folder, variant, seed), overrides, run_dir))
    results: dict = {}
    lock = threading.Lock()

    def run(job: tuple) -> None:
        key, overrides, run_dir = job
        metrics, wall = timed_run(overrides, run_dir, in_own_interpreter(args.scale))
        with lock:
            results[key] = (metrics["val/acc_best"], epoch_curve(run_dir), wall)
            write_report(args.out, args.scale, s, results, probes, args.parallel)

    with ThreadPoolExecutor(args.parallel) as pool:  # the report is rewritten after every run
        list(pool.map(run, jobs))
    write_report(args.out, args.scale, s, results, probes, args.parallel)


def overrides_of(s: dict, root: Path) -> list[str]:
    # num_workers=0: one core for the whole run (loader processes would take the other)
    return [*RECIPE, f"data.root={root}", f"trainer.max_epochs={s['epochs']}", "data.num_workers=0"]


def result_rows(cells: str, results: dict, folder: str, variant: str, seeds) -> tuple[str, list[str]]:
    """The summary row of ``variant`` on ``folder`` (``cells`` first, then the seeds run, validation top-1 at the
    last epoch and best, mean wall time) and its per-seed rows, from ``results[(folder, variant, seed)]``."""
    done = [x for x in seeds if (folder, variant, x) in results]
    if not done:
        return f"| {cells} | none | - | - | - |", []
    best, curves, walls = zip(*(results[(folder, variant, x)] for x in done), strict=True)
    last = [c[-1] for c in curves]
    row = f"| {cells} | {done} | {summary(last)} | {summary(list(best))} | {statistics.mean(walls):.0f} |"
    seeds_done = zip(done, last, best, strict=True)
    return row, [f"| {folder} | {variant} | {x} | {la:.3f} | {b:.3f} |" for x, la, b in seeds_done]


def curves_of(results: dict, folder: str, variant: str, seeds) -> list[list[float]]:
    """Validation top-1 per epoch of ``variant`` on ``folder``, one curve per seed of ``seeds`` that was run."""
    return [results[(folder, variant, x)][1] for x in seeds if (folder, variant, x) in results]


def write_report(out: Path, scale: str, s: dict, results: dict, probes: dict, parallel: int) -> None:
    lines = [
        f"Scale `{scale}`: {s['train']} training and {s['validation']} validation clips of {s['frames']} JPEG frames "
        f"per folder (hand-4x-clips: {clips_of(s, 'hand-4x-clips')['train']} training clips); seeds fixed in the "
        f"study's SCALES. {machine()}; {parallel} run(s) at a time, one torch "
        "thread each.",
        "",
        "Command (FOLDER: the folder; N: the seed; the variants add their overrides, TSN `model/shift=none`, "
        "TSM-MobileNetV2 `model.backbone=mobilenetv2_100`; the study adds hydra.run.dir):",
        f"`OMP_NUM_THREADS=1 python src/train.py {' '.join([*QUIET, *overrides_of(s, Path('FOLDER'))])} seed=N`",
        "",
        "The swipes are in the frames: a hand-written motion probe (`motion_probe`: the centroid of large frame "
        "differences, its steeper slope) names the swipe of "
        + ", ".join(f"{probes[f]:.3f} of the {f} folder's" for f in probes)
        + " validation clips (drifting blobs that wrap around the frame defeat a centroid).",
        "",
        f"Validation top-1, mean (min-max) over seeds; pass: TSM >= {PASS:.2f} at the last epoch on every seed.",
        "",
        "| folder | frames | variant | seeds run | val top-1 last epoch | val top-1 best | wall time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    per_seed = []
    for folder, (height, width) in ALL.items():
        size = f"{height // s['shrink']}x{width // s['shrink']}"
        for variant in VARIANTS:
            seeds = seeds_of(s, folder, variant)
            if folder in DIAGNOSTICS and not seeds:
                continue
            row, seed_rows = result_rows(f"{folder} | {size} | {variant}", results, folder, variant, seeds)
            lines.append(row)
            per_seed += seed_rows
    lines += per_seed_table(["folder", "variant", "seed", "val last", "val best"], per_seed)
    (out / f"results_{scale}.md").write_text("\n".join(lines) + "\n")

    def band(folder: str, variant: str) -> tuple[str, str, list[list[float]]]:
        name = variant if folder in FRAMES else folder  # a diagnostic folder's line is named by its folder
        return name, COLORS[name], curves_of(results, folder, variant, seeds_of(s, folder, variant))

    panels = {**{f: [(f, v) for v in VARIANTS] for f in FRAMES}, "hand, one thing changed (TSM)": DIAGNOSTIC_LINES}
    bands = {title: [b for b in (band(*line) for line in lines_of) if b[2]] for title, lines_of in panels.items()}
    plot_panels(out / f"generalisation_{scale}.png", bands, panel_width=3.3, target=PASS, legend="center right")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
