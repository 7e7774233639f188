"""Run a network on clips of another length than it was built for (multigrid's shorter clips)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def clip_length(net: nn.Module, frames: int) -> Iterator[None]:
    """Inside the block, ``net`` (a recognizer or I3D, ``net.num_segments`` frames per clip) takes clips of
    ``frames`` frames: every module holding a clip length (the recognizer, its shifts and temporal pools,
    each at its own fraction of the clip after a temporal pool) is set in proportion, and restored after."""
    built = net.num_segments
    if not isinstance(built, int) or frames == built:
        yield
        return
    holders = [m for m in net.modules() if isinstance(getattr(m, "num_segments", None), int)]
    kept = [(m, m.num_segments, getattr(m, "frames_out", None)) for m in holders]
    for module, length, out in kept:
        for name, value in (("num_segments", length), ("frames_out", out)):
            if value is None:
                continue
            if value * frames % built:
                raise ValueError(
                    f"{type(module).__name__} runs {value} of {built} frames per clip; clips of {frames} frames "
                    f"would give it {value * frames / built:g}: choose frame counts divisible by {built // value}"
                )
            setattr(module, name, value * frames // built)
    try:
        yield
    finally:
        for module, length, out in kept:
            module.num_segments = length
            if out is not None:
                module.frames_out = out
