"""Does distillation help the TSM-MobileNetV2 student on synthetic gestures, on every seed?

    python -m experiments.kd.study [--scale small|tiny] [--parallel 2] [--out experiments/kd] [--report-only]

The MobileVFX pipeline as users run it (README, "Distillation"):

1. the I3D teacher, ``python src/train.py +experiment=synthetic_i3d_teacher`` (from scratch), and for
   comparison a TSM-MobileNetV2 teacher, the default run's recipe on MobileNetV2 x0.5
   (``python src/train.py model.backbone=mobilenetv2_050``): the MobileVFX question, so MobileNetV2, not the default;
2. the student (TSM-MobileNetV2 x0.5, the same recipe) on a short budget where it does not saturate, with
   and without distillation (``+experiment=synthetic_mbv2_kd``, teacher logits cached), on the same
   seeds;
3. a grid of ``alpha`` x ``temperature`` on the first seeds, the same student taught by the
   TSM-MobileNetV2 teacher, and the student alone and taught by either teacher when it trains with
   AdamW instead of the default run's SGD (by the I3D also at alpha 0.9);
4. what the cache saves: the wall time of one student epoch with the teacher run on every batch,
   with the cache built in that run, and with the cache read back.

Writes ``results_<scale>.md`` (tables, commands) and ``kd_<scale>.png`` (test top-1 gain per seed).
A run whose ``metrics.json`` exists is reused (and the cache timing once measured), so
``--report-only`` re-reports without training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from matplotlib.figure import Figure

from experiments.common import (
    ADAMW,
    in_own_interpreter,
    machine,
    run_many,
    run_train,
    runs_note,
    summary,
)
from tsm.models.weight_files import safe_load

SCALES = {
    # student's training clips and epochs; evaluation clips; seeds of the main comparison and of the
    # alpha x temperature grid
    "small": {
        "train": 1500,
        "epochs": 6,
        "eval": 600,
        "seeds": (1, 2, 3, 4, 5),
        "grid_seeds": (1, 2),
        # the main setting (synthetic_mbv2_kd's) first: it runs on every seed
        "grid": [(0.5, 4.0), (0.5, 1.0), (0.9, 1.0), (0.9, 4.0)],
        "recipes": ("SGD", "AdamW"),
        "tiny": [],
        "teacher": [],
    },
    "tiny": {
        "train": 8,
        "epochs": 1,
        "eval": 4,
        "seeds": (1,),
        "grid_seeds": (1,),
        "grid": [(0.5, 4.0)],  # one setting and one optimiser: the tiny run checks the pipeline, not the grid
        "recipes": ("SGD",),
        # smaller clips for every run, and the teachers' sizes (their own configs' otherwise)
        "tiny": [
            "data.num_segments=4",
            "data.source.num_frames=6",
            "data.source.frame_size=36",
            "data.crop_size=32",
            "data.scale_size=32",
            "data.batch_size=2",
        ],
        "teacher": [
            "data.source.sizes.train=8",
            "data.source.sizes.val=4",
            "data.source.sizes.test=4",
            "trainer.max_epochs=1",
        ],
    },
}
I3D_TEACHER = ["+experiment=synthetic_i3d_teacher"]
# The question is MobileVFX's: distillation into TSM-MobileNetV2, the edge model (the default recipe, that backbone)
MOBILENET = ["model.backbone=mobilenetv2_050"]
MBV2_TEACHER = MOBILENET  # the TSM-MobileNetV2 teacher: the student's own recipe, trained on all clips
KD = ["+experiment=synthetic_mbv2_kd"]
MAIN = (0.5, 4.0)  # alpha, temperature of synthetic_mbv2_kd
ALPHA_HIGH = (0.9, 4.0)  # more weight on the teacher, for the AdamW student on every seed
# the student's optimiser: the default run's SGD, and AdamW as the I3D teacher trains (lr 2e-3 at batch 16)
RECIPES = {"SGD": [], "AdamW": ADAMW}


def recipe_tag(recipe: str, sep: str) -> str:
    """What an arm's name (``sep`` a space) or run directory (``sep`` an underscore) adds for its
    optimiser: nothing for the default run's SGD."""
    return "" if recipe == "SGD" else f"{sep}{recipe}"


def student_arm(recipe: str) -> str:
    """The arm of the student alone trained with ``recipe``: each distillation arm's baseline."""
    return "student" + recipe_tag(recipe, " ")


def student_data(s: dict) -> list[str]:
    """The student's budget: fewer clips and epochs than the default run, the same evaluation split size."""
    sizes = [f"data.source.sizes.train={s['train']}", f"data.source.sizes.val={s['eval']}"]
    epochs = f"trainer.max_epochs={s['epochs']}"
    return [*MOBILENET, *s["tiny"], *sizes, f"data.source.sizes.test={s['eval']}", epochs]


