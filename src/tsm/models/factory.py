"""``build_recognizer``: a timm backbone name (or ``i3d``) to a TSM/TSN recognizer."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import timm
from timm.utils import reparameterize_model
from torch import nn

from tsm.models import backbones  # noqa: F401  (registers this project's backbones in timm)
from tsm.models.i3d import I3D, load_i3d
from tsm.models.patch import add_temporal_pool, patch_shift
from tsm.models.recognizer import Recognizer
from tsm.models.weight_files import load_backbone_file

SHIFT_DEFAULTS = {"enabled": True, "fold_div": 8, "direction": "bidirectional", "place": "residual", "blocks": "all"}


def build_recognizer(
    backbone: str,
    num_classes: int,
    num_segments: int,
    shift: Mapping[str, Any] | None = None,
    pretrained: bool = False,
    dropout: float = 0.5,
    pretrained_file: str | None = None,
    temporal_pool: bool = False,
    partial_bn: bool = False,
    backbone_args: Mapping[str, Any] | None = None,
) -> Recognizer:
    """A recognizer over timm ``backbone``; ``shift=None`` or ``enabled=False`` gives TSN.

    ``pretrained`` uses timm's weights (cache or hub); ``pretrained_file`` loads a local
    ImageNet state dict for the backbone instead, with no network. ``backbone="i3d"`` builds the
    I3D teacher (no shift; ``pretrained_file``: an ``rgb_imagenet.pt``-format state dict).
    ``backbone_args`` go to ``timm.create_model`` (e.g. ``img_size`` of a ViT); for I3D, ``width``
    (its channel multiplier) is the one argument.
    """
    options = _shift_options(shift)
    if backbone == "i3d":
        i3d_args = dict(backbone_args or {})
        if options["enabled"] or temporal_pool or partial_bn or pretrained or set(i3d_args) - {"width"}:
            raise ValueError(
                "model.backbone=i3d takes no shift (model/shift=none), temporal_pool, partial_bn or backbone_args "
                f"other than width (got {sorted(i3d_args)}), and its weights from model.pretrained_file "
                "(an rgb_imagenet.pt-format state dict), not model.pretrained"
            )
        return _build_i3d(num_classes, num_segments, dropout, pretrained_file, float(i3d_args.get("width", 1.0)))
    if not set(backbone) & set(":/\\") and not timm.is_model(backbone):  # hf-hub:, local-dir:, paths: timm's
        close = difflib.get_close_matches(backbone.split(".")[0], [*timm.list_models(), "i3d"], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise ValueError(f"model.backbone={backbone!r} is not a timm model or i3d{hint}")
    net = timm.create_model(
        backbone, pretrained=pretrained and pretrained_file is None, num_classes=0, **dict(backbone_args or {})
    )
    if pretrained_file is not None:
        load_backbone_file(net, pretrained_file)
    if options["enabled"]:
        patch_shift(
            net,
            num_segments,
            fold_div=options["fold_div"],
            direction=options["direction"],
            place=options["place"],
            blocks=options["blocks"],
            temporal_pool=temporal_pool,
        )
    elif temporal_pool:
        add_temporal_pool(net, num_segments)
    frames_out = num_segments // 2 if temporal_pool else num_segments
    return Recognizer(net, net.head_hidden_size, num_classes, num_segments, frames_out, dropout, partial_bn)


def _build_i3d(num_classes: int, num_segments: int, dropout: float, pretrained_file: str | None, width: float) -> I3D:
    if pretrained_file is None:
        return I3D(num_classes, dropout, num_segments=num_segments, width=width)
    if width != 1.0:
        raise ValueError(f"model.pretrained_file holds the released I3D (width 1); got backbone_args.width={width}")
    model = load_i3d(pretrained_file, num_classes)
    model.num_segments = num_segments
    model.dropout.p = dropout
    return model


def _shift_options(shift: Mapping[str, Any] | None) -> dict[str, Any]:
    if shift is None:
        return {**SHIFT_DEFAULTS, "enabled": False}
    unknown = set(shift) - set(SHIFT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown model.shift keys {sorted(unknown)}; known: {sorted(SHIFT_DEFAULTS)}")
    options = {**SHIFT_DEFAULTS, **shift}
    if not isinstance(options["blocks"], str):
        options["blocks"] = [int(i) for i in options["blocks"]]
    return options


def for_deployment(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the CPU, in eval mode, re-parameterised for inference (timm's
    ``reparameterize_model``: MobileOne's and GhostNetV3's branches folded into single convs; the
    shifts sit outside what is folded, so the copy computes what ``model`` computes)."""
    return reparameterize_model(copy.deepcopy(model).cpu().eval(), inplace=True)
