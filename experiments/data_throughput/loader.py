"""How many DataLoader workers does a training step need? Clips/s of the training loader by worker count.

    python -m experiments.data_throughput.loader [--clips 64] [--workers 0 1 2] [--size 224]
        [--out experiments/data_throughput/loader.md]

Builds two inputs in a temporary folder:
  (a) a Jester-format folder (``data=jester``): ``--clips`` training clips of 37 JPEG frames, 176x100, of
      hand swipes (experiments.generalisation.scenes), 4 validation clips;
  (b) a class-per-folder tree of Kinetics-like videos (``data=list data.source.format=tree data.frames=false``):
      2 classes of ``--clips``/2 training videos, one validation video each, every video ``--seconds`` of
      340x256 H.264 at 30 fps with a keyframe every 60 frames (bench.py's input (b)).
For each input and worker count, the training config is composed as ``python src/train.py`` composes it and
the datamodule's ``train_dataloader()`` read for one epoch to warm up (the persistent workers started, each
worker's kept video index filled, as from training's second epoch), then timed over a second epoch. For
context, one float32 training step of the default model (TSM over resnet10t_050) at ``--size`` on this CPU
gives the clips/s a step consumes.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.common import compose_train, machine, write_jester_folder
from experiments.data_throughput.bench import encode, scene
from experiments.generalisation.scenes import SWIPES, hand_swipe, swipe
from experiments.recipe.step_time import training_step
from tsm.benchmark import median_ms
from tsm.training.task import instantiate_data

PARTS = ("train", "validation")
VIDEO_CLASSES = ("abseiling", "archery")  # two of Kinetics-400's
FPS = 30


def jester_folder(root: Path, clips: int) -> Path:
    """A Jester-format folder of ``clips`` training and 4 validation hand swipes, 37 frames of 176x100."""

    def render(part: str, index: int, name: str) -> np.ndarray:
        return swipe(hand_swipe, np.random.default_rng([PARTS.index(part), index]), name, 37, 100, 176)

    return write_jester_folder(root, tuple(SWIPES), {"train": clips, "validation": 4}, render)


def video_tree(root: Path, clips: int, seconds: int) -> Path:
    """``root/{train,val}/<class>/<n>.mp4``: ``clips`` training videos over :data:`VIDEO_CLASSES`, one validation
    video per class, each ``seconds`` of 340x256 H.264 at 30 fps with a keyframe every 60 frames."""
    counts = {"train": clips // len(VIDEO_CLASSES), "val": 1}
    seed = 0
    for split, count in counts.items():
        for name in VIDEO_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                seed += 1
                encode(folder / f"{index:03d}.mp4", scene(FPS * seconds, 340, 256, seed), "libx264", FPS, gop=60)
    return root


def epoch_clips_per_s(overrides: list[str]) -> float:
    """Clips/s of the training loader ``python src/train.py overrides`` builds, over its second epoch."""
    cfg = compose_train([*overrides, "data.log_dir=null"])
    loader = instantiate_data(cfg).train_dataloader()
    for _ in loader:  # warm-up epoch: workers started (persistent), their video indexes kept
        pass
    start = time.perf_counter()
    clips = sum(len(batch[0]) for batch in loader)
    return clips / (time.perf_counter() - start)


def step_clips_per_s(size: int, batch: int, repeats: int) -> float:
    """Clips/s one float32 training step (forward, backward, SGD) of the default model consumes on this CPU:
    ``batch`` random clips of 8 frames at ``size``, median of ``repeats`` steps after two warm-up steps."""
    step, _, _ = training_step(["trainer.precision=32-true", f"data.crop_size={size}"], batch)
    return batch / median_ms(step, repeats, warmup=2) * 1e3


def workers_needed(consumed: float, per_worker: float) -> int:
    """The workers that feed a step consuming ``consumed`` clips/s at ``per_worker`` clips/s each."""
    return math.ceil(consumed / per_worker)


def report(args: argparse.Namespace, rates: dict[str, dict[int, float]], step: float, loads: list[float]) -> str:
    """The markdown report: machine, command, loader table, step consumption and the workers rule."""
    knobs = [f"--{knob} {getattr(args, knob)}" for knob in ("clips", "size", "batch", "seconds", "repeats")]
    command = " ".join(["python -m experiments.data_throughput.loader", *knobs, "--workers", *map(str, args.workers)])
    lines = [
        f"Machine: {machine()}, nproc={os.cpu_count()}, load average {loads[0]:.1f} -> {loads[1]:.1f}.",
        "",
        f"Command: `{command}`",
        "",
        f"Inputs: (a) {args.clips} training clips of 37 JPEG frames, 176x100 (`data=jester`); (b) {args.clips} "
        f"videos in {len(VIDEO_CLASSES)} class folders, {args.seconds} s of 340x256 H.264 at {FPS} fps, a keyframe "
        "every 60 frames (`data=list data.source.format=tree data.frames=false`). Clips/s of the training loader "
        f"(`python src/train.py data=... data.crop_size={args.size} data.batch_size={args.batch} "
        "data.num_workers=W`) over its second epoch:",
        "",
        "| input | workers | clips/s | relative to 1 worker |",
        "|---|---|---|---|",
    ]
    for name, by_workers in rates.items():
        for workers, rate in by_workers.items():
            relative = f"{rate / by_workers[1]:.2f}" if 1 in by_workers else "-"
            lines.append(f"| {name} | {workers} | {rate:.1f} | {relative} |")
    needed = ", ".join(
        f"{workers_needed(step, by_workers[1])} for {name}" for name, by_workers in rates.items() if 1 in by_workers
    )
    here = f" (this CPU's step: {needed})" if needed else ""
    lines += [
        "",
        f"Training step on this CPU (default model, TSM over resnet10t_050, float32, batch {args.batch} of "
        f"8 frames at {args.size}x{args.size}, forward + backward + SGD step, median of {args.repeats} after two "
        f"warm-up steps): {step:.1f} clips/s.",
        "",
        "A step consuming C clips/s needs ceil(C / clips-per-worker) workers, clips-per-worker being the input's "
        f"1-worker rate{here}; on a GPU, "
        "`python -m experiments.gpu.check` measures C (the GPU's own step figure; none measured yet).",
    ]
    return "\n".join(lines) + "\n"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="training clips (and videos) per input, even")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="data.num_workers values")
    parser.add_argument("--size", type=int, default=224, help="data.crop_size, and the step's frame size")
    parser.add_argument("--batch", type=int, default=8, help="data.batch_size, and the step's batch")
    parser.add_argument("--seconds", type=int, default=10, help="length of each video of input (b)")
    parser.add_argument("--repeats", type=int, default=5, help="timed training steps")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().with_name("loader.md"))
    args = parser.parse_args()
    if args.clips % 2 or args.clips < args.batch:
        parser.error("--clips must be even and at least --batch (the loader drops a last partial batch)")
    return args


def main() -> None:
    args = parse()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        jester = jester_folder(Path(tmp) / "jester", args.clips)
        tree = video_tree(Path(tmp) / "videos", args.clips, args.seconds)
        inputs = {
            "(a) Jester-format folder": ["data=jester", f"data.root={jester}"],
            "(b) video tree": ["data=list", f"data.root={tree}", "data.source.format=tree", "data.frames=false"],
        }
        common = [f"data.crop_size={args.size}", f"data.batch_size={args.batch}"]
        rates = {
            name: {w: epoch_clips_per_s([*data, *common, f"data.num_workers={w}"]) for w in args.workers}
            for name, data in inputs.items()
        }
    step = step_clips_per_s(args.size, args.batch, args.repeats)
    text = report(args, rates, step, [load_before, os.getloadavg()[0]])
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
