"""Backbones this project adds to timm's registry: ``timm.create_model`` and ``model.backbone`` take their names."""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from timm.models.resnet import ResNet, resnet10t

__all__ = ["resnet10t_050"]


@register_model
def resnet10t_050(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm's ResNet10-T at half width (stages of 32, 64, 128 and 256 channels, a 16-wide stem): the
    from-scratch default (conf/model/default.yaml). A 3x3 convolution over all channels follows each
    shift, so one layer can compare a shifted frame with the current one across pixels (a motion
    filter), which MobileNetV2's pointwise-then-depthwise blocks cannot (experiments/recipe)."""
    if pretrained:
        raise ValueError("resnet10t_050 has no published weights: train it from scratch (model.pretrained=false)")
    return resnet10t(pretrained=False, **{"channels": (32, 64, 128, 256), "stem_width": 16, **kwargs})
