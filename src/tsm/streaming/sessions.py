"""``open_stream(path)``: one runner for every stream-mode file this project exports, chosen by its suffix.

``.onnx`` runs in onnxruntime (:class:`~tsm.streaming.runtime.OnnxStreamSession`), ``.tflite`` in LiteRT
(:class:`~tsm.streaming.litert.LiteRTStreamSession`, the ``edge`` extra). Each session has ``step(frame)``
(a ``(1, 3, H, W)`` float32 frame in, its logits out), ``reset()``, ``info`` and ``precision``, and none
imports PyTorch or timm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RUNTIMES = {".onnx": "onnxruntime", ".tflite": "LiteRT (ai-edge-litert)"}


def open_stream(path: str | Path) -> Any:
    """A stream session over the file at ``path``, by its suffix (see :data:`RUNTIMES`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".onnx":
        from tsm.streaming.runtime import OnnxStreamSession

        return OnnxStreamSession(path)
    if path.suffix == ".tflite":
        from tsm.streaming.litert import LiteRTStreamSession

        return LiteRTStreamSession(path)
    known = ", ".join(f"{suffix} ({runtime})" for suffix, runtime in RUNTIMES.items())
    raise ValueError(f"{path}: no stream runtime for {path.suffix or 'a file without a suffix'}; known: {known}")