def kd_overrides(s: dict, teacher_ckpt: Path, alpha: float, temperature: float, kind: str = "i3d") -> list[str]:
    if kind == "i3d":  # the teacher's own view: 16 consecutive frames (6 in the tiny clips)
        teacher = ["data.teacher_view.num_frames=6"] if s["tiny"] else []
    else:  # a TSM teacher sees the student's clips
        teacher = ["model/distill=checkpoint", "data.teacher_view=null"]
    return [
        *KD,
        *teacher,
        *student_data(s),
        f"model.distill.teacher_ckpt={teacher_ckpt}",
        f"model.distill.alpha={alpha}",
        f"model.distill.temperature={temperature}",
        "model.distill.cache=true",
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="small")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    s = SCALES[args.scale]
    runs = args.out / "runs" / args.scale
    teachers = {"I3D": (I3D_TEACHER, runs / "teacher_i3d"), "TSM-MobileNetV2": (MBV2_TEACHER, runs / "teacher_mbv2")}
    jobs = [([*overrides, *s["tiny"], *s["teacher"], "seed=1"], run_dir) for overrides, run_dir in teachers.values()]
    ckpt = {name: run_dir / "checkpoints" / "last.ckpt" for name, (_, run_dir) in teachers.items()}
    arms: dict[str, dict[int, Path]] = {}
    baseline: dict[str, str] = {}  # each distillation arm's student alone (same recipe, same seeds)
    for recipe in s["recipes"]:
        recipe_overrides = RECIPES[recipe]
        student = student_arm(recipe)
        arms[student] = {seed: runs / f"student{recipe_tag(recipe, '_')}_seed{seed}" for seed in s["seeds"]}
        jobs += [([*student_data(s), *recipe_overrides, f"seed={seed}"], d) for seed, d in arms[student].items()]
    for name, kind, grid, seeds, recipe in (
        ("I3D", "i3d", s["grid"], s["grid_seeds"], "SGD"),
        ("TSM-MobileNetV2", "checkpoint", [MAIN], s["seeds"], "SGD"),
        ("I3D", "i3d", [MAIN, ALPHA_HIGH], s["seeds"], "AdamW"),
        ("TSM-MobileNetV2", "checkpoint", [MAIN], s["seeds"], "AdamW"),
    ):
        if recipe not in s["recipes"]:
            continue
        for alpha, temperature in grid:
            arm = f"KD {name} a={alpha} T={temperature}{recipe_tag(recipe, ' ')}"
            arms[arm], baseline[arm] = {}, student_arm(recipe)
            for seed in s["seeds"] if (alpha, temperature) == MAIN else seeds:
                run_dir = runs / f"kd_{kind}_a{alpha}_T{temperature}{recipe_tag(recipe, '_')}_seed{seed}"
                arms[arm][seed] = run_dir
                overrides = [*kd_overrides(s, ckpt[name], alpha, temperature, kind), *RECIPES[recipe], f"seed={seed}"]
                jobs.append((overrides, run_dir))
    if not args.report_only:
        run_many(jobs[:2], args.parallel)  # the teachers first: the students need their checkpoints
        run_many(jobs[2:], args.parallel)
        cache_timing(s, ckpt["I3D"], runs / "timing", in_own_interpreter(args.scale))
    write_report(args, s, teachers, arms, baseline, runs)


def cache_timing(s: dict, teacher_ckpt: Path, out: Path, own_interpreter: bool) -> None:
    """Wall seconds of one student epoch (``src/train.py`` start to end, validation included, no test) with the
    teacher on every batch, with the cache built, and with the cache read back; runs one at a time, each in a new
    interpreter unless ``own_interpreter`` is false (:func:`~experiments.common.in_own_interpreter`)."""
    if (out / "timing.json").is_file():
        return  # measured: reused like the finished runs (delete it to measure again)
    one_epoch = ["trainer.max_epochs=1", "test=false", "seed=1"]
    base = [*kd_overrides(s, teacher_ckpt, *MAIN), *one_epoch, f"model.distill.cache_file={out / 'cache.pt'}"]
    arms = {
        "teacher on every batch": [*base, "model.distill.cache=false"],
        "cache built in the run": base,
        "cache read back": base,
        "no distillation": [*student_data(s), *one_epoch],
    }
    (out / "cache.pt").unlink(missing_ok=True)
    seconds = {}
    for i, (name, overrides) in enumerate(arms.items()):
        shutil.rmtree(out / str(i), ignore_errors=True)  # a timing cut short: run again, not reused
        start = time.perf_counter()
        run_train(overrides, out / str(i), own_interpreter=own_interpreter)
        seconds[name] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "timing.json").write_text(json.dumps(seconds, indent=1))


def teacher_confidence(cache_file: Path, temperatures: tuple[float, ...] = (1.0, 4.0)) -> str:
    """How soft a teacher's targets are: the mean probability of its top class over the training videos
    (from a run's cached logits) at each temperature."""
    logits = safe_load(cache_file, "teacher logit cache")["logits"].double()
    return ", ".join(f"{(logits / t).softmax(1).amax(1).mean().item():.3f} at T={t:g}" for t in temperatures)


