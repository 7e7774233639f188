"""Run a stream-mode ONNX file frame by frame in onnxruntime: the runtime side of ``mode="stream"``.

The shift buffers stay onnxruntime values bound to the session (IO binding): each step writes the
new buffers into a second set and the two sets swap roles, so the caller handles frames and logits
only, and no buffer is allocated or passed through Python per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from tsm.export import buffer_zeros, ort_session


class OnnxStreamSession:
    """``step(frame)`` with ``frame`` ``(batch, 3, H, W)`` float32 returns that frame's logits
    ``(batch, num_classes)``; ``reset()`` starts a new stream (all buffers zero)."""

    def __init__(self, path: str | Path, batch: int = 1) -> None:
        self.session = ort_session(path)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if metadata.get("tsm_mode") != "stream":
            raise ValueError(f"{path} is not a stream-mode export (tsm_mode={metadata.get('tsm_mode')!r})")
        self.batch = batch
        frame_input, *buffer_inputs = self.session.get_inputs()
        logits_output, *buffer_outputs = self.session.get_outputs()
        zeros = buffer_zeros(metadata, batch)
        self._shapes = [zeros[b.name].shape for b in buffer_inputs]
        self._frame = ort.OrtValue.ortvalue_from_numpy(np.zeros([batch, *frame_input.shape[1:]], np.float32))
        self._logits = ort.OrtValue.ortvalue_from_numpy(np.zeros([batch, logits_output.shape[1]], np.float32))
        self._sets = [self._zeros(), self._zeros()]  # buffers read by the next step, and written by it
        self._bindings = []
        for source, target in ((0, 1), (1, 0)):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(frame_input.name, self._frame)
            binding.bind_ortvalue_output(logits_output.name, self._logits)
            for value, node in zip(self._sets[source], buffer_inputs, strict=True):
                binding.bind_ortvalue_input(node.name, value)
            for value, node in zip(self._sets[target], buffer_outputs, strict=True):
                binding.bind_ortvalue_output(node.name, value)
            self._bindings.append(binding)
        self._turn = 0

    def _zeros(self) -> list[ort.OrtValue]:
        return [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)) for shape in self._shapes]

    def reset(self) -> None:
        for value, shape in zip(self._sets[self._turn], self._shapes, strict=True):
            value.update_inplace(np.zeros(shape, np.float32))

    def step(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if frame.shape != tuple(self._frame.shape()):
            raise ValueError(f"frame of shape {frame.shape}, expected {tuple(self._frame.shape())}")
        self._frame.update_inplace(frame)
        self.session.run_with_iobinding(self._bindings[self._turn])
        self._turn = 1 - self._turn  # this step's outputs are the next step's inputs
        return self._logits.numpy()
