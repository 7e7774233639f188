"""``open_stream(path)``: one runner for every stream-mode file this project exports, chosen by its suffix.

``.onnx`` runs in onnxruntime (:class:`~tsm.streaming.runtime.OnnxStreamSession`), ``.tflite`` in LiteRT
(:class:`~tsm.streaming.litert.LiteRTStreamSession`) and ``.so`` in Apache TVM
(:class:`~tsm.streaming.tvm_runtime.TvmStreamSession`; both in ``requirements-edge.txt``). Each session has
``step(frame)`` (a ``(1, 3, H, W)`` float32 frame in, its logits out), ``reset()``, ``buffers()``, ``info`` and
``precision``, and none imports PyTorch or timm. ``open_clip`` and ``read_file_metadata`` do the same for
clip-mode files and for any file's ``tsm_*`` metadata.

ONNX and LiteRT files are data: opening one runs no code it carries. A TVM ``.so`` is native code, which loading
runs: open only libraries you compiled yourself (``src/export.py format=tvm``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = {".onnx": "onnxruntime", ".tflite": "LiteRT (ai-edge-litert)", ".so": "Apache TVM (a library of format=tvm)"}


def _checked(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix not in RUNTIMES:
        known = ", ".join(f"{suffix} ({runtime})" for suffix, runtime in RUNTIMES.items())
        raise ValueError(f"{path}: no stream runtime for {path.suffix or 'a file without a suffix'}; known: {known}")
    return path


def read_file_metadata(path: str | Path) -> dict[str, str]:
    """The ``tsm_*`` metadata of an exported file (``.onnx``, ``.tflite`` or a TVM ``.so``)."""
    path = _checked(path)
    if path.suffix == ".onnx":
        from tsm.streaming.runtime import read_metadata

        return read_metadata(path)
    if path.suffix == ".so":
        from tsm.streaming.tvm_runtime import load_library, read_tvm_metadata

        return read_tvm_metadata(load_library(path), path)
    from tsm.streaming.litert import read_tflite_metadata

    return read_tflite_metadata(path)


def open_clip(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """The logits ``(1, K)`` of a clip ``(1, T, 3, H, W)`` float32, computed by a clip-mode file."""
    path = _checked(path)
    if path.suffix == ".onnx":
        from tsm.streaming.runtime import ort_session

        session = ort_session(path)
        return lambda clip: session.run(None, {"clip": clip})[0]
    if path.suffix == ".so":
        raise ValueError(f"{path}: TVM libraries of this project are stream-mode only")
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=2).get_signature_runner()
    return lambda clip: runner(clip=np.ascontiguousarray(clip, dtype=np.float32))["logits"]


def open_stream(path: str | Path) -> Any:
    """A stream session over the file at ``path``, by its suffix (see :data:`RUNTIMES`)."""
    path = _checked(path)
    if path.suffix == ".onnx":
        from tsm.streaming.runtime import OnnxStreamSession

        return OnnxStreamSession(path)
    if path.suffix == ".so":
        from tsm.streaming.tvm_runtime import TvmStreamSession

        return TvmStreamSession(path)
    from tsm.streaming.litert import LiteRTStreamSession

    return LiteRTStreamSession(path)
