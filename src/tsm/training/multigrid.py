"""Multigrid training (Wu, Girshick, He, Feichtenhofer, Krähenbühl, CVPR 2020): train on coarse clips first.

A *long cycle* walks through base shapes (frames, crop) from coarse to the configured one, one shape per
epoch range; a *short cycle* varies the crop from batch to batch within an epoch (the first two of every
three batches at smaller crops of the configured size, the third at the long cycle's shape). Every batch
holds about the same number of pixels as a configured one (``frames x crop^2 x batch``): coarse shapes
take more clips per batch. The learning rate follows the linear scaling rule with the long cycle's batch
size (the short cycle keeps it). The epochs of one long cycle are shared so that each shape gets about
the same number of batches; training ends with ``final_epochs`` at the configured shape.

``conf/multigrid/default.yaml`` (``+multigrid=default``) sets the paper's factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

# (frames factor, crop factor) of each long-cycle shape, coarse to fine, as in the paper
LONG_CYCLE = ((0.25, 2**-0.5), (0.5, 2**-0.5), (0.5, 1.0), (1.0, 1.0))
# crop factors (of the configured crop) of the first two batches of every three
SHORT_CYCLE = (0.5, 2**-0.5)


@dataclass(frozen=True)
class Shape:
    """Frames per clip, crop side and clips per batch."""

    frames: int
    crop: int
    batch: int


class MultigridSchedule:
    """The shapes, batch sizes and learning-rate factors of each epoch, for clips of ``frames`` frames
    cropped to ``crop`` in batches of ``batch_size``, trained for ``max_epochs``."""

    def __init__(
        self,
        frames: int,
        crop: int,
        batch_size: int,
        max_epochs: int,
        long_cycle: Sequence[Sequence[float]] = LONG_CYCLE,
        short_cycle: Sequence[float] = SHORT_CYCLE,
        cycles: int = 1,
        final_epochs: int = 1,
    ) -> None:
        factors = [float(f) for pair in long_cycle for f in pair] + [float(f) for f in short_cycle]
        if not long_cycle or any(len(pair) != 2 for pair in long_cycle) or not all(0 < f <= 1 for f in factors):
            raise ValueError(
                "multigrid.long_cycle must be [frames factor, crop factor] pairs and multigrid.short_cycle crop "
                f"factors, all in (0, 1]; got long_cycle={list(map(list, long_cycle))}, short_cycle={list(short_cycle)}"
            )
        if cycles < 1 or final_epochs < 0 or max_epochs - final_epochs < cycles:
            raise ValueError(
                f"multigrid needs at least one epoch per long cycle before the final epochs: trainer.max_epochs="
                f"{max_epochs}, multigrid.cycles={cycles}, multigrid.final_epochs={final_epochs}; raise "
                "trainer.max_epochs or lower multigrid.cycles or multigrid.final_epochs"
            )
        self.base = Shape(frames, crop, batch_size)
        self.short_cycle = tuple(float(f) for f in short_cycle)
        self.max_epochs = max_epochs
        self.long_shapes = [self._shape(frames * t, crop * s) for t, s in long_cycle]
        for shape in (s for long in self.long_shapes for s in self.batch_shapes_of(long)):  # the long shape last
            if shape.crop < 8:
                raise ValueError(f"multigrid would crop {shape.crop} pixels at data.crop_size={crop}: use larger crops")
        self.ends = self._epoch_ends(max_epochs - final_epochs, cycles)

    def _shape(self, frames: float, crop: float) -> Shape:
        """The shape of ``frames`` x ``crop`` (rounded) holding as many pixels per batch as the base shape."""
        t, s = max(1, round(frames)), round(crop)
        base = self.base
        return Shape(t, s, max(1, round(base.batch * base.frames * base.crop**2 / (t * s * s))))

    def batch_shapes_of(self, long: Shape) -> list[Shape]:
        """The short cycle around long-cycle shape ``long``: smaller crops of the configured size, then ``long``."""
        return [self._shape(long.frames, self.base.crop * f) for f in self.short_cycle] + [long]

    def _epoch_ends(self, epochs: int, cycles: int) -> list[tuple[int, Shape]]:
        """(first epoch after it, long-cycle shape) ranges: each cycle's epochs shared among its shapes in
        proportion to their mean batch size (the same number of batches each), boundaries rounded."""
        weights = [sum(s.batch for s in self.batch_shapes_of(long)) for long in self.long_shapes]
        ends, done, last = [], 0.0, 0
        for _ in range(cycles):
            for long, weight in zip(self.long_shapes, weights, strict=True):
                done += epochs / cycles * weight / sum(weights)
                if round(done) > last:  # a shape whose share rounds to no epoch is left out
                    ends.append((round(done), long))
                    last = round(done)
        return ends

    def long_shape(self, epoch: int) -> Shape:
        """The long cycle's shape in ``epoch`` (0-based); the configured one in the final epochs."""
        return next((shape for end, shape in self.ends if epoch < end), self.base)

    def batch_shapes(self, epoch: int) -> list[Shape]:
        """The shapes batches of ``epoch`` cycle through."""
        return self.batch_shapes_of(self.long_shape(epoch))

    def lr_factor(self, epoch: int) -> float:
        """The learning rate's multiplier in ``epoch``: its long-cycle batch over the configured batch."""
        return self.long_shape(epoch).batch / self.base.batch

    def batches(self, epoch: int, clips: int, drop_last: bool = True) -> list[Shape]:
        """The shape of every batch of ``epoch`` over ``clips`` clips, in order (a short last one dropped
        under ``drop_last``, else cut to the clips left)."""
        out, left, shapes = [], clips, self.batch_shapes(epoch)
        while left > 0:
            shape = shapes[len(out) % len(shapes)]
            if shape.batch > left:
                if drop_last:
                    break
                shape = Shape(shape.frames, shape.crop, left)
            out.append(shape)
            left -= shape.batch
        return out

    def rows(self) -> list[str]:
        """The schedule, one line per epoch, for the log."""
        return [
            f"epoch {e}: "
            + ", ".join(f"{s.batch} x {s.frames} x {s.crop}^2" for s in self.batch_shapes(e))
            + f" (lr x {self.lr_factor(e):g})"
            for e in range(self.max_epochs)
        ]


