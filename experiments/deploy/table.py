"""The table an engineer picks a deployment from: the default causal model and TSM-MobileNetV2 x1.0, streamed frame
by frame in onnxruntime, LiteRT, TVM and the browser (onnxruntime-web), fp32 and int8, in one run on one machine.

    python -m experiments.deploy.table [--tiny] [--out experiments/deploy]

Per row, at 224x224, batch 1, two threads: median and p95 ms per frame of the stream model (rounds interleaved over
all Python rows, a burst of frames per row per round), its ratio to the plain 2D network of the same weights in the
same runtime and precision, the file's MB, and the share of frames whose top-1 is PyTorch's (eager ``StreamingTSM``).
The default model is ``experiments/tsm_vs_tsn``'s causal run (trained there when absent); MobileNetV2 x1.0 has random
weights. Writes ``results.md`` and ``deploy.png``; ``--tiny`` (32x32, random weights, few rounds, no TVM or browser
rows) writes ``results_tiny.md`` and ``deploy_tiny.png`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from experiments.common import ROOT, cpu, interleaved_samples, random_causal_model, run_train, shown
from experiments.deploy import measure
from experiments.deploy.report import plot, rows_markdown, summarise
from experiments.latency.browser import WARMUP
from experiments.tsm_vs_tsn.study import SCALES as TRAINING
from experiments.tsm_vs_tsn.study import overrides, run_dir
from tests.helpers.chromium import chromium_path, write_y4m
from tsm.imagenet import MEAN, STD
from tsm.models.checkpoints import load_recognizer

HERE = Path(__file__).resolve().parent
SCALES = {
    "full": {"size": 224, "rounds": 48, "burst": 4, "clips": 16, "calibration": 8, "page_frames": 20, "pages": 4},
    "tiny": {"size": 32, "rounds": 3, "burst": 2, "clips": 2, "calibration": 1},
}
TINY_SKIPS = {
    "TVM": "skipped at --tiny: its eight TVM builds (5-50 s each here) do not fit the tiny run's ~90 s",
    "TVM tuned": "skipped at --tiny: MetaSchedule tuning takes minutes per model",
    "onnxruntime-web": "skipped at --tiny: its eight headless Chromium page runs (~10 s each) do not fit the tiny "
    "run's ~90 s",
}
THREADS = 2


def subjects(tiny: bool) -> list[measure.Subject]:
    """The default causal model, trained by experiments/tsm_vs_tsn (trained there when absent; random weights at
    --tiny), and MobileNetV2 x1.0 with random weights (no study trains it)."""
    mobilenet = measure.Subject("TSM-MobileNetV2 x1.0", "mobilenetv2_100", random_causal_model("mobilenetv2_100"))
    default = measure.Subject("default (TSM-ResNet10-T x0.5)", "resnet10t_050", random_causal_model("resnet10t_050"))
    if not tiny:
        run = run_dir(ROOT / "experiments" / "tsm_vs_tsn" / "runs" / "quick", 72, "TSM causal", 1)
        metrics = run_train(overrides(TRAINING["quick"], 72, "causal", 1), run)
        default.ckpt = run / "checkpoints" / "last.ckpt"
        default.model = load_recognizer(default.ckpt)
        default.weights = f"trained at 64x64 (`{shown(run)}`, test top-1 {metrics['test/acc']:.3f})"
    return [default, mobilenet]


def camera(clips: list[np.ndarray], path: Path) -> Path:
    """The normalised ``clips`` back as RGB frames, one after the other, in a ``.y4m`` fake camera."""
    mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (MEAN, STD))
    frames = np.concatenate([(clip * std + mean) * 255 for clip in clips]).clip(0, 255).round().astype(np.uint8)
    return write_y4m(frames.transpose(0, 2, 3, 1), path)


def measure_subject(subject: measure.Subject, files: dict, scale: dict, folder: Path, tiny: bool) -> tuple:
    """The rows of the subject's ``files`` (:func:`measure.runtime_files`) with their MB and agreement (each file's
    per-frame top-1 against PyTorch's on ``scale["clips"]`` clips), and the browser rows' page runs (one round of
    each, to call; none at ``tiny``)."""
    size = scale["size"]
    clips = measure.sample_clips(subject.ckpt, files["onnxruntime", "fp32"][0], "val", scale["clips"], size)
    expected = measure.torch_top1(subject.model, clips)
    rows = {
        key: {"mb": stream.stat().st_size / 2**20, "agreement": measure.agreement(stream, clips, expected)}
        for key, (stream, _) in files.items()
    }
    pages = {}
    if not tiny and chromium_path():
        cam = camera(clips, folder / "camera.y4m")
        for precision in ("fp32", "int8"):
            rows["onnxruntime-web", precision] = {"mb": rows["onnxruntime", precision]["mb"]}
            args = (files["onnxruntime", precision], subject.model, cam, size, scale["page_frames"])
            pages[subject.name, "onnxruntime-web", precision] = partial(measure.page_round, *args)
    return rows, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="32x32, random weights, few rounds (CI)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of results.md (results_tiny.md) and the plot")
    parser.add_argument("--tvm-trials", type=int, default=16, help="MetaSchedule trials per task (TVM tuned rows)")
    args = parser.parse_args()
    scale = SCALES["tiny" if args.tiny else "full"]
    os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))  # read when TVM's thread pool starts
    # TVM's threads sleep between calls, as onnxruntime's do (tsm.streaming.runtime.ort_session): spinning, they took
    # the cores from the next file timed (LiteRT 6.81 against 4.65 ms a frame after a tuned TVM library)
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")
    torch.set_num_threads(THREADS)
    load = os.getloadavg()
    table: dict[str, dict] = {}
    calls, pages, building = {}, {}, {}
    models = subjects(args.tiny)
    with tempfile.TemporaryDirectory() as tmp:
        for subject in models:
            folder, start = Path(tmp) / subject.backbone, time.perf_counter()
            trials = None if args.tiny else args.tvm_trials
            files = measure.runtime_files(subject, folder, scale["size"], scale["calibration"], trials)
            building[subject.name] = time.perf_counter() - start
            table[subject.name], subject_pages = measure_subject(subject, files, scale, folder, args.tiny)
            pages |= subject_pages
            for key, paths in files.items():
                for kind, path in zip(("stream", "plain"), paths, strict=True):
                    calls[subject.name, *key, kind] = measure.timed_call(path, (1, 3, scale["size"], scale["size"]))
        timed(table, calls, pages, scale)
    skips = TINY_SKIPS if args.tiny else {} if chromium_path() else {"onnxruntime-web": "no Chromium on this machine"}
    suffix = "_tiny" if args.tiny else ""
    args.out.mkdir(parents=True, exist_ok=True)
    summary = summarise(table)
    text = header(args, scale, load) + method(scale, len(calls), models, building, args) + rows_markdown(summary, skips)
    (args.out / f"results{suffix}.md").write_text(text)
    plot(summary, args.out / f"deploy{suffix}.png", scale["size"])
    print(text)


def timed(table: dict, calls: dict, pages: dict, scale: dict) -> None:
    """Add each row's ms per frame to ``table``: the browser's page rounds spread between chunks of the Python
    rounds, so that a change in the machine's load hits both; and the browser rows' agreement, from their pages."""
    chunks = scale["pages"] if pages else 1
    for chunk in range(chunks):
        for (name, *key), page_round in pages.items():
            row, page = table[name][tuple(key)], page_round(plain_first=chunk % 2 == 1)
            for kind, values in page.items():
                row.setdefault(kind, []).extend(values)
            # the page runs' level drifts with the machine's load: the ratio of the two adjacent runs
            row.setdefault("ratios", []).append(statistics.median(page["stream"]) / statistics.median(page["plain"]))
        samples = interleaved_samples(calls, scale["rounds"] // chunks, burst=scale["burst"])
        for (name, *key, kind), ms in samples.items():
            table[name][tuple(key)].setdefault(kind, []).extend(ms)
    for rows in table.values():
        for row in rows.values():
            if "same" in row:
                row["agreement"] = float(np.mean(row.pop("same")))


def header(args: argparse.Namespace, scale: dict, load: tuple[float, ...]) -> str:
    """Title, command and machine of the report."""
    packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "onnxruntime", "ai-edge-litert", "apache-tvm"))
    web = ROOT / "web" / "node_modules" / "onnxruntime-web" / "package.json"
    if web.is_file():
        packages += f", onnxruntime-web {json.loads(web.read_text())['version']} ({Path(chromium_path() or '-').name})"
    command = "python -m experiments.deploy.table" + (" --tiny" if args.tiny else f" --tvm-trials {args.tvm_trials}")
    return (
        f"# Deployment table: per streamed frame at {scale['size']}x{scale['size']}, batch 1, {THREADS} threads\n\n"
        f"Command: `{command}` (out: `{shown(args.out)}`). Machine: {platform.platform()}, {cpu()}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {packages}. Load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in load)} at the start, {os.getloadavg()[0]:.2f} (1 min) at the end.\n\n"
    )


def method(scale: dict, files: int, models: list[measure.Subject], building: dict, args: argparse.Namespace) -> str:
    """How the rows were measured, where each model's weights come from, and how long its files took to make
    (``building``: seconds per model)."""
    rounds, burst = scale["rounds"], scale["burst"]
    browser = "No browser rows (--tiny). "
    if "pages" in scale:
        browser = (
            f"Browser rows: {scale['pages']} page runs of {scale['page_frames']} frames per file (after {WARMUP} "
            "warm-up frames), one run of each file (stream and plain 2D, each first in turn) before each "
            f"{rounds // scale['pages']} of the Python rounds; their stream / plain 2D ratio is the median of the "
            "runs' ratios. "
        )
    weights = "; ".join(f"{subject.name}: {subject.weights}" for subject in models)
    made = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in building.items())
    tuning = (
        ""
        if args.tiny
        else f"TVM tuned: MetaSchedule, {args.tvm_trials} trials per task, the stream model's tasks, then the plain 2D "
        "network's that its log lacks (`tsm.tvm_tuning`). "
    )
    return (
        f"Python rows: {rounds} rounds over all {files} files (each row's stream file and its plain 2D file), "
        f"{burst} frames of each file in a row per round: median and p95 of {rounds * burst} frames per file. "
        f"{browser}Threads: onnxruntime's default (one per core), LiteRT (XNNPACK) {THREADS}, "
        f"TVM_NUM_THREADS={THREADS}, onnxruntime-web min(4, cores) on the cross-origin isolated page. "
        f"Agreement: the share of the frames of {scale['clips']} clips (8 frames each) whose top-1 is PyTorch's "
        "(eager StreamingTSM, fp32): the checkpoint's validation clips for a trained model, Gaussian noise for "
        f"random weights; int8 calibrated (min-max) on {scale['calibration']} clips of the same kind (the "
        f"checkpoint's training clips, or noise). Weights: {weights}. With random weights on noise, agreement checks "
        "the runtimes' arithmetic, not a trained model's margins (experiments/quantization: int8 agrees on 0.993 of "
        f"clips for trained TSM-MobileNetV2 x0.5). {tuning}Exports, conversions, calibration, TVM builds and "
        f"tuning took {made}.\n\n"
    )


if __name__ == "__main__":
    main()
