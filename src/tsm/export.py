"""Export a recognizer to ONNX, whole clips or frame by frame, and check the file in onnxruntime.

clip: input ``clip`` ``(B, T, 3, H, W)``, output ``logits`` ``(B, K)``.
stream: the ``StreamingTSM`` of a causal model: inputs ``frame`` ``(B, 3, H, W)`` and
``buffer_00``, ... (one per shift, zeros at the start of a stream), outputs ``logits`` and
``buffer_00_out``, ...; the metadata key ``tsm_buffers`` lists the buffers' names and shapes.
Both: the metadata key ``tsm_info`` (JSON) describes how to feed the file: ``class_names``,
``num_segments``, ``input_size``, ``scale_size``, ``mean``, ``std``, ``backbone``, ``shift``.

The TorchScript exporter is used: it keeps the batch dynamic through the shift's reshapes. The
dynamo exporter also gives a correct graph, but needs an export batch of 2 or more, takes ~15x
longer and cannot go below opset 18. Shift code that reads the batch size into Python (``len(x)``,
``int(x.shape[0])``) is traced to constants; the verification runs another batch size and other
values than the export example's, so such a graph is rejected.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from tsm.benchmark import median_ms
from tsm.files import atomic_open
from tsm.metadata import BUFFERS_KEY, INFO_KEY, MODE_KEY
from tsm.models.factory import for_deployment
from tsm.models.patch import TemporalPool
from tsm.models.recognizer import INFO_DEFAULTS, Recognizer
from tsm.shift import TemporalShift
from tsm.streaming.model import StreamingTSM
from tsm.streaming.runtime import buffer_zeros, ort_session

MODES = ("clip", "stream")
BATCH = "batch"
VERIFY_BATCH = 2  # differs from the export example's batch of 1


class ExportVerificationError(RuntimeError):
    """The ONNX file does not compute what the PyTorch model computes."""


@contextmanager
def removed_if_wrong(path: Path) -> Iterator[None]:
    """Remove the exported file at ``path`` when its check raises :class:`ExportVerificationError`: it does not
    compute what the model does, and is not left to be deployed."""
    try:
        yield
    except ExportVerificationError:
        path.unlink(missing_ok=True)
        raise


def to_onnx(
    model: Recognizer,
    path: str | Path,
    mode: Literal["clip", "stream"] = "clip",
    input_size: int | tuple[int, int] | None = None,
    num_frames: int | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
) -> Path:
    """Export ``model`` to ``path``, verify it in onnxruntime (raises on mismatch) and print size and latency.

    ``input_size``: the frame side (or ``(height, width)``); default the model's ``info["input_size"]``.
    ``num_frames``: frames per clip in clip mode (default: the model's ``num_segments``; another
    value re-targets the shifts, which the per-frame weights allow); frames streamed by the
    verification in stream mode (default 8).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = Path(path)
    model, height, width, info = deployed(model, path, input_size)
    generator = torch.Generator().manual_seed(0)
    if mode == "clip":
        num_frames = num_frames or model.num_segments
        reference: Recognizer | StreamingTSM = _with_frames(model, num_frames)
        clip = torch.randn(1, num_frames, 3, height, width, generator=generator)
        _export(reference, (clip,), path, ["clip"], ["logits"], opset, {MODE_KEY: "clip", INFO_KEY: info})
    else:
        reference = StreamingTSM.from_model(model)
        _export_stream(reference, path, torch.randn(1, 3, height, width, generator=generator), opset, info)
    with removed_if_wrong(path):
        report = verify_onnx(reference, path, num_frames=num_frames or 8, tolerance=tolerance)
    print(
        f"{path}: {mode} mode, {report['size_mb']:.2f} MB, onnxruntime {report['ort_ms']:.2f} ms "
        f"(batch 1, median), max relative error {report['max_rel_error']:.1e}"
    )
    return path


def deployed(
    model: Recognizer, path: Path, input_size: int | tuple[int, int] | None
) -> tuple[Recognizer, int, int, str]:
    """What every export starts from: the deployment copy of ``model``, the frame's height and width
    (``input_size``: a side or ``[height, width]`` in pixels > 0, None for the model's own) and the file's
    ``tsm_info`` as JSON; ``path``'s folder is made."""
    if input_size is None:
        input_size = getattr(model, "info", {}).get("input_size", INFO_DEFAULTS["input_size"])
    sides = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(sides) != 2 or not all(type(n) is int and n > 0 for n in sides):
        raise ValueError(f"input_size must be null, a side or [height, width], in pixels > 0; got {input_size!r}")
    height, width = sides
    path.parent.mkdir(parents=True, exist_ok=True)
    return for_deployment(model), height, width, json.dumps(file_info(model, height, width))


def file_info(model: nn.Module, height: int, width: int) -> dict:
    """The ``tsm_info`` of an export of ``model`` at ``height`` x ``width``: the model's ``info`` (defaults
    where it has none: ImageNet normalisation, class indices as names), with the input size exported and
    the scale size kept in proportion to it."""
    info = {**INFO_DEFAULTS, **getattr(model, "info", {})}
    info.setdefault("class_names", [str(i) for i in range(model.num_classes)])
    info.setdefault("num_segments", model.num_segments)
    side = min(height, width)
    info["scale_size"] = round(info["scale_size"] * side / info["input_size"])
    info["input_size"] = side if height == width else [height, width]
    return info


