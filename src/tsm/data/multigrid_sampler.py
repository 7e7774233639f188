"""Batches of varying clip shapes for multigrid training (:mod:`tsm.training.multigrid`)."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import BatchSampler, Sampler

from tsm.training.multigrid import MultigridSchedule


class MultigridBatchSampler(BatchSampler):
    """The batches of one epoch of ``schedule``: each a list of ``(index, frames, crop)`` keys of
    :class:`~tsm.data.clips.ClipDataset`, in the order ``sampler`` gives the indices, sized as the schedule
    says. A subclass of :class:`BatchSampler` taking ``sampler`` first, so that Lightning can swap in its
    distributed sampler under DDP."""

    def __init__(self, sampler: Sampler[int], schedule: MultigridSchedule, epoch: int, drop_last: bool = True) -> None:
        super().__init__(sampler, schedule.base.batch, drop_last)
        self.schedule = schedule
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.schedule.batches(self.epoch, len(self.sampler), self.drop_last))

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        shapes = iter(self.schedule.batches(self.epoch, len(self.sampler), self.drop_last))
        batch: list[tuple[int, int, int]] = []
        shape = next(shapes, None)
        for index in self.sampler:
            if shape is None:
                return
            batch.append((index, shape.frames, shape.crop))
            if len(batch) == shape.batch:
                yield batch
                batch, shape = [], next(shapes, None)
