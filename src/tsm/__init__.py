"""TSM: efficient video recognition with the Temporal Shift Module.

The public API, imported on first use (``import tsm`` itself loads nothing heavy)::

    from tsm import build_recognizer, load_recognizer, temporal_shift, StreamingTSM, to_onnx, open_stream
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_API = {
    "build_recognizer": "tsm.models.factory",
    "load_recognizer": "tsm.models.checkpoints",
    "load_official_tsm": "tsm.models.official_weights",
    "temporal_shift": "tsm.shift",
    "TemporalShift": "tsm.shift",
    "StreamingTSM": "tsm.streaming.model",
    "to_onnx": "tsm.export",
    "OnnxStreamSession": "tsm.streaming.runtime",
    "open_stream": "tsm.streaming.sessions",
    "to_tflite": "tsm.litert_export",
    "I3D": "tsm.models.i3d",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'tsm' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return __all__
