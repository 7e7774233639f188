"""Shared pieces of the studies in experiments/: launch training runs, gather their metrics, time calls.

Each run is ``python src/train.py`` with overrides and its own ``hydra.run.dir``; a run whose
``metrics.json`` exists is not run again, so a study can be resumed or re-reported cheaply. Untimed runs are
forked from a server process that has imported the training code once (:func:`run_train`): that import, about
7 s of the ~10 s a tiny run takes here, is paid once per study instead of once per run. Studies run
as modules from the repository root (``python -m experiments.<study>.<script>``) and import this one
as ``experiments.common``.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import platform
import runpy
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig

from tsm.benchmark import median_ms
from tsm.models import build_recognizer
from tsm.models.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = ROOT / "src" / "train.py"
EXPORT_SCRIPT = ROOT / "src" / "export.py"
# Quiet, file-only logging for study runs; the W&B dashboard is for interactive work.
QUIET = ["logger=csv", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
# The AdamW recipe the studies compare with the default SGD (lr 0.008 x batch/64, as the I3D teacher trains)
ADAMW = ["model.optimizer.name=adamw", "model.optimizer.base_lr=0.008", "model.optimizer.weight_decay=0.05"]


# forks a fresh process per run from a server that imported these once (Python's forkserver start method)
TRAINING_SERVER = multiprocessing.get_context("forkserver")
TRAINING_SERVER.set_forkserver_preload(["experiments.common", "tsm.training.task"])


def run_train(
    overrides: list[str], run_dir: Path, threads: int | None = None, own_interpreter: bool = False
) -> dict[str, float]:
    """Train with ``overrides`` into ``run_dir`` (skipped when it already has metrics.json), on
    ``threads`` torch threads (default: torch's own choice). The run is ``src/train.py``'s ``__main__`` with
    these arguments, in a process forked from :data:`TRAINING_SERVER`; ``own_interpreter``: in a new
    ``python src/train.py`` process instead, whose wall time is what a user waits for."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():  # a run cut short before its metrics is run again, afresh (overwrite)
        argv = [*QUIET, *overrides, f"hydra.run.dir={run_dir}", *(["overwrite=true"] if run_dir.exists() else [])]
        if own_interpreter:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
            command = [sys.executable, str(TRAIN_SCRIPT), *argv]
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
        else:
            run_forked(TRAIN_SCRIPT, argv, threads)
    return json.loads(metrics_file.read_text())


def run_forked(script: Path, argv: list[str], threads: int | None = None) -> None:
    """``python SCRIPT ARGV`` (``src/train.py``, ``src/export.py``) by :func:`forked_exit_code`, its output
    discarded; raises naming the command when it fails."""
    code = forked_exit_code(script, argv, threads)
    if code != 0:
        raise RuntimeError(f"{' '.join(forked_command(script.relative_to(ROOT), argv))} failed (exit code {code})")


def forked_exit_code(
    target: str | Path,
    argv: list[str],
    threads: int | None = None,
    stdout: str | Path = os.devnull,
    stderr: str | Path | None = None,
    timeout: float | None = None,
) -> int:
    """The exit code of ``python TARGET ARGV`` (a script, ``.py``, relative to the repository root or absolute) or
    ``python -m TARGET ARGV`` (a module), run as ``__main__`` from the root in a process forked from
    :data:`TRAINING_SERVER`; on ``threads`` torch threads (default: torch's own choice), its standard output to
    the file ``stdout`` (discarded by default) and its standard error to ``stderr`` (default: this process's).
    Past ``timeout`` seconds it is killed and :class:`subprocess.TimeoutExpired` raised."""
    run = TRAINING_SERVER.Process(target=_forked_main, args=(str(target), argv, threads, stdout, stderr))
    run.start()
    run.join(timeout)
    if run.is_alive():
        run.kill()
        run.join()
        raise subprocess.TimeoutExpired(forked_command(target, argv), timeout)
    return run.exitcode


def forked_command(target: str | Path, argv: list[str]) -> list[str]:
    """The command line :func:`forked_exit_code` stands for: ``python SCRIPT ...`` or ``python -m MODULE ...``."""
    target = str(target)
    return ["python", target, *argv] if target.endswith(".py") else ["python", "-m", target, *argv]


def _forked_main(target: str, argv: list[str], threads: int | None, stdout: str | Path, stderr: str | Path | None):
    """In the forked process: threads and output as :func:`forked_exit_code` says, then ``target`` as ``__main__``."""
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes the run starts
        torch.set_num_threads(threads)
    for stream, path in ((sys.stdout, stdout), (sys.stderr, stderr)):
        if path is not None:
            stream.flush()
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream.fileno())
    os.chdir(ROOT)
    sys.argv = [target, *argv]
    if target.endswith(".py"):
        runpy.run_path(str(ROOT / target), run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


def in_own_interpreter(scale: str) -> bool:
    """Whether a study's timed runs start their own ``python src/train.py`` process, whose wall time is what a
    user waits for, or fork from :data:`TRAINING_SERVER`: the ``tiny`` scale, the tests' run of each study, leaves
    out the interpreter's start."""
    return scale != "tiny"


def timed_run(overrides: list[str], run_dir: Path, own_interpreter: bool = True) -> tuple[dict, float]:
    """``run_train`` on one torch thread, in its own ``python src/train.py`` process unless ``own_interpreter``
    is false (see :func:`in_own_interpreter`); the wall time of the run (measured once, kept in wall_s.txt)."""
    fresh = not (run_dir / "metrics.json").is_file()
    start = time.perf_counter()
    run_train(overrides, run_dir, threads=1, own_interpreter=own_interpreter)
    if fresh:
        (run_dir / "wall_s.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    return read_run(run_dir)


def read_run(run_dir: Path) -> tuple[dict, float]:
    """A finished run's metrics and wall time in seconds (nan when it was not timed)."""
    wall_file = run_dir / "wall_s.txt"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics, float(wall_file.read_text()) if wall_file.is_file() else float("nan")


def compose_train(overrides: list[str]) -> DictConfig:
    """The config ``python src/train.py`` composes with ``overrides`` (no run directory set)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_in_process(overrides: list[str], run_dir: str | Path) -> dict[str, float]:
    """``python src/train.py`` with ``overrides`` into ``run_dir``, in this process: for studies that
    change something (a table entry, a function) before the network is built."""
    from omegaconf import open_dict

    from tsm.training.task import train

    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return train(cfg)


def crop_of(frame: int) -> int:
    """The studies crop (and scale) synthetic frames to 8/9 of their side."""
    return frame * 8 // 9


def synthetic_overrides(train: int, eval_clips: int, frame: int) -> list[str]:
    """Synthetic gestures with ``train`` training and ``eval_clips`` validation and test clips of
    ``frame``-pixel frames, cropped to :func:`crop_of` them."""
    crop = crop_of(frame)
    return [
        f"data.source.sizes.train={train}",
        f"data.source.sizes.val={eval_clips}",
        f"data.source.sizes.test={eval_clips}",
        f"data.source.frame_size={frame}",
        f"data.crop_size={crop}",
        f"data.scale_size={crop}",
    ]


def epoch_curve(run_dir: Path, key: str = "val/acc") -> list[float]:
    """``key`` per epoch from the run's CSV log."""
    with open(next((run_dir / "csv").glob("version_*/metrics.csv"))) as file:
        return [float(r[key]) for r in csv.DictReader(file) if r.get(key)]


# the CPU features that decide this project's kernels: bf16 and int8 dot products, AMX tiles, AVX2's int8 path
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimddp", "bf16")


def cpu() -> str:
    """The CPU as Linux names it, with its family and model (a generation of one vendor's name) and its
    ``CPU_FLAGS``; the platform's processor string elsewhere."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in info.read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or fields.get("CPU part") or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    family = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return ", ".join(filter(None, [name, family, " ".join(f for f in CPU_FLAGS if f in flags)]))


def machine() -> str:
    return f"{platform.machine()} ({cpu()}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def shown(path: str | Path) -> Path:
    """``path`` as a report shows it: relative to the repository when inside it."""
    path = Path(path)
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run_many(jobs: list[tuple[list[str], Path]], parallel: int = 1) -> list[dict[str, float]]:
    """``run_train`` over (overrides, run_dir) jobs, ``parallel`` at a time with one torch thread each
    (on few cores, two single-thread runs beat two two-thread runs taking turns)."""
    if parallel == 1:
        return [run_train(overrides, run_dir) for overrides, run_dir in jobs]
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: run_train(*job, threads=1), jobs))


def plot_band(ax, curves: list[list[float]], label: str, color: str) -> None:
    """Mean of per-seed curves (epochs 1..n) as a line, their min-max as a shaded band."""
    epochs = range(1, min(len(c) for c in curves) + 1)
    stacked = [[c[e - 1] for c in curves] for e in epochs]
    ax.plot(epochs, [statistics.mean(v) for v in stacked], color=color, label=label)
    ax.fill_between(epochs, [min(v) for v in stacked], [max(v) for v in stacked], color=color, alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_panels(
    path: Path,
    panels: Mapping[str, list[tuple[str, str, list[list[float]]]]],
    panel_width: float = 4.5,
    target: float | None = None,
    legend: str = "lower right",
) -> None:
    """Validation top-1 per epoch, one panel per title, each line a ``(label, colour, per-seed curves)`` band
    labelled with its seed count; ``target``, a dashed line."""
    fig = Figure(figsize=(panel_width * len(panels), 3.5))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]  # one row, even of one panel
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        for label, color, curves in lines:
            plot_band(ax, curves, f"{label}, {len(curves)} seed{'s' if len(curves) > 1 else ''}", color)
        if target is not None:
            ax.axhline(target, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        if lines:
            ax.legend(loc=legend, fontsize=8)
    fig.axes[0].set_ylabel("validation top-1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(values: list[float]) -> str:
    """``mean (min-max)`` with three decimals; the value alone for one seed."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def per_seed_table(columns: list[str], rows: list[str]) -> list[str]:
    """A report's "Per seed:" section: a markdown table of ``columns`` over the rows already formatted."""
    return ["", "Per seed:", "", f"| {' | '.join(columns)} |", "|" + "---|" * len(columns), *rows]


def runs_note(parallel: int) -> str:
    """How the training runs shared the machine, for a study's report."""
    if parallel == 1:
        return f"training runs one at a time, {torch.get_num_threads()} torch threads"
    return f"training runs {parallel} at a time, one torch thread each"


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, inference: bool = True, burst: int = 1
) -> dict[str, float]:
    """Median ms of each function, rounds interleaved so that machine drift hits all alike, each function called
    ``burst`` times in a row per round (under ``torch.inference_mode`` unless ``inference`` is False, e.g. for
    training steps)."""
    return {k: statistics.median(v) for k, v in interleaved_samples(fns, repeats, inference, burst).items()}


def interleaved_samples(
    fns: dict[str, Callable[[], object]], repeats: int, inference: bool = True, burst: int = 1
) -> dict[str, list[float]]:
    """ms of every call of each function: ``repeats`` rounds, each calling every function ``burst`` times in a
    row (after one warm-up call each)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode(inference):
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for name, fn in fns.items():
                samples[name] += [median_ms(fn, repeats=1, warmup=0) for _ in range(burst)]
    return samples


def plain_2d(model: Recognizer, backbone: str, backbone_args: Mapping[str, Any] | None = None) -> Recognizer:
    """The 2D network a TSM/TSN ``model`` over timm ``backbone`` is made of: the same weights, one frame
    per clip, no shift (the baseline of per-frame cost), in eval mode."""
    plain = build_recognizer(backbone, model.num_classes, 1, dropout=0.0, backbone_args=backbone_args)
    # shifts and temporal pools wrap the module they precede as ``.net``
    plain.load_state_dict({key.replace(".net.", "."): value for key, value in model.state_dict().items()})
    return plain.eval()


def noise_clips(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` clips ``(8, 3, size, size)`` of Gaussian noise, float32: calibration where only speed is measured,
    or inputs for random weights."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((8, 3, size, size), np.float32) for _ in range(count)]


def random_causal_model(backbone: str, num_classes: int = 27, seed: int = 0) -> Recognizer:
    """A causal TSM over timm ``backbone`` with random weights and random norms, in eval mode: for timing and
    size (timm zero-initialises some norms, whose branches a converter would fold away)."""
    torch.manual_seed(seed)
    model = build_recognizer(backbone, num_classes, 8, shift={"direction": "causal"}).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.1)
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def fp32_edge_files(model: Recognizer, stem: Path, size: int) -> dict[str, Path]:
    """``model``'s stream file at ``size`` for onnxruntime (``stem.onnx``) and LiteRT (``stem.tflite``), as
    ``{"onnxruntime fp32": ..., "LiteRT fp32": ...}`` (needs ``requirements-edge.txt``)."""
    from tsm.export import to_onnx
    from tsm.litert_export import to_tflite

    return {
        "onnxruntime fp32": to_onnx(model, stem.with_suffix(".onnx"), mode="stream", input_size=size),
        "LiteRT fp32": to_tflite(model, stem.with_suffix(".tflite"), input_size=size),
    }


def int8_edge_files(fp32: dict[str, Path], clips: list[np.ndarray], description: dict) -> dict[str, Path]:
    """The int8 files of :func:`fp32_edge_files`' ``fp32`` (``stem_int8.onnx``, ``stem_int8.tflite``), calibrated on
    ``clips`` (``(T, 3, H, W)`` float32 each) described by ``description``."""
    from tsm.litert_export import to_tflite_int8
    from tsm.quantize import to_int8

    files = {}
    for runtime, convert in (("onnxruntime", to_int8), ("LiteRT", to_tflite_int8)):
        source = fp32[f"{runtime} fp32"]
        files[f"{runtime} int8"] = convert(source, source.with_stem(f"{source.stem}_int8"), clips, description)
    return files


def write_jester_folder(
    root: Path, classes: tuple[str, ...], counts: Mapping[str, int], render: Callable[[str, int, str], np.ndarray]
) -> Path:
    """A folder in Jester V1's publisher layout (``jester-v1-labels.csv``, ``id;label`` train and validation
    CSVs, an empty test CSV, ``20bn-jester-v1/<id>/00001.jpg`` ...), ``counts[part]`` clips per part
    (``train``, ``validation``) labelled with ``classes`` in turn, each clip's uint8 ``(T, H, W, 3)`` frames
    from ``render(part, index, class_name)``; kept as it is once complete."""
    from PIL import Image

    done = root / "complete"
    if done.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / "jester-v1-labels.csv").write_text("".join(f"{c}\n" for c in classes))
    next_id = 1
    for part in ("train", "validation"):
        lines = []
        for index in range(counts[part]):
            name = classes[index % len(classes)]
            folder = root / "20bn-jester-v1" / str(next_id)
            folder.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(render(part, index, name)):
                Image.fromarray(frame).save(folder / f"{t + 1:05d}.jpg", quality=90)
            lines.append(f"{next_id};{name}\n")
            next_id += 1
        (root / f"jester-v1-{part}.csv").write_text("".join(lines))
    (root / "jester-v1-test.csv").write_text("")
    done.write_text("")
    return root
