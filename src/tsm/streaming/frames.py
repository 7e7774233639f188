"""The frame every stream runtime's ``step`` takes: float32 ``(batch, 3, H, W)``, normalised as the file's info says."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# A normalised frame's values lie within the normalised range of pixels in [0, 1]; values this many times past it
# are pixels in [0, 255], not normalised (the margin lets noise frames of benchmarks through).
PIXEL_MARGIN = 10
NOT_PIXELS = (
    "step() takes a normalised float frame, not pixels (tsm.streaming.app.preprocess makes one with the file's info: "
    "input size, mean and std)"
)


def stream_frame(frame: np.ndarray, shape: tuple[int, ...], info: Mapping[str, Any]) -> np.ndarray:
    """``frame`` as the contiguous float32 array of ``shape`` a session feeds its file. A frame of integers or of
    float pixels in [0, 255] (not normalised: the file would compute on values a hundred times too large, without
    a word), or of another shape, is refused."""
    frame = np.asarray(frame)
    if not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(f"frame of dtype {frame.dtype}: {NOT_PIXELS}")
    frame = np.ascontiguousarray(frame, dtype=np.float32)
    if frame.shape != tuple(shape):
        raise ValueError(f"frame of shape {frame.shape}, expected {tuple(shape)}")
    bound = max(max(abs(-m / s), abs((1 - m) / s)) for m, s in zip(info["mean"], info["std"], strict=True))
    largest = max(float(frame.max()), -float(frame.min()))
    if largest > PIXEL_MARGIN * bound:
        raise ValueError(
            f"frame values up to {largest:.0f}, where normalised pixels stay within {bound:.2f}: {NOT_PIXELS}"
        )
    return frame
