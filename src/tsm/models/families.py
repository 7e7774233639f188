"""Where the shifts go in each timm family: two small tables, data rather than code.

``BACKBONES`` maps a timm model class to the paths of its stages (``*`` stands for every child, in
order); each stage's children are its blocks. ``BLOCKS`` maps a block class to a :class:`Site`:
the submodules that start the block's residual branches (the residual shift wraps them), whether the
block has a skip path at all, and whether its activations are tokens ``(N*T, L, C)`` rather than
feature maps ``(N*T, C, H, W)``. The in-place shift wraps the whole block.

A new family takes a few lines, before the model is built::

    from tsm.models.families import BACKBONES, BLOCKS, Site
    BACKBONES[MyNet] = ("stages.*",)
    BLOCKS[MyBlock] = Site(branch=("conv1",))

Blocks that neither table knows raise an error naming the block and the backbone: a shift that
silently goes missing turns TSM back into TSN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from timm.models import _efficientnet_blocks as eb
from timm.models import byobnet, convnext, efficientnet, ghostnet, mobilenetv3, regnet, resnet, vision_transformer
from torch import nn


def _always(block: nn.Module) -> bool:
    return True


def _has_skip_attribute(block: nn.Module) -> bool:
    return bool(getattr(block, "has_skip", False))


@dataclass(frozen=True)
class Site:
    """Where a block type takes the shift.

    branch: the submodules that start its residual branches, in the order they run (the residual
      shift goes before each); empty when the block has no place for it (``why`` says why).
    has_skip: whether a given block adds its branch to a skip path (blocks without one are left
      unshifted by the residual placement, as in the published TSM).
    tokens: activations are ``(N*T, L, C)`` tokens, shifted along their last dimension.
    """

    branch: tuple[str, ...] = ()
    has_skip: Callable[[nn.Module], bool] = _always
    tokens: bool = False
    why: str = ""


# timm model class -> paths of its stages
BACKBONES: dict[type[nn.Module], tuple[str, ...]] = {
    resnet.ResNet: ("layer1", "layer2", "layer3", "layer4"),
    efficientnet.EfficientNet: ("blocks.*",),
    mobilenetv3.MobileNetV3: ("blocks.*",),  # MobileNetV2/V3/V4 (timm builds them all with this class)
    convnext.ConvNeXt: ("stages.*.blocks",),  # ConvNeXt and ConvNeXt-V2
    regnet.RegNet: ("s1", "s2", "s3", "s4"),
    byobnet.ByobNet: ("stages.*",),  # MobileOne (and any ByobNet whose blocks are in BLOCKS)
    ghostnet.GhostNet: ("blocks.*",),
    vision_transformer.VisionTransformer: ("blocks",),  # ViT and DeiT: one stage of blocks
}

# block class -> where its shift goes
BLOCKS: dict[type[nn.Module], Site] = {
    resnet.BasicBlock: Site(("conv1",)),
    resnet.Bottleneck: Site(("conv1",)),
    eb.InvertedResidual: Site(("conv_pw",), _has_skip_attribute),
    eb.DepthwiseSeparableConv: Site(("conv_dw",), _has_skip_attribute),
    eb.EdgeResidual: Site(("conv_exp",), _has_skip_attribute),
    eb.ConvBnAct: Site(("conv",), _has_skip_attribute),
    # MobileNetV4: dw_start is an Identity in the blocks without a leading depthwise conv
    eb.UniversalInvertedResidual: Site(("dw_start",), _has_skip_attribute),
    eb.MobileAttention: Site(("norm",), _has_skip_attribute),  # MobileNetV4 hybrid: before the attention
    convnext.ConvNeXtBlock: Site(("conv_dw",)),
    regnet.Bottleneck: Site(("conv1",), lambda block: block.downsample is not None),
    ghostnet.GhostBottleneck: Site(("ghost1",)),  # V1 and V2
    ghostnet.GhostBottleneckV3: Site(("ghost1",)),
    byobnet.MobileOneBlock: Site(
        why="re-parameterisation folds its identity and scale branches into one conv, so a shift inside "
        "the block would not survive it: shift the block input with model.shift.place=inplace"
    ),
    # before the attention, the first op of the block's first residual branch (as for the conv families):
    # a small ViT fits the order of frames there far sooner than with the shift before the MLP, and as
    # soon as with both (experiments/backbones/README.md: a probe since removed, 3 seeds), with one shift per block
    vision_transformer.Block: Site(("norm1",), tokens=True),
}
