"""The frame every stream runtime's ``step`` takes: float32 ``(batch, 3, H, W)``, normalised as the file's info says."""

from __future__ import annotations

import numpy as np


def stream_frame(frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``frame`` as the contiguous float32 array of ``shape`` a session feeds its file. A frame of integers (pixels,
    not normalised: the file would compute on values a hundred times too large, without a word) or of another
    shape is refused."""
    frame = np.asarray(frame)
    if not np.issubdtype(frame.dtype, np.floating):
        raise ValueError(
            f"frame of dtype {frame.dtype}: step() takes a normalised float frame, not pixels "
            "(tsm.streaming.app.preprocess makes one with the file's info: input size, mean and std)"
        )
    frame = np.ascontiguousarray(frame, dtype=np.float32)
    if frame.shape != tuple(shape):
        raise ValueError(f"frame of shape {frame.shape}, expected {tuple(shape)}")
    return frame