def _with_frames(model: Recognizer, num_frames: int) -> Recognizer:
    """``model`` (modified in place) reading clips of ``num_frames`` frames."""
    if num_frames == model.num_segments:
        return model
    if any(isinstance(m, TemporalPool) for m in model.modules()):
        raise ValueError("a model with temporal pooling exports with its own num_segments only")
    model.num_segments = model.frames_out = num_frames
    for module in model.modules():
        if isinstance(module, TemporalShift):
            module.num_segments = num_frames
    return model


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    opset: int,
    metadata: dict[str, str],
) -> None:
    with torch.no_grad():
        shapes = [tuple(out.shape) for out in _as_tuple(module(*args))]
    # No grad: autograd-only code paths (custom autograd Functions) stay out of the trace.
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks in the model read sizes into Python; the verification catches any that matter.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        traced = io.BytesIO()  # the file itself is written once, whole, below
        torch.onnx.export(
            module,
            args,
            traced,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: BATCH} for name in inputs + outputs},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load_model_from_string(traced.getvalue())
    for value, shape in zip(proto.graph.output, shapes, strict=True):
        # The tracer names sizes it derived from reshapes; all but the batch are fixed by the weights.
        for dim, size in zip(value.type.tensor_type.shape.dim[1:], shape[1:], strict=True):
            dim.dim_value = size
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_open(path) as file:
        onnx.save(proto, file)


def _as_tuple(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def _export_stream(stream: StreamingTSM, path: Path, frame: torch.Tensor, opset: int, info: str) -> None:
    generator = torch.Generator().manual_seed(1)
    shapes = stream.buffer_shapes(frame.shape)
    buffers = tuple(torch.randn(shape, generator=generator) for shape in shapes)
    names = stream.buffer_names
    spec = [{"name": name, "shape": [BATCH, *shape[1:]]} for name, shape in zip(names, shapes, strict=True)]
    outputs = ["logits", *(f"{name}_out" for name in names)]
    metadata = {MODE_KEY: "stream", BUFFERS_KEY: json.dumps(spec), INFO_KEY: info}
    _export(stream, (frame, *buffers), path, ["frame", *names], outputs, opset, metadata)


def verify_onnx(
    reference: Recognizer | StreamingTSM, path: str | Path, num_frames: int = 8, tolerance: float = 1e-4, runs: int = 10
) -> dict[str, float]:
    """Compare the ONNX file with ``reference`` on a fresh random batch of 2; raise beyond ``tolerance``.

    ``reference`` is the exported module: a ``Recognizer`` (clip files) or a ``StreamingTSM``
    (stream files, fed ``num_frames`` consecutive frames, buffers carried from one to the next).
    The relative error is max |onnx - torch| / max |torch| per output. Returns it with the file
    size in MB and the median onnxruntime latency in ms over ``runs`` runs at batch 1.
    """
    path = Path(path)
    session = ort_session(path)
    metadata = session.get_modelmeta().custom_metadata_map
    mode = metadata.get(MODE_KEY)
    generator = torch.Generator().manual_seed(2)
    shape = session.get_inputs()[0].shape[1:]
    inputs = torch.randn(VERIFY_BATCH, *shape, generator=generator)
    if mode == "clip":
        with torch.no_grad():
            expected = [reference(inputs).numpy()]
        got = [_run(session, {"clip": inputs.numpy()})[0]]
        timed = {"clip": inputs[:1].numpy()}
    elif mode == "stream":
        frames = torch.randn(num_frames, VERIFY_BATCH, *shape, generator=generator)
        reference.reset()
        expected = [reference.step(frame).numpy() for frame in frames]
        buffers = buffer_zeros(metadata, VERIFY_BATCH)
        got = []
        for frame in frames:
            logits, *new_buffers = _run(session, {"frame": frame.numpy(), **buffers})
            got.append(logits)
            buffers = dict(zip(buffers, new_buffers, strict=True))
        timed = {"frame": frames[0, :1].numpy(), **buffer_zeros(metadata, 1)}
    else:
        raise ValueError(f"{path} has no tsm_mode 'clip' or 'stream' in its metadata (found {mode!r})")
    error = max(relative_error(g, e) for g, e in zip(got, expected, strict=True))
    if not error <= tolerance:
        raise ExportVerificationError(
            f"{path}: onnxruntime differs from PyTorch by a relative error of {error:.2e} > {tolerance:.0e}"
        )
    return {"max_rel_error": error, "size_mb": path.stat().st_size / 2**20, "ort_ms": _latency(session, timed, runs)}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|: how far an exported file's outputs are from PyTorch's."""
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def _run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(None, feed)
    except Exception as error:  # onnxruntime's errors share no base class but Exception
        raise ExportVerificationError(
            f"onnxruntime failed at batch {VERIFY_BATCH} (exported at batch 1): {error}"
        ) from error


def _latency(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    return median_ms(lambda: session.run(None, feed), repeats=runs, warmup=1)
