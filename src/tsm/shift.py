"""The temporal shift: move a fraction of the channels one frame along time.

Frames of one clip are stacked in the batch dimension as ``(N*T, C, H, W)`` (or, for a
transformer's tokens, ``(N*T, L, C)``); the shift views them as ``(N, T, C, ...)`` and returns a
new tensor in the input's memory format, in about one pass over memory (``_shift_clips``).
"""

from __future__ import annotations

import torch
from torch import nn

DIRECTIONS = ("bidirectional", "causal")


def shift_fold(channels: int, fold_div: int, direction: str) -> int:
    """Number of channels moved per direction; validates ``fold_div`` and ``direction``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")
    if not isinstance(fold_div, int) or fold_div < 1:
        raise ValueError(f"fold_div must be a positive integer, got {fold_div!r}")
    fold = channels // fold_div
    moved = 2 * fold if direction == "bidirectional" else fold
    if fold == 0 or moved > channels:
        raise ValueError(
            f"fold_div={fold_div} does not fit {channels} channels with direction={direction!r}: "
            f"need 1 <= C // fold_div and {'2 * ' if direction == 'bidirectional' else ''}"
            f"(C // fold_div) <= C"
        )
    return fold


def temporal_shift(
    x: torch.Tensor, num_segments: int, fold_div: int = 8, direction: str = "bidirectional"
) -> torch.Tensor:
    """Shift channels of ``x`` (``(N*T, C, ...)``: feature maps or any trailing dims) along time, same shape out.

    bidirectional: channels ``[0, fold)`` take frame t+1, ``[fold, 2*fold)`` take
    frame t-1 (zeros past the clip's ends). causal: channels ``[0, fold)`` take
    frame t-1 (zeros at t=0). The remaining channels are copied unchanged.
    """
    if x.dim() < 3:
        raise ValueError(f"temporal_shift expects (N*T, C, ...) with at least 3 dims, got shape {tuple(x.shape)}")
    if num_segments < 1 or x.shape[0] % num_segments != 0:
        raise ValueError(f"batch dimension {x.shape[0]} is not a multiple of num_segments={num_segments}")
    fold = shift_fold(x.shape[1], fold_div, direction)
    # (first channel, end channel, +1: take frame t+1 / -1: take frame t-1)
    moves = ((0, fold, 1), (fold, 2 * fold, -1)) if direction == "bidirectional" else ((0, fold, -1),)
    clips = x.view(x.shape[0] // num_segments, num_segments, *x.shape[1:])
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        # graph compilers get the functional form: TorchInductor (CPU, torch 2.14) mis-compiles the
        # in-place writes into torch.empty_like inside a whole network (NaN logits; experiments/compile)
        return _shift_by_concat(clips, moves).view_as(x)
    recording = torch.is_grad_enabled() and x.requires_grad
    out = _Shift.apply(clips, moves) if recording else _shift_clips(clips, moves)
    return out.view_as(x)


def _shift_clips(clips: torch.Tensor, moves: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
    """The moved channel blocks, zeros past the clip's ends and the rest copied, in ``clips``' memory format.

    Channels outermost (NCHW): each output element is written once. Channels innermost (channels_last
    maps, tokens): a channel block is a short strided run per pixel, slow to copy, so the whole tensor
    is cloned in one contiguous pass and only the moved blocks are written again
    (experiments/latency/shift_op.md).
    """
    channels_innermost = clips.stride(2) == 1
    out = clips.clone() if channels_innermost else torch.empty_like(clips)
    for start, stop, step in moves:
        if step > 0:
            out[:, :-1, start:stop] = clips[:, 1:, start:stop]
            out[:, -1:, start:stop] = 0
        else:
            out[:, 1:, start:stop] = clips[:, :-1, start:stop]
            out[:, :1, start:stop] = 0
    if not channels_innermost:
        rest = moves[-1][1]
        out[:, :, rest:] = clips[:, :, rest:]
    return out


def _shift_by_concat(clips: torch.Tensor, moves: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
    """The same shift as slices and concatenations, the form ONNX runtimes run fast: slice
    assignments export as ScatterND, which onnxruntime executes as a slow element-wise copy."""
    parts = []
    for start, stop, step in moves:
        block = clips[:, :, start:stop]
        edge = torch.zeros_like(block[:, :1])
        parts.append(torch.cat([block[:, 1:], edge], 1) if step > 0 else torch.cat([edge, block[:, :-1]], 1))
    parts.append(clips[:, :, moves[-1][1] :])
    return torch.cat(parts, 2)


class _Shift(torch.autograd.Function):
    """The shift is linear and its adjoint is the shift the other way: backward is one more pass,
    instead of the chain of slice-copy gradients autograd would record."""

    @staticmethod
    def forward(ctx, clips: torch.Tensor, moves: tuple[tuple[int, int, int], ...]) -> torch.Tensor:
        ctx.moves = moves
        return _shift_clips(clips, moves)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _shift_clips(grad, tuple((a, b, -step) for a, b, step in ctx.moves)), None


class TemporalShift(nn.Module):
    """Wraps a module (a conv, a norm, a whole block) and shifts its input along time first.

    ``channel_dim``: 1 for feature maps ``(N*T, C, H, W)``, -1 for tokens ``(N*T, L, C)``.
    The wrapped module is stored as ``net`` so that state-dict keys read
    ``<name>.net.weight``, the naming of the checkpoints released with TSM.
    """

    def __init__(
        self,
        net: nn.Module,
        num_segments: int,
        fold_div: int = 8,
        direction: str = "bidirectional",
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"shift direction must be one of {DIRECTIONS}, got {direction!r}")
        if channel_dim not in (1, -1):
            raise ValueError(f"channel_dim must be 1 (feature maps) or -1 (tokens), got {channel_dim!r}")
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.direction = direction
        self.channel_dim = channel_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == 1:
            return self.net(temporal_shift(x, self.num_segments, self.fold_div, self.direction))
        last = x.dim() - 1  # not -1: the ONNX exporter writes negative axes into Transpose's perm
        shifted = temporal_shift(x.movedim(last, 1), self.num_segments, self.fold_div, self.direction)
        return self.net(shifted.movedim(1, last))

    def extra_repr(self) -> str:
        tokens = ", tokens" if self.channel_dim == -1 else ""
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}, direction={self.direction}{tokens}"
