"""Part "stream": per-frame latency (batch 1) of causal TSM exported as a stream-mode ONNX file, by runtime."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import tsm
from experiments.gpu.table import Table
from experiments.latency.bench import CAUSAL
from tsm.benchmark import median_ms
from tsm.streaming.model import StreamingTSM
from tsm.streaming.runtime import buffer_zeros, read_metadata

GESTURES = 27  # Jester's, the online demo's classes


def cuda_ep_missing() -> list[str]:
    providers = ort.get_available_providers()
    missing = [] if torch.cuda.is_available() else ["no CUDA device"]
    if "CUDAExecutionProvider" not in providers:
        missing.append(
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (has {', '.join(providers)}): replace the "
            "onnxruntime package by onnxruntime-gpu (both installed, one shadows the other)"
        )
    return missing


def tensorrt_missing() -> list[str]:
    missing = [] if torch.cuda.is_available() else ["no CUDA device"]
    if importlib.util.find_spec("torch_tensorrt") is None:
        missing.append("torch_tensorrt is not installed (pip install torch-tensorrt, the build for this torch)")
    return missing


def cuda_ep_step(path: Path, frame: np.ndarray) -> Callable[[], None]:
    """A frame through the file in onnxruntime's CUDA provider; the buffers go back in as NumPy feeds
    (tsm.open_stream's session, which keeps them bound, runs on the CPU provider only)."""
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(
            f"onnxruntime fell back to {session.get_providers()}: its CUDA provider did not load (its log above "
            f"says why; an onnxruntime-gpu built for another CUDA major version than torch's {torch.version.cuda} "
            "is one cause)"
        )
    feed = {"frame": frame, **buffer_zeros(read_metadata(path), 1)}
    names = list(feed)[1:]
    outputs = ["logits", *(f"{name}_out" for name in names)]

    def step() -> None:
        _, *buffers = session.run(outputs, feed)
        feed.update(zip(names, buffers, strict=True))

    return step


def tensorrt_step(stream: StreamingTSM, frame: torch.Tensor) -> Callable[[], None]:
    """A frame through the module the file was exported from, compiled by torch-tensorrt's torch.compile backend
    (it takes PyTorch modules, not ONNX files); the buffers stay on the GPU."""
    import torch_tensorrt  # noqa: F401  (optional: registers torch.compile's "torch_tensorrt" backend)

    compiled = torch.compile(stream, backend="torch_tensorrt", dynamic=False)
    state = [torch.zeros(shape, device=frame.device) for shape in stream.buffer_shapes(frame.shape)]

    def step() -> None:
        with torch.no_grad():
            _, *buffers = compiled(frame, *state)
        state[:] = buffers

    return step


def per_frame(step: Callable[[], object], args: argparse.Namespace) -> list[str]:
    first_ms = median_ms(step, repeats=1, warmup=0)
    ms = median_ms(step, args.stream_frames, args.warmup)
    return [f"{first_ms / 1e3:.2f}", f"{ms:.2f}", f"{1e3 / ms:.0f}"]


def section(args: argparse.Namespace, device: torch.device, workdir: Path) -> Table:
    name = f"TSM over {args.stream_backbone} (causal shift, {GESTURES} classes)"
    note = (
        f"{name}, exported by tsm.to_onnx(mode='stream') at {args.size}x{args.size}; one frame at a time, the "
        f"shift buffers carried from frame to frame; median of {args.stream_frames} frames after {args.warmup}."
    )
    table = Table("Streaming per frame", ["runtime", "first frame (s)", "ms/frame", "frames/s"], note)
    model = tsm.build_recognizer(args.stream_backbone, GESTURES, args.frames, shift=CAUSAL).eval()
    path = tsm.to_onnx(model, workdir / "stream.onnx", mode="stream", input_size=args.size)
    frame = torch.randn(1, 3, args.size, args.size)
    stream = StreamingTSM.from_model(model.to(device))
    on_device, array = frame.to(device), frame.numpy()
    runtimes = {
        f"PyTorch eager ({device.type})": ([], lambda: partial(stream.step, on_device)),
        "onnxruntime CPUExecutionProvider (tsm.open_stream)": ([], lambda: partial(tsm.open_stream(path).step, array)),
        "onnxruntime CUDAExecutionProvider": (cuda_ep_missing(), lambda: cuda_ep_step(path, array)),
        "TensorRT (torch-tensorrt)": (tensorrt_missing(), lambda: tensorrt_step(stream, on_device)),
    }
    for label, (missing, make) in runtimes.items():
        if missing:
            table.skip(label, "; ".join(missing))
        else:
            table.add(label, lambda make=make: per_frame(make(), args))
    return table
