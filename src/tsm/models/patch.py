"""Insert temporal shifts into a timm backbone, where :mod:`tsm.models.families` says they go.

Unknown backbones and block types raise an error naming what was found and what
is supported: a shift that silently goes missing turns TSM back into TSN.
"""

from __future__ import annotations

from collections.abc import Sequence

from timm.models.resnet import ResNet
from torch import nn

from tsm.models.families import BACKBONES, BLOCKS, Site
from tsm.shift import DIRECTIONS, TemporalShift

PLACES = ("residual", "inplace")


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


def _family(model: nn.Module) -> tuple[str, ...]:
    for model_type, paths in BACKBONES.items():
        if isinstance(model, model_type):
            return paths
    raise TypeError(
        f"cannot insert temporal shifts into {type(model).__name__}: supported timm backbones are "
        f"{', '.join(t.__name__ for t in BACKBONES)} (add a family to tsm.models.families.BACKBONES)"
    )


def _resolve(module: nn.Module, path: str) -> list[nn.Module]:
    """The modules at ``path`` (dotted; ``*`` is every child, in order)."""
    found = [module]
    for part in path.split("."):
        found = [c for m in found for c in m.children()] if part == "*" else [getattr(m, part) for m in found]
    return found


def backbone_stages(model: nn.Module) -> list[nn.Module]:
    """The backbone's stages, each a module whose children are blocks, in order."""
    return [stage for path in _family(model) for stage in _resolve(model, path)]


def block_site(block: nn.Module, where: str, backbone: nn.Module) -> Site:
    """The :class:`Site` of ``block`` (exact class first, then its bases)."""
    site = BLOCKS.get(type(block)) or next((s for t, s in BLOCKS.items() if isinstance(block, t)), None)
    if site is None:
        raise TypeError(
            f"unknown block type {type(block).__name__} at {where} of {type(backbone).__name__}: temporal shift "
            f"supports {', '.join(t.__name__ for t in BLOCKS)} (add it to tsm.models.families.BLOCKS)"
        )
    return site


def _selected_blocks(blocks: str | Sequence[int], stages: list[nn.Module], sites: list[list[Site]]) -> set[tuple]:
    """``(stage, block)`` indices ``model.shift.blocks`` selects: ``all``, ``every_other`` (even blocks of
    each stage), a list of stage indices, or ``last:N`` (the last N blocks that have a residual branch)."""
    everywhere = [(i, j) for i, stage_sites in enumerate(sites) for j in range(len(stage_sites))]
    if blocks == "all":
        return set(everywhere)
    if blocks == "every_other":
        return {(i, j) for i, j in everywhere if j % 2 == 0}
    if isinstance(blocks, str) and blocks.startswith("last:"):
        count = blocks.removeprefix("last:")
        children = [list(stage.children()) for stage in stages]
        residual = [(i, j) for i, j in everywhere if sites[i][j].branch and sites[i][j].has_skip(children[i][j])]
        if not (count.isascii() and count.isdigit() and 1 <= int(count) <= len(residual)):
            raise ValueError(
                f"model.shift.blocks={blocks!r}: N of last:N must be 1..{len(residual)}, the blocks with a "
                "residual branch in this backbone"
            )
        return set(residual[-int(count) :])
    if isinstance(blocks, str) or not all(isinstance(i, int) for i in blocks):
        raise ValueError(
            f"model.shift.blocks must be 'all', 'every_other', 'last:N' or a list of stage indices, got {blocks!r}"
        )
    bad = [i for i in blocks if not 0 <= i < len(stages)]
    if bad:
        raise ValueError(f"model.shift.blocks has stage indices {bad} outside 0..{len(stages) - 1}")
    return {(i, j) for i, j in everywhere if i in blocks}


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

    residual: shift before the submodules that start each block's residual branch (blocks
    without a skip connection are left as they are, as in the published TSM).
    inplace: shift the block input, identity path included, for every block.
    ``temporal_pool`` (ResNets) halves the frames before the second stage.
    """
    if place not in PLACES:
        raise ValueError(f"model.shift.place must be one of {PLACES}, got {place!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"model.shift.direction must be one of {DIRECTIONS}, got {direction!r}")
    if isinstance(fold_div, bool) or not isinstance(fold_div, int) or fold_div < 1:
        raise ValueError(f"model.shift.fold_div must be a positive integer (1/fold_div of the channels move each way), "
                         f"got {fold_div!r}")  # fmt: skip
    stages = backbone_stages(model)
    sites = [
        [block_site(block, f"stage {i} block {j}", model) for j, block in enumerate(stage.children())]
        for i, stage in enumerate(stages)
    ]
    if temporal_pool:
        add_temporal_pool(model, num_segments)
    selected = _selected_blocks(blocks, stages, sites)
    shifted = []
    for stage_index, (stage, stage_sites) in enumerate(zip(stages, sites, strict=True)):
        segments = num_segments // 2 if temporal_pool and stage_index > 0 else num_segments
        children = list(stage.named_children())
        for block_index, ((name, block), site) in enumerate(zip(children, stage_sites, strict=True)):
            where = f"stage {stage_index} block {block_index}"
            if (stage_index, block_index) not in selected:
                continue
            channel_dim = -1 if site.tokens else 1
            if place == "inplace":
                setattr(stage, name, TemporalShift(block, segments, fold_div, direction, channel_dim))
                shifted.append(where)
                continue
            if not site.branch:
                raise ValueError(
                    f"model.shift.place=residual does not fit {type(block).__name__} ({where} of "
                    f"{type(model).__name__}): {site.why}"
                )
            if site.has_skip(block):
                for sub in site.branch:
                    setattr(block, sub, TemporalShift(getattr(block, sub), segments, fold_div, direction, channel_dim))
                    shifted.append(f"{where}.{sub}")
    return shifted


def add_temporal_pool(model: nn.Module, num_segments: int) -> None:
    """Halve the frames of a ResNet before ``layer2``, as in the TSM paper's temporal pooling."""
    if not isinstance(model, ResNet):
        raise TypeError(f"temporal pooling is supported for timm ResNets only, got {type(model).__name__}")
    model.layer2 = TemporalPool(model.layer2, num_segments)
