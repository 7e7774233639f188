"""A 2D backbone applied per frame, a linear head, and average consensus over time."""

from __future__ import annotations

import torch
from torch import nn

from tsm import imagenet

# What using a network needs besides its weights (its ``info``), as the TSM release and timm's
# ImageNet models have it: 224 crops of frames whose short side is 256, ImageNet mean and std.
INFO_DEFAULTS = {"input_size": 224, "scale_size": 256, "mean": list(imagenet.MEAN), "std": list(imagenet.STD)}


class Recognizer(nn.Module):
    """Clips ``(B, T, C, H, W)`` in, logits ``(B, num_classes)`` out.

    ``info`` (a dict, set by whoever loads weights into it) says how to feed it: ``class_names``,
    ``num_segments``, ``input_size``, ``scale_size``, ``mean``, ``std``, ``backbone``, ``shift``.

    The backbone maps a batch of frames ``(B*T, C, H, W)`` to features ``(B*T, F)``;
    ``frames_out`` is how many frames per clip leave it (T, or T/2 with temporal pooling).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_features: int,
        num_classes: int,
        num_segments: int,
        frames_out: int | None = None,
        dropout: float = 0.5,
        partial_bn: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_segments = num_segments
        self.frames_out = frames_out or num_segments
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(num_features, num_classes)
        self.partial_bn = partial_bn
        self.info: dict = {}
        for norm in self._frozen_norms():
            norm.requires_grad_(False)

    def _frozen_norms(self) -> list[nn.Module]:
        if not self.partial_bn:
            return []
        norms = [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return norms[1:]

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def frame_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, frames_out, num_classes)``, before the average over frames."""
        if x.dim() != 5 or x.shape[1] != self.num_segments:
            raise ValueError(f"expected clips (B, T={self.num_segments}, C, H, W), got shape {tuple(x.shape)}")
        b = x.shape[0]
        features = self.backbone(x.flatten(0, 1))
        return self.fc(self.dropout(features)).view(b, self.frames_out, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_logits(x).mean(dim=1)

    def train(self, mode: bool = True) -> Recognizer:
        """Partial BN: every BatchNorm but the first keeps its statistics and affine frozen."""
        super().train(mode)
        if mode:
            for norm in self._frozen_norms():
                norm.eval()
        return self
