"""Export a recognizer to LiteRT (TFLite) through Google's converter (``litert-torch``), and check the file.

stream: the ``StreamingTSM`` of a causal model, one signature with the ONNX stream file's names: inputs
``frame`` ``(1, 3, H, W)`` and ``buffer_00``, ... (zeros at the start of a stream), outputs ``logits`` and
``buffer_00_out``, ...; every tensor of at most 4 dimensions (the LiteRT GPU delegate's limit), batch 1.
clip: input ``clip`` ``(1, T, 3, H, W)``, output ``logits``.
Both carry the ONNX file's metadata (``tsm_mode``, ``tsm_info``, ``tsm_buffers``, ``tsm_precision``) as
flatbuffer metadata entries, so the file alone is enough to run it (:mod:`tsm.streaming.litert`).
Needs ``pip install -r requirements-edge.txt``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from tsm.export import BATCH, ExportVerificationError, deployed, relative_error, removed_if_wrong
from tsm.files import atomic_open
from tsm.litert_graph import float_clip_and_logits, integer_carry, nhwc_buffers, pack, unpack
from tsm.metadata import BUFFERS_KEY, CALIBRATION_KEY, INFO_KEY, MODE_KEY, PRECISION_KEY
from tsm.models.recognizer import Recognizer
from tsm.streaming.litert import SIGNATURE, LiteRTStreamSession, read_tflite_metadata
from tsm.streaming.model import StreamingTSM

MAX_DIMS = 4  # the LiteRT GPU delegate's limit on a tensor's dimensions


class NamedStream(nn.Module):
    """A ``StreamingTSM`` with named inputs and outputs, which the converter keeps as the signature's names."""

    def __init__(self, stream: StreamingTSM) -> None:
        super().__init__()
        self.stream = stream

    def forward(self, frame: torch.Tensor, **buffers: torch.Tensor) -> dict[str, torch.Tensor]:
        names = self.stream.buffer_names
        logits, *new = self.stream(frame, *(buffers[name] for name in names))
        return {"logits": logits, **{f"{name}_out": b for name, b in zip(names, new, strict=True)}}


class NamedClip(nn.Module):
    """A clip recognizer whose output is named ``logits``."""

    def __init__(self, model: Recognizer) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model(clip)}


def to_tflite(
    model: Recognizer,
    path: str | Path,
    mode: Literal["clip", "stream"] = "stream",
    input_size: int | tuple[int, int] | None = None,
    tolerance: float = 1e-4,
) -> Path:
    """Convert ``model`` to a LiteRT file at ``path`` (fp32) and check it against PyTorch, a stream file frame by
    frame, a clip file on a random clip (raises :class:`~tsm.export.ExportVerificationError` beyond ``tolerance``,
    relative to the largest logit). ``input_size``: the frame side or ``(height, width)``; default the model's."""
    import litert_torch

    path = Path(path)
    model, height, width, info = deployed(model, path, input_size)
    generator = torch.Generator().manual_seed(0)
    if mode == "stream":
        stream = StreamingTSM.from_model(model)
        frame = torch.randn(1, 3, height, width, generator=generator)
        shapes = stream.buffer_shapes(frame.shape)
        buffers = dict(zip(stream.buffer_names, shapes, strict=True))
        sample = {"frame": frame, **{name: torch.randn(shape, generator=generator) for name, shape in buffers.items()}}
        check_dims(sample)
        spec = [{"name": name, "shape": [BATCH, *shape[1:]]} for name, shape in buffers.items()]
        metadata = {MODE_KEY: "stream", INFO_KEY: info, PRECISION_KEY: "fp32"}
        module: nn.Module = NamedStream(stream)
    elif mode == "clip":
        sample = {"clip": torch.randn(1, model.num_segments, 3, height, width, generator=generator)}
        metadata = {MODE_KEY: "clip", INFO_KEY: info, PRECISION_KEY: "fp32"}
        module = NamedClip(model)
    else:
        raise ValueError(f"mode must be 'clip' or 'stream', got {mode!r}")
    with torch.no_grad():
        content = litert_torch.convert(module.eval(), sample_kwargs=sample).model_content()
    if mode == "stream":
        content, spec = nhwc_buffers(content, spec)
        metadata[BUFFERS_KEY] = json.dumps(spec)
    with atomic_open(path) as file:
        file.write(with_metadata(content, metadata))
    with removed_if_wrong(path):
        error = (
            verify_stream(stream, path, tolerance) if mode == "stream" else verify_clip(model, path, sample, tolerance)
        )
    print(f"{path}: {mode} mode, {path.stat().st_size / 2**20:.2f} MB, max relative error {error:.1e} (LiteRT)")
    return path


