"""Run a stream-mode TVM library frame by frame: the runtime side of ``format=tvm``.

Needs numpy and Apache TVM's runtime only (no PyTorch, no timm), on the board the library was compiled for
(this CPU, a Raspberry Pi 4's Cortex-A72 or a Jetson Nano's Cortex-A57). The library describes itself: its
VM function ``tsm_metadata`` returns the ONNX stream file's ``tsm_*`` metadata (JSON), and ``main`` takes
``frame`` and the buffers in the order of ``tsm_buffers`` and returns the logits and the new buffers.

A library is native code, and loading it runs code: unlike an ONNX or a LiteRT file, it must come from a
source you trust (your own ``src/export.py format=tvm``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tsm.errors import DataError
from tsm.metadata import (
    BUFFERS_KEY,
    PRECISION_KEY,
    buffer_fills,
    check_stream_mode,
    metadata_json,
    read_info,
)
from tsm.streaming.elf import check_shared_library
from tsm.streaming.frames import stream_frame

METADATA_FUNCTION = "tsm_metadata"


def load_library(path: str | Path):
    """The Relax VM of a TVM library file, on the CPU (its ELF header checked first: :mod:`tsm.streaming.elf`)."""
    import tvm
    from tvm import relax

    check_shared_library(path)
    try:
        return relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    except Exception as err:  # TVM's loader raises its own error types, which share no base but Exception
        raise DataError(path, f"TVM cannot load it: {err}") from err


def read_tvm_metadata(vm, path: str | Path) -> dict[str, str]:
    """The ``tsm_*`` metadata a library carries (its ``tsm_metadata`` function)."""
    try:
        metadata = json.loads(str(vm[METADATA_FUNCTION]()))
    except (AttributeError, KeyError, ValueError, RuntimeError) as err:
        raise DataError(path, f"no {METADATA_FUNCTION} function with this project's metadata: {err}") from err
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise DataError(path, f"{METADATA_FUNCTION} returns no JSON object of strings")
    return metadata


class TvmStreamSession:
    """``step(frame)`` with ``frame`` ``(1, 3, H, W)`` float32 returns that frame's logits ``(1, num_classes)``;
    ``reset()`` (buffers at their reset state: zero, or an int8 library's uint8 zero point), ``buffers()``, ``info``
    and ``precision`` as the other stream sessions'. Batch 1 (``frame_shape``)."""

    def __init__(self, path: str | Path) -> None:
        import tvm

        self._tensor = tvm.runtime.tensor
        self.vm = load_library(path)
        metadata = read_tvm_metadata(self.vm, path)
        check_stream_mode(metadata, path)
        self.info = read_info(metadata, path)
        self.precision = metadata.get(PRECISION_KEY, "fp32")
        try:
            spec = [
                (b["name"], [1, *(int(size) for size in b["shape"][1:])])
                for b in metadata_json(metadata, BUFFERS_KEY, path)
            ]
        except (TypeError, KeyError, ValueError) as err:
            raise DataError(path, f"metadata {BUFFERS_KEY} is not a list of {{name, shape}} objects") from err
        self.buffer_names = [name for name, _ in spec]
        self._shapes = [shape for _, shape in spec]
        self._fills = buffer_fills(metadata, path)
        side = self.info["input_size"]
        self.frame_shape = (1, 3, *((side, side) if isinstance(side, int) else side))
        self.reset()

    def reset(self) -> None:
        states = zip(self._shapes, self._fills, strict=True)
        self._buffers = [self._tensor(np.full(shape, fill, dtype)) for shape, (dtype, fill) in states]

    def buffers(self) -> dict[str, np.ndarray]:
        """The buffers the next ``step`` reads, as numpy copies."""
        return {name: value.numpy() for name, value in zip(self.buffer_names, self._buffers, strict=True)}

    def step(self, frame: np.ndarray) -> np.ndarray:
        logits, *self._buffers = self.vm["main"](
            self._tensor(stream_frame(frame, self.frame_shape, self.info)), *self._buffers
        )
        return logits.numpy()