def epoch_progress(steps_per_epoch: Sequence[int]) -> list[tuple[int, float]]:
    """For every optimizer step: (its epoch, training progress in epochs at it), given each epoch's steps."""
    return [(e, e + i / n) for e, n in enumerate(steps_per_epoch) for i in range(n)]


def multigrid_lr(progress_factor, schedule: MultigridSchedule, steps_per_epoch: Sequence[int]):
    """The per-step multiplier: ``progress_factor(epochs done)`` (warm-up and decay over epochs, as without
    multigrid) times the long cycle's linear-scaling factor; steps past the end keep the last one."""
    table = [progress_factor(p) * schedule.lr_factor(e) for e, p in epoch_progress(steps_per_epoch)]
    return lambda step: table[min(step, len(table) - 1)] if table else 1.0


def rank_clips(dataset_size: int, world_size: int) -> int:
    """Training clips one process sees per epoch (Lightning's distributed sampler pads to equal shares)."""
    return math.ceil(dataset_size / world_size)


def from_config(cfg: DictConfig) -> MultigridSchedule | None:
    """The schedule of a train config's ``multigrid`` block (None without one), for its data and epochs."""
    settings = cfg.get("multigrid")
    if not settings:
        return None
    if cfg.trainer.get("reload_dataloaders_every_n_epochs") != 1:
        raise ValueError(
            "multigrid changes the training batches every epoch: set trainer.reload_dataloaders_every_n_epochs=1 "
            "(+multigrid=default does)"
        )
    if cfg.model.get("distill", {}).get("kind", "none") != "none":
        raise ValueError("multigrid does not train with a teacher: drop +multigrid or use model/distill=none")
    data = cfg.data
    settings = OmegaConf.to_container(settings, resolve=True)
    return MultigridSchedule(data.num_segments, data.crop_size, data.batch_size, cfg.trainer.max_epochs, **settings)