def test_acc(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test/acc"]


def write_report(
    args: argparse.Namespace, s: dict, teachers: dict, arms: dict, baseline: dict[str, str], runs: Path
) -> None:
    done = {
        arm: {seed: d for seed, d in seeds.items() if (d / "metrics.json").is_file()} for arm, seeds in arms.items()
    }
    lines = [
        f"Scale `{args.scale}`: student TSM-MobileNetV2 x0.5 (`model.backbone=mobilenetv2_050`, the default run's "
        f"recipe) on {s['train']} training "
        f"clips for {s['epochs']} epochs, {s['eval']} validation and test clips; {machine()}; "
        f"{runs_note(args.parallel)}.",
        "",
        "| teacher | command | test top-1 | mean top-class probability on the training videos |",
        "|---|---|---|---|",
    ]
    for name, (overrides, run_dir) in teachers.items():
        acc = f"{test_acc(run_dir):.3f}" if (run_dir / "metrics.json").is_file() else "not run"
        caches = [d / "teacher_logits.pt" for d in done[f"KD {name} a={MAIN[0]} T={MAIN[1]}"].values()]
        soft = teacher_confidence(caches[0]) if caches else "-"
        lines.append(f"| {name} | `python src/train.py {' '.join([*overrides, 'seed=1'])}` | {acc} | {soft} |")
    lines += [
        "",
        "Test top-1 of the student per seed, and the gain of distillation over the student alone (same optimiser)"
        " on the same seed:",
        "",
        "| arm | seeds | test top-1 mean (min-max) | gain mean (min-max) | gain > 0 on | per seed (gain) |",
        "|---|---|---|---|---|---|",
    ]
    gains: dict[str, dict[int, float]] = {}
    test_accs = {arm: {seed: test_acc(d) for seed, d in seeds.items()} for arm, seeds in done.items()}
    for arm, accs in test_accs.items():
        if not accs:
            lines.append(f"| {arm} | none | - | - | - | - |")
            continue
        base = test_accs[baseline[arm]] if arm in baseline else {}
        paired = {seed: acc - base[seed] for seed, acc in accs.items() if seed in base}
        if arm in baseline:
            gains[arm] = paired
        gain = summary(list(paired.values())) if paired else "-"
        wins = f"{sum(g > 0 for g in paired.values())} of {len(paired)}" if arm in baseline else "-"
        per_seed = ", ".join(
            f"{seed}: {acc:.3f}" + (f" ({paired[seed]:+.3f})" if seed in paired else "") for seed, acc in accs.items()
        )
        lines.append(f"| {arm} | {list(accs)} | {summary(list(accs.values()))} | {gain} | {wins} | {per_seed} |")
    timing = runs / "timing" / "timing.json"
    if timing.is_file():
        seconds = json.loads(timing.read_text())
        forked = "" if in_own_interpreter(args.scale) else ", forked from a process that imported the code"
        lines += ["", f"One student epoch, `src/train.py` start to end (wall s, one run at a time{forked}):", ""]
        lines += ["| teacher logits | wall (s) |", "|---|---|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    lines += [
        "",
        "Commands (N: the seed; the study adds quiet logging and hydra.run.dir):",
        "",
        f"- student: `python src/train.py {' '.join(student_data(s))} seed=N`",
        f"- KD: `python src/train.py {' '.join(kd_overrides(s, Path('<teacher>'), *MAIN))} seed=N` "
        "(TSM-MobileNetV2 teacher: `model/distill=checkpoint`; the grid sets alpha and temperature)",
        f"- the AdamW arms add `{' '.join(RECIPES['AdamW'])}` to both",
    ]
    (args.out / f"results_{args.scale}.md").write_text("\n".join(lines) + "\n")
    plot_gains(args.out / f"kd_{args.scale}.png", gains)
    print("\n".join(lines))


def plot_gains(path: Path, gains: dict[str, dict[int, float]]) -> None:
    """One group of bars per arm: the test top-1 gain of each seed over the student alone."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    arms = [arm for arm, seeds in gains.items() if seeds]
    if not arms:
        print(f"no distillation run has finished: {path} not drawn")
        return
    seeds = sorted({seed for arm in arms for seed in gains[arm]})
    width = 0.8 / max(len(seeds), 1)
    for j, seed in enumerate(seeds):
        xs = [i + j * width for i, arm in enumerate(arms) if seed in gains[arm]]
        ax.bar(xs, [gains[arm][seed] for arm in arms if seed in gains[arm]], width, label=f"seed {seed}")
    for i, arm in enumerate(arms):
        ax.hlines(statistics.mean(gains[arm].values()), i - width / 2, i + 0.8 - width / 2, color="black")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(arms))],
        [a.replace("KD ", "").replace(" a=", "\na=").replace(" AdamW", "\nAdamW") for a in arms],
        fontsize=7,
    )
    ax.set_ylabel("test top-1 gain over the student")
    ax.set_title("Distillation gain per seed (black: mean)")
    ax.legend(fontsize=7, ncol=len(seeds))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
