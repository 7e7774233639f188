"""Online (streaming) TSM: one frame in, that frame's logits out, with a cache per shift.

A causal shift only looks one frame back, so a recognizer trained offline on clips can
run on a live stream: each shift keeps the first ``fold`` channels of its input from the
previous frame and hands them to the current one. ``StreamingTSM.forward`` is functional
(``frame, *buffers -> logits, *new_buffers``) so that it exports to ONNX; ``step`` wraps it
and keeps the buffers between calls.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tsm.models.patch import TemporalPool
from tsm.models.recognizer import Recognizer
from tsm.shift import TemporalShift, shift_fold


class StreamingShift(nn.Module):
    """Causal shift for one frame: channels ``[0, fold)`` come from the previous frame's input.

    Inside a backbone the module is called with one tensor, so the cache travels through the
    ``state_in`` / ``state_out`` slots, which ``StreamingTSM.forward`` fills and empties on
    every call; between calls the module holds no tensors. ``channel_dim`` as in
    :class:`tsm.shift.TemporalShift` (-1: tokens ``(B, L, C)``; buffers are then ``(B, fold, L)``).
    """

    def __init__(self, net: nn.Module, fold_div: int, channel_dim: int = 1) -> None:
        super().__init__()
        self.net = net
        self.fold_div = fold_div
        self.channel_dim = channel_dim
        self.state_in: torch.Tensor | None = None
        self.state_out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_dim = self.channel_dim % x.dim()  # a positive axis for ONNX's Transpose
        x = x.movedim(channel_dim, 1)
        # The channels are fixed by the weights: a Python int keeps the fold static when traced.
        fold = shift_fold(int(x.shape[1]), self.fold_div, "causal")
        previous = self.state_in if self.state_in is not None else x.new_zeros(x.shape[0], fold, *x.shape[2:])
        self.state_out = x[:, :fold].clone()  # a copy: the buffer must not pin the whole activation
        return self.net(torch.cat([previous, x[:, fold:]], dim=1).movedim(1, channel_dim))

    def extra_repr(self) -> str:
        return f"fold_div={self.fold_div}" + (", tokens" if self.channel_dim == -1 else "")


class StreamingTSM(nn.Module):
    """A causal recognizer run frame by frame, with the weights of the offline model.

    ``forward(frame, *buffers)`` is pure: frames ``(B, C, H, W)`` and one buffer per shift in,
    per-frame logits ``(B, num_classes)`` and the updated buffers out (no buffers: start of a
    stream, all zeros). ``step`` keeps the buffers itself; ``reset`` starts a new stream.
    """

    def __init__(self, backbone: nn.Module, dropout: nn.Module, fc: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = dropout
        self.fc = fc
        self.shifts = [m for m in backbone.modules() if isinstance(m, StreamingShift)]
        self._state: list[torch.Tensor] | None = None

    @classmethod
    def from_model(cls, model: Recognizer) -> StreamingTSM:
        """A streaming view of ``model`` in eval mode, sharing its weights: the module tree is copied (its
        shifts become :class:`StreamingShift`), parameters and buffers are not, so training ``model``
        further changes the stream too. Its shifts must be causal."""
        for name, module in model.named_modules():
            if isinstance(module, TemporalPool):
                raise ValueError(f"cannot stream a model with temporal pooling (at {name!r})")
            if isinstance(module, TemporalShift) and module.direction != "causal":
                raise ValueError(
                    f"cannot stream a model with a {module.direction} shift (at {name!r}): "
                    "a streaming model cannot see future frames; train with model/shift=causal "
                    "(model.shift.direction=causal)"
                )
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())}  # deepcopy reuses these
        backbone = copy.deepcopy(model.backbone, memo=dict(shared))
        for name, module in list(backbone.named_modules()):
            if isinstance(module, TemporalShift):
                parent_name, _, child = name.rpartition(".")
                streaming = StreamingShift(module.net, module.fold_div, module.channel_dim)
                setattr(backbone.get_submodule(parent_name), child, streaming)
        return cls(backbone, copy.deepcopy(model.dropout), copy.deepcopy(model.fc, memo=dict(shared))).eval()

    @property
    def num_buffers(self) -> int:
        return len(self.shifts)

    @property
    def buffer_names(self) -> list[str]:
        return [f"buffer_{i:02d}" for i in range(self.num_buffers)]

    @torch.no_grad()
    def buffer_shapes(self, frame_shape: tuple[int, ...] | torch.Size) -> list[tuple[int, ...]]:
        """Shapes of the buffers for frames of shape ``(B, C, H, W)``, found by one dry run on zeros."""
        param = next(self.parameters())
        frame = torch.zeros(frame_shape, dtype=param.dtype, device=param.device)
        _, *buffers = self(frame)
        return [tuple(b.shape) for b in buffers]

    def forward(self, frame: torch.Tensor, *buffers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(logits, *new_buffers)`` for one frame; pass no buffers at the start of a stream."""
        if buffers and len(buffers) != self.num_buffers:
            raise ValueError(f"expected {self.num_buffers} buffers, got {len(buffers)}")
        for shift, buffer in zip(self.shifts, buffers or [None] * self.num_buffers, strict=True):
            shift.state_in = buffer
        try:
            logits = self.fc(self.dropout(self.backbone(frame)))
            new_buffers = [shift.state_out for shift in self.shifts]
        finally:
            for shift in self.shifts:
                shift.state_in = shift.state_out = None
        return (logits, *new_buffers)

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the next frame ``(B, C, H, W)`` of the stream."""
        logits, *self._state = self(frame, *(self._state or ()))
        return logits

    def reset(self) -> None:
        """Forget the previous frames: the next ``step`` sees zeros, as frame 0 of a clip does."""
        self._state = None


def numpy_step(stream: StreamingTSM) -> Callable[[np.ndarray], np.ndarray]:
    """``stream.step`` on numpy frames, for :func:`tsm.streaming.app.run_stream`; starts a new stream."""
    stream.eval().reset()
    param = next(stream.parameters())

    def step(frame: np.ndarray) -> np.ndarray:
        return stream.step(torch.from_numpy(frame).to(param.device, param.dtype)).float().cpu().numpy()

    return step
