"""The measurements behind the deployment table: each runtime's files, a timed call of each, and how often each
file's per-frame top-1 agrees with PyTorch's.

A model's plain 2D network (the same weights, no shift: ``experiments.common.plain_2d``) is exported as a stream
file without buffers, so that every runtime runs it the same way as the stream model it is compared with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.common import fp32_edge_files, int8_edge_files, noise_clips, plain_2d
from experiments.latency.browser import WARMUP, browser_frames
from tsm.metadata import BUFFERS_KEY
from tsm.models.recognizer import Recognizer
from tsm.quantize import calibration_data, clips_of, one_call
from tsm.streaming.model import StreamingTSM
from tsm.streaming.sessions import open_stream, read_file_metadata
from tsm.streaming.tvm_runtime import load_library


def sample_clips(ckpt: Path | None, fp32_file: Path, split: str, count: int, size: int) -> list[np.ndarray]:
    """``count`` unaugmented clips of the checkpoint's ``split`` at the file's size, as ``src/export.py`` calibrates
    and compares; Gaussian noise without a checkpoint (random weights)."""
    if ckpt is None:
        return noise_clips(size, count, seed=0 if split == "train" else 1)
    return clips_of(calibration_data(ckpt, fp32_file), split, count)[0]


@dataclass
class Subject:
    """A model of the table: its name there, its timm backbone, the network, its checkpoint (None: random weights)
    and where its weights come from, in words."""

    name: str
    backbone: str
    model: Recognizer
    ckpt: Path | None = None
    weights: str = "random weights (norms randomised, 27 classes)"


def runtime_files(subject: Subject, folder: Path, size: int, calibration: int, tvm_trials: int | None) -> dict:
    """``{(runtime, precision): (stream file, plain 2D file)}`` at ``size``: onnxruntime and LiteRT in fp32 and int8
    (calibrated on ``calibration`` training clips, :func:`sample_clips`), and unless ``tvm_trials`` is None, TVM
    untuned and tuned (:func:`tuned_tvm`), each compiled from the onnxruntime file of its precision."""
    nets = {"stream": subject.model, "plain": plain_2d(subject.model, subject.backbone)}
    fp32 = {kind: fp32_edge_files(net, folder / kind, size) for kind, net in nets.items()}
    clips = sample_clips(subject.ckpt, fp32["stream"]["onnxruntime fp32"], "train", calibration, size)
    described = {"data": f"training clips of {subject.ckpt}" if subject.ckpt else "Gaussian noise"}
    by_kind = {kind: files | int8_edge_files(files, clips, described) for kind, files in fp32.items()}
    files = {tuple(name.split()): (by_kind["stream"][name], by_kind["plain"][name]) for name in by_kind["stream"]}
    if tvm_trials is not None:
        from tsm.tvm_export import to_tvm

        for precision in ("fp32", "int8"):
            onnx_files = files["onnxruntime", precision]
            files["TVM", precision] = tuple(to_tvm(path, path.with_suffix(".so")) for path in onnx_files)
            files["TVM tuned", precision] = tuned_tvm(*onnx_files, tvm_trials, folder / f"tuning_{precision}")
    return files


def tuned_tvm(stream: Path, plain: Path, trials: int, log: Path) -> tuple[Path, Path]:
    """TVM libraries of the ``stream`` and ``plain`` ONNX files, each tuned with ``trials`` MetaSchedule trials per
    task into the log ``log``: the plain 2D network's tasks that the stream model's tuning left in the log are not
    tuned again (in fp32 all of them; in int8 about a third: each convolution carries its own calibrated scales)."""
    from tsm.tvm_export import to_tvm

    return tuple(
        to_tvm(path, path.with_name(f"{path.stem}_tuned.so"), trials=trials, log_dir=log) for path in (stream, plain)
    )


def timed_call(path: Path, frame_shape: tuple[int, ...]) -> Callable[[], object]:
    """One streamed frame of ``path`` (``tsm.quantize.one_call``); a TVM library without buffers is called through
    its VM, as ``TvmStreamSession`` does, since its ``main`` returns the logits alone, not the tuple the session
    unpacks."""
    if path.suffix != ".so" or json.loads(read_file_metadata(path)[BUFFERS_KEY]):
        return one_call(path, frame_shape)
    import tvm

    vm, frame = load_library(path), np.random.default_rng(0).standard_normal(frame_shape, np.float32)
    return lambda: vm["main"](tvm.runtime.tensor(frame)).numpy()


def frame_top1(step: Callable[[np.ndarray], object], reset: Callable[[], None], clips: list[np.ndarray]) -> np.ndarray:
    """Top-1 class of every frame of ``clips`` (``(T, 3, H, W)`` each), streamed by ``step`` from a ``reset``."""
    classes = []
    for clip in clips:
        reset()
        classes += [int(np.asarray(step(frame[None])).argmax()) for frame in clip]
    return np.asarray(classes)


def torch_top1(model: Recognizer, clips: list[np.ndarray]) -> np.ndarray:
    """PyTorch's per-frame top-1: the model's ``StreamingTSM``, eager, fp32."""
    stream = StreamingTSM.from_model(model)
    with torch.inference_mode():
        return frame_top1(lambda frame: stream.step(torch.from_numpy(frame)), stream.reset, clips)


def agreement(path: Path, clips: list[np.ndarray], expected: np.ndarray) -> float:
    """Share of the frames of ``clips`` whose top-1 in ``path``'s runtime is ``expected`` (:func:`torch_top1`)."""
    session = open_stream(path)
    return float(np.mean(frame_top1(session.step, session.reset, clips) == expected))


def page_round(
    files: tuple[Path, Path], model: Recognizer, camera: Path, size: int, frames: int, plain_first: bool = False
) -> dict:
    """One page run of the stream file and one of the plain 2D file ``files`` in onnxruntime-web (headless Chromium,
    ``experiments.latency.browser``), ``frames`` frames each after the warm-up: their ms per frame, and for each
    ``size``-pixel frame the stream's page read from ``camera``, whether its top-1 is PyTorch's."""
    out: dict[str, list] = {}
    runs = list(zip(("stream", "plain"), files, strict=True))
    for kind, path in runs[::-1] if plain_first else runs:
        page = browser_frames(path, camera, frames + WARMUP)
        out[kind] = [frame["latency_ms"] for frame in page[WARMUP:]]
        if kind == "stream":
            inputs = np.asarray([frame["input"] for frame in page], np.float32).reshape(-1, 3, size, size)
            out["same"] = list(torch_top1(model, [inputs]) == [int(np.argmax(frame["logits"])) for frame in page])
    return out
