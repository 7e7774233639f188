"""Run a stream-mode LiteRT (TFLite) file frame by frame: the runtime side of ``format=tflite``.

Needs numpy and ``ai-edge-litert`` only (``pip install -r requirements-edge.txt``; no PyTorch, no timm), so a
phone-class Linux device or a Raspberry Pi can run it. The file describes itself as the ONNX export does: its flatbuffer
metadata holds ``tsm_mode``, ``tsm_info``, ``tsm_buffers`` and ``tsm_precision`` (UTF-8 JSON), and its one
signature takes ``frame`` and ``buffer_00``, ``buffer_01``, ... and returns ``logits`` and ``buffer_00_out``, ....
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from tsm.errors import DataError
from tsm.metadata import PRECISION_KEY, buffer_shapes, check_info, check_stream_mode, read_info
from tsm.streaming.frames import stream_frame

TFLITE_IDENTIFIER = b"TFL3"  # bytes 4-8 of every TFLite flatbuffer
SIGNATURE = "serving_default"


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The ``tsm_*`` metadata entries of a TFLite file (the flatbuffer's ``metadata`` list; other entries, such
    as the converter's own, are left out). A file that is not a TFLite flatbuffer is a :class:`DataError`."""
    from ai_edge_litert import schema_py_generated as schema

    content = Path(path).read_bytes()
    if content[4:8] != TFLITE_IDENTIFIER:
        raise DataError(path, "not a LiteRT (TFLite) file: no TFL3 identifier")
    try:
        model = schema.Model.GetRootAs(content, 0)
        entries = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            name = (entry.Name() or b"").decode("utf-8")
            if name.startswith("tsm_"):
                entries[name] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8")
    except (IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError, struct.error) as err:
        # a damaged flatbuffer; a truncated one reads past its end (struct.error)
        raise DataError(path, f"its TFLite metadata cannot be read (truncated or damaged?): {err}") from err
    return entries


class LiteRTStreamSession:
    """``step(frame)`` with ``frame`` ``(1, 3, H, W)`` float32 returns that frame's logits ``(1, num_classes)``;
    ``reset()`` starts a new stream; ``info`` and ``precision`` as :class:`~tsm.streaming.runtime.OnnxStreamSession`'s.
    LiteRT files have a fixed batch of 1 (``frame_shape``). ``threads``: the interpreter's CPU threads (XNNPACK).

    A full-integer file (``precision`` int8) quantizes the frame and dequantizes the logits itself
    (:func:`tsm.litert_graph.integer_carry`); its buffers are int8 and stay so from step to step, each in the
    quantization of the activation it is cut from, and a reset fills them with their zero point, the int8 of 0.
    Where a file's tensor is integer but the runner's is not (or the scales of a buffer's input and output
    differ), the runner quantizes, dequantizes or requantizes with the file's own scales and zero points."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        metadata = read_tflite_metadata(path)
        check_stream_mode(metadata, path)
        self.info = read_info(metadata, path)
        self.precision = metadata.get(PRECISION_KEY, "fp32")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise DataError(path, f"LiteRT cannot load it: {err}") from err
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        if "frame" not in inputs or "logits" not in outputs:
            raise DataError(path, f"signature {SIGNATURE!r} lacks the input 'frame' or the output 'logits'")
        self.buffer_names = sorted(name for name in inputs if name != "frame")
        shape = lambda details, name: [int(size) for size in details.get(name, {"shape": [0]})["shape"]]  # noqa: E731
        nodes = [(name, shape(inputs, name)) for name in self.buffer_names]
        out_nodes = [(f"{name}_out", shape(outputs, f"{name}_out")) for name in self.buffer_names]
        self._shapes = [[1, *shape] for shape in buffer_shapes(metadata, nodes, out_nodes, path)]
        self.frame_shape = tuple(int(size) for size in inputs["frame"]["shape"])
        check_info(self.info, path, num_classes=shape(outputs, "logits")[-1], frame=self.frame_shape[-2:])
        self._inputs = {name: TensorType.of(details) for name, details in inputs.items()}
        self._outputs = {name: TensorType.of(details) for name, details in outputs.items()}
        self.reset()

    def reset(self) -> None:
        self._buffers = {
            name: self._inputs[name].encode(np.zeros(shape, np.float32))
            for name, shape in zip(self.buffer_names, self._shapes, strict=True)
        }

    def buffers(self) -> dict[str, np.ndarray]:
        """The buffers the next ``step`` reads, as float32 copies."""
        return {name: self._inputs[name].decode(value) for name, value in self._buffers.items()}

    def step(self, frame: np.ndarray) -> np.ndarray:
        frame = stream_frame(frame, self.frame_shape, self.info)
        out: dict[str, Any] = self.runner(frame=self._inputs["frame"].encode(frame), **self._buffers)
        self._buffers = {
            name: self._inputs[name].carry(out[f"{name}_out"], self._outputs[f"{name}_out"])
            for name in self.buffer_names
        }
        return self._outputs["logits"].decode(out["logits"])


class TensorType:
    """A signature tensor's element type and, for integer tensors, its scale and zero point."""

    def __init__(self, dtype: type, scale: float = 0.0, zero_point: int = 0) -> None:
        self.dtype, self.scale, self.zero_point = np.dtype(dtype), float(scale), int(zero_point)

    @classmethod
    def of(cls, details: dict[str, Any]) -> TensorType:
        return cls(details["dtype"], *details["quantization"])

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.scale > 0

    def encode(self, values: np.ndarray) -> np.ndarray:
        """float32 values as this tensor takes them."""
        if not self.quantized:
            return values.astype(self.dtype, copy=False)
        limits = np.iinfo(self.dtype)
        q = np.round(values / self.scale) + self.zero_point
        return np.clip(q, limits.min, limits.max).astype(self.dtype)

    def decode(self, values: np.ndarray) -> np.ndarray:
        """This tensor's values as float32 (a copy)."""
        if not self.quantized:
            return values.astype(np.float32, copy=True)
        return ((values.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)

    def carry(self, values: np.ndarray, source: TensorType) -> np.ndarray:
        """``values`` of tensor type ``source`` as this tensor takes them: as they are where the types agree."""
        same = (source.dtype, source.scale, source.zero_point) == (self.dtype, self.scale, self.zero_point)
        return values if same else self.encode(source.decode(values))
