"""Insert temporal shifts into a timm backbone by walking its stages and blocks.

Unknown backbones and block types raise an error naming what was found and what
is supported: a shift that silently goes missing turns TSM back into TSN.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models._efficientnet_blocks import (
    ConvBnAct,
    DepthwiseSeparableConv,
    EdgeResidual,
    InvertedResidual,
)
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from tsm.shift import DIRECTIONS, TemporalShift

PLACES = ("residual", "inplace")

# Block type -> name of the first conv of its residual branch (the conv the shift goes before).
FIRST_CONV = {
    BasicBlock: "conv1",
    Bottleneck: "conv1",
    InvertedResidual: "conv_pw",
    DepthwiseSeparableConv: "conv_dw",
    EdgeResidual: "conv_exp",
    ConvBnAct: "conv",
}


class TemporalPool(nn.Module):
    """Max-pool over time (kernel 3, stride 2), halving the frames per clip, then run ``net``."""

    def __init__(self, net: nn.Module, num_segments: int) -> None:
        super().__init__()
        if num_segments % 2:
            raise ValueError(f"temporal pooling needs an even num_segments, got {num_segments}")
        self.net = net
        self.num_segments = num_segments

    def forward(self, x):
        nt, c, h, w = x.shape
        t = self.num_segments
        clips = x.view(nt // t, t, c, h, w).transpose(1, 2)
        pooled = nn.functional.max_pool3d(clips, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
        return self.net(pooled.transpose(1, 2).reshape(nt // 2, c, h, w))


def backbone_stages(model: nn.Module) -> list[nn.Sequential]:
    """The backbone's stages, each a sequence of blocks, in order."""
    if isinstance(model, ResNet):
        return [model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(model, (EfficientNet, MobileNetV3)):
        return list(model.blocks)
    raise TypeError(
        f"cannot insert temporal shifts into {type(model).__name__}: supported timm backbones are "
        "ResNet/ResNeXt (BasicBlock, Bottleneck) and EfficientNet/MobileNetV2/MobileNetV3 "
        f"({', '.join(t.__name__ for t in FIRST_CONV if t not in (BasicBlock, Bottleneck))})"
    )


def _first_conv_name(block: nn.Module, where: str) -> str:
    for block_type, conv_name in FIRST_CONV.items():
        if isinstance(block, block_type):
            return conv_name
    raise TypeError(
        f"unknown block type {type(block).__name__} at {where}: temporal shift supports "
        f"{', '.join(t.__name__ for t in FIRST_CONV)}"
    )


def _has_skip(block: nn.Module) -> bool:
    # ResNet blocks always add their branch to an identity or downsample path.
    return isinstance(block, (BasicBlock, Bottleneck)) or bool(getattr(block, "has_skip", False))


def _selected_stages(blocks: str | Sequence[int], num_stages: int) -> set[int]:
    if blocks in ("all", "every_other"):
        return set(range(num_stages))
    if isinstance(blocks, str) or not all(isinstance(i, int) for i in blocks):
        raise ValueError(f"model.shift.blocks must be 'all', 'every_other' or a list of stage indices, got {blocks!r}")
    bad = [i for i in blocks if not 0 <= i < num_stages]
    if bad:
        raise ValueError(f"model.shift.blocks has stage indices {bad} outside 0..{num_stages - 1}")
    return set(blocks)


def patch_shift(
    model: nn.Module,
    num_segments: int,
    fold_div: int = 8,
    direction: str = "bidirectional",
    place: str = "residual",
    blocks: str | Sequence[int] = "all",
    temporal_pool: bool = False,
) -> list[str]:
    """Insert shifts into ``model`` in place; returns the names of the shifted modules.

    residual: shift before the first conv of each block's residual branch (blocks
    without a skip connection are left as they are, as in the published TSM).
    inplace: shift the block input, identity path included, for every block.
    ``temporal_pool`` (ResNets) halves the frames before the second stage.
    """
    if place not in PLACES:
        raise ValueError(f"model.shift.place must be one of {PLACES}, got {place!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"model.shift.direction must be one of {DIRECTIONS}, got {direction!r}")
    stages = backbone_stages(model)
    if temporal_pool:
        add_temporal_pool(model, num_segments)
    selected = _selected_stages(blocks, len(stages))
    shifted = []
    for stage_index, stage in enumerate(stages):
        segments = num_segments // 2 if temporal_pool and stage_index > 0 else num_segments
        for block_index, block in enumerate(stage):
            where = f"stage {stage_index} block {block_index}"
            conv_name = _first_conv_name(block, where)
            if stage_index not in selected or (blocks == "every_other" and block_index % 2):
                continue
            if place == "inplace":
                stage[block_index] = TemporalShift(block, segments, fold_div, direction)
                shifted.append(where)
            elif _has_skip(block):
                conv = getattr(block, conv_name)
                setattr(block, conv_name, TemporalShift(conv, segments, fold_div, direction))
                shifted.append(f"{where}.{conv_name}")
    return shifted


def add_temporal_pool(model: nn.Module, num_segments: int) -> None:
    """Halve the frames of a ResNet before ``layer2``, as in the TSM paper's temporal pooling."""
    if not isinstance(model, ResNet):
        raise TypeError(f"temporal pooling is supported for timm ResNets only, got {type(model).__name__}")
    model.layer2 = TemporalPool(model.layer2, num_segments)