def to_tflite_int8(source: str | Path, target: str | Path, clips: Iterable[np.ndarray], description: dict) -> Path:
    """Write the full-integer version of the fp32 LiteRT file ``source`` to ``target``: int8 weights (per output
    channel) and int8 activations, min-max calibrated (Google's ``ai-edge-quantizer``, recipe ``static_wi8_ai8``)
    on ``clips`` (``(T, 3, H, W)`` float32, normalised), a stream file frame by frame with the buffers its fp32
    file carries. The frame (a clip file's clip) and the logits stay float32; a stream file's buffers are int8,
    each in the quantization of the activation it is cut from (:func:`tsm.litert_graph.integer_carry`).
    ``description`` (where the clips came from) is recorded."""
    from ai_edge_quantizer import quantizer, recipe

    from tsm.quantize import calibration_clips, calibration_feeds

    engine = quantizer.Quantizer(str(source), recipe.static_wi8_ai8())
    feeds = list(calibration_feeds(source, calibration_clips(clips)))
    result = engine.quantize(
        engine.calibrate({SIGNATURE: feeds}), enable_progress_bar=False, enable_progress_report=False
    )
    metadata = read_tflite_metadata(source) | {PRECISION_KEY: "int8", CALIBRATION_KEY: json.dumps(description)}
    content = bytes(result.quantized_model)
    content = integer_carry(content) if metadata.get(MODE_KEY) == "stream" else float_clip_and_logits(content)
    with atomic_open(target) as file:
        file.write(with_metadata(content, metadata))
    return Path(target)


def check_dims(tensors: Mapping[str, torch.Tensor]) -> None:
    """Every stream tensor has at most :data:`MAX_DIMS` dimensions (a ViT's token buffers have 3)."""
    over = {name: tuple(t.shape) for name, t in tensors.items() if t.dim() > MAX_DIMS}
    if over:
        raise ValueError(f"LiteRT's GPU delegate takes at most {MAX_DIMS} dimensions; these tensors have more: {over}")


def with_metadata(content: bytes, metadata: Mapping[str, str]) -> bytes:
    """The TFLite flatbuffer ``content`` with ``metadata`` as named metadata buffers (UTF-8), replacing entries
    of the same names."""
    from ai_edge_litert import schema_py_generated as schema

    model = unpack(content)
    model.metadata = [entry for entry in model.metadata or [] if entry.name.decode("utf-8") not in metadata]
    for key, value in metadata.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode("utf-8"), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        model.metadata.append(entry)
    return pack(model, len(content) + 4096)


def verify_clip(model: Recognizer, path: Path, sample: Mapping[str, torch.Tensor], tolerance: float) -> float:
    """The relative error of the LiteRT clip file's logits against ``model``'s on a fresh random clip."""
    from ai_edge_litert.interpreter import Interpreter

    clip = torch.randn(sample["clip"].shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(clip).numpy()
    got = Interpreter(model_path=str(path)).get_signature_runner()(clip=clip.numpy())["logits"]
    return _checked(relative_error(got, expected), path, tolerance)


def _checked(error: float, path: Path, tolerance: float) -> float:
    if not error <= tolerance:
        raise ExportVerificationError(f"{path}: LiteRT differs from PyTorch by a relative error of {error:.2e}")
    return error


def verify_stream(stream: StreamingTSM, path: Path, tolerance: float, num_frames: int = 8) -> float:
    """The largest relative error of the LiteRT file's per-frame logits against ``stream``'s over ``num_frames``
    random frames (buffers carried); raises beyond ``tolerance``."""
    session = LiteRTStreamSession(path)
    generator = torch.Generator().manual_seed(2)
    frames = torch.randn(num_frames, *session.frame_shape, generator=generator)
    stream.reset()
    error = 0.0
    for frame in frames:
        expected = stream.step(frame).numpy()
        got = session.step(frame.numpy())
        error = max(error, relative_error(got, expected))
    return _checked(error, path, tolerance)
