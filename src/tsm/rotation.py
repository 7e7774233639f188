"""A decoded frame turned upright, as its stream's display matrix says (a phone's portrait video), with numpy alone."""

from __future__ import annotations

import numpy as np


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """``rgb`` ``(H, W, 3)`` turned by ``rotation`` (PyAV's ``VideoFrame.rotation``, degrees counterclockwise), as
    players and FFmpeg's frame extraction show the video."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
