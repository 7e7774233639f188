"""Per-frame latency of the browser demo (onnxruntime-web, WebAssembly, in headless Chromium) beside
onnxruntime in Python, for the same stream-mode file.

    python -m experiments.latency.browser [--size 224] [--frames 40] [--out experiments/latency/browser.md]

The model: streaming TSM-MobileNetV2 (causal shift, random weights, 27 classes). The page reads a fake
camera (a ``.y4m`` file), runs each frame through onnxruntime-web with the shift buffers kept as
onnxruntime tensors, and reports its model time per frame (``session.run`` only, as the Python figure);
the first 5 frames are left out as warm-up. Python: :class:`tsm.streaming.runtime.OnnxStreamSession`
(buffers bound inside onnxruntime) on the frames the page used, median of the same count.
Needs Chromium, ``npm install --prefix web`` and playwright (the dev extra).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from tests.helpers.chromium import chromium_path, run_page, write_y4m
from tsm.export import to_onnx
from tsm.models import build_recognizer
from tsm.streaming.runtime import OnnxStreamSession

WARMUP = 5


def browser_frames(model: Path, camera: Path, frames: int) -> list[dict]:
    result = run_page(model, camera, frames, timeout_s=600)
    if result["error"]:
        raise RuntimeError(f"the page failed: {result['error']}")
    return result["frames"]


def python_ms(model: Path, inputs: list[np.ndarray]) -> list[float]:
    session = OnnxStreamSession(model)
    times = []
    for x in inputs:
        start = time.perf_counter()
        session.step(x)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("browser.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_recognizer(args.backbone, 27, 8, shift={"direction": "causal"}).eval()
    with tempfile.TemporaryDirectory() as tmp:
        stream = to_onnx(model, Path(tmp) / "stream.onnx", mode="stream", input_size=args.size)
        yy, xx = np.mgrid[0:240, 0:320]
        video = np.stack([xx * 0.7, yy * 0.9, 200 - xx * 0.5], axis=-1).astype(np.uint8)[None].repeat(20, 0)
        for i, frame in enumerate(video):
            frame[80:160, 10 + 14 * i : 90 + 14 * i] = (230, 200, 40)
        camera = write_y4m(video, Path(tmp) / "camera.y4m")
        frames = browser_frames(stream, camera, args.frames + WARMUP)[WARMUP:]
        inputs = [np.asarray(f["input"], np.float32).reshape(1, 3, args.size, args.size) for f in frames]
        python = python_ms(stream, inputs[:WARMUP] + inputs)[WARMUP:]  # warmed up on the first frames
    page = [f["latency_ms"] for f in frames]
    browser_ms, python_median = statistics.median(page), statistics.median(python)
    text = "\n".join(
        [
            f"Command: `python -m experiments.latency.browser --size {args.size} --frames {args.frames}`",
            "",
            f"Machine: {torch.get_num_threads()} CPU threads; {Path(chromium_path()).name} headless (onnxruntime-web "
            f"1.30.0, WebAssembly SIMD, threads: 2 when the page is cross-origin isolated, as src/serve_demo.py "
            f"serves it), onnxruntime {ort.__version__} in Python ({torch.get_num_threads()} threads). Streaming TSM "
            f"`{args.backbone}` (causal), {args.size}x{args.size}, batch 1; median over {len(page)} frames after "
            f"{WARMUP} of warm-up.",
            "",
            "| runtime | ms per frame | relative |",
            "|---|---|---|",
            f"| onnxruntime, Python (tsm.streaming.runtime) | {python_median:.2f} | 1.00 |",
            f"| onnxruntime-web, headless Chromium (web/) | {browser_ms:.2f} | {browser_ms / python_median:.2f}x |",
            "",
        ]
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
