"""Run a stream-mode ONNX file frame by frame in onnxruntime: the runtime side of ``mode="stream"``.

Needs numpy and onnxruntime only (no PyTorch, no timm), so a device without PyTorch can run it. The
file describes itself: its metadata has the buffers (``tsm_buffers``) and what feeding it needs
(``tsm_info``: class names, input size, scale size, mean, std), read into :attr:`OnnxStreamSession.info`.

The shift buffers stay onnxruntime values bound to the session (IO binding): each step writes the
new buffers into a second set and the two sets swap roles, so the caller handles frames and logits
only, and no buffer is allocated or passed through Python per frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tsm.errors import DataError
from tsm.metadata import (
    BUFFER_TYPES,
    BUFFERS_KEY,
    PRECISION_KEY,
    Node,
    buffer_fills,
    buffer_shapes,
    check_info,
    check_stream_mode,
    fixed_shape,
    read_info,
)
from tsm.streaming.frames import stream_frame


def ort_session(path: str | Path, spin_within_run: bool = True) -> ort.InferenceSession:
    """A CPU onnxruntime session whose threads spin within a run and sleep once it returns. Threads that sleep
    between nodes too (``spin_within_run=False``) wake again for each of a frame's ~100 small nodes: a
    TSM-MobileNetV2 x0.5 frame took 1.25-1.4x as long (experiments/latency/spinning.md). Threads left spinning
    after a run would take the cores from whatever runs next (the camera, PyTorch in a benchmark)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_within_run else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's errors share no base class but Exception
        raise DataError(path, f"onnxruntime cannot load it: {error}") from error


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (reads the graph, not the weights; needs ``onnx``)."""
    import onnx  # not needed to run a file: a device with onnxruntime alone can still import this module
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise DataError(path, f"not an ONNX file: {err}") from err
    return {entry.key: entry.value for entry in model.metadata_props}


def buffer_zeros(metadata: Mapping[str, str], batch: int) -> dict[str, np.ndarray]:
    """The reset state of a stream file's buffers for ``batch`` streams, from its ``tsm_buffers``: float32 zeros,
    or an int8 file's uint8 zero points."""
    spec, fills = json.loads(metadata[BUFFERS_KEY]), buffer_fills(metadata, "the stream file")
    return {
        b["name"]: np.full([batch, *b["shape"][1:]], fill, dtype) for b, (dtype, fill) in zip(spec, fills, strict=True)
    }


def stream_graph(session: ort.InferenceSession, path: str | Path) -> tuple[dict[str, str], list[Node], list[Node]]:
    """A session's metadata and the ``(name, shape)`` of its inputs and of its outputs, each at least one (a
    frame in, logits out). Names or metadata that are not UTF-8, which onnxruntime loads and Python cannot
    read, and a graph without inputs or outputs are a :class:`DataError`."""
    try:
        metadata = session.get_modelmeta().custom_metadata_map
        inputs, outputs = (
            [(node.name, node.shape) for node in nodes] for nodes in (session.get_inputs(), session.get_outputs())
        )
    except UnicodeDecodeError as err:
        raise DataError(path, f"names or metadata that are not UTF-8 text: {err}") from err
    if not inputs or not outputs:
        raise DataError(path, f"the graph has {len(inputs)} inputs and {len(outputs)} outputs")
    return metadata, inputs, outputs


class OnnxStreamSession:
    """``step(frame)`` with ``frame`` ``(batch, 3, H, W)`` float32 returns that frame's logits
    ``(batch, num_classes)``; ``reset()`` starts a new stream (buffers at their reset state: zero, or an int8
    file's uint8 zero point); ``info`` says how to
    feed it (``class_names``, ``input_size``, ``scale_size``, ``mean``, ``std``); ``precision`` is
    the file's (fp32, fp16 or int8, see :mod:`tsm.quantize`). ``spin_within_run``: see :func:`ort_session`."""

    def __init__(self, path: str | Path, batch: int = 1, spin_within_run: bool = True) -> None:
        self.session = ort_session(path, spin_within_run)
        metadata, (frame_input, *buffer_inputs), (logits_output, *buffer_outputs) = stream_graph(self.session, path)
        check_stream_mode(metadata, path)
        self.info = read_info(metadata, path)
        self.precision = metadata.get(PRECISION_KEY, "fp32")  # fp16 and int8 files take float32 frames too
        self.batch = batch
        self.buffer_names = [name for name, _ in buffer_inputs]
        self._shapes = [[batch, *shape] for shape in buffer_shapes(metadata, buffer_inputs, buffer_outputs, path)]
        self._fills = buffer_fills(metadata, path)
        types = [node.type for node in self.session.get_inputs()[1:]]
        if types != [BUFFER_TYPES[dtype] for dtype, _ in self._fills]:
            raise DataError(path, f"metadata {BUFFERS_KEY}'s dtypes do not match the graph's buffer inputs {types}")
        frame, logits = ([batch, *fixed_shape(node, path)] for node in (frame_input, logits_output))
        check_info(self.info, path, num_classes=logits[-1], frame=frame[-2:])
        self._frame = ort.OrtValue.ortvalue_from_numpy(np.zeros(frame, np.float32))
        self._logits = ort.OrtValue.ortvalue_from_numpy(np.zeros(logits, np.float32))
        self._sets = [self._zeros(), self._zeros()]  # buffers read by the next step, and written by it
        self._bindings = []
        for source, target in ((0, 1), (1, 0)):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(frame_input[0], self._frame)
            binding.bind_ortvalue_output(logits_output[0], self._logits)
            for value, (name, _) in zip(self._sets[source], buffer_inputs, strict=True):
                binding.bind_ortvalue_input(name, value)
            for value, (name, _) in zip(self._sets[target], buffer_outputs, strict=True):
                binding.bind_ortvalue_output(name, value)
            self._bindings.append(binding)
        self._turn = 0

    def _reset_state(self) -> list[np.ndarray]:
        return [np.full(shape, fill, dtype) for shape, (dtype, fill) in zip(self._shapes, self._fills, strict=True)]

    def _zeros(self) -> list[ort.OrtValue]:
        return [ort.OrtValue.ortvalue_from_numpy(state) for state in self._reset_state()]

    def reset(self) -> None:
        for value, state in zip(self._sets[self._turn], self._reset_state(), strict=True):
            value.update_inplace(state)

    def buffers(self) -> dict[str, np.ndarray]:
        """A copy of the buffers the next ``step`` reads (int8 calibration sees what a stream holds)."""
        return {
            name: value.numpy().copy() for name, value in zip(self.buffer_names, self._sets[self._turn], strict=True)
        }

    def step(self, frame: np.ndarray) -> np.ndarray:
        self._frame.update_inplace(stream_frame(frame, tuple(self._frame.shape()), self.info))
        self.session.run_with_iobinding(self._bindings[self._turn])
        self._turn = 1 - self._turn  # this step's outputs are the next step's inputs
        return self._logits.numpy().copy()  # the bound output is overwritten by the next step
