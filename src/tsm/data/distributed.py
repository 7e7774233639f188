"""Evaluation under DDP: every sample seen exactly once, however the dataset divides among the ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``n`` gets samples ``r, r + n, r + 2n, ...``, in order: no padding with repeats.

    :class:`~torch.utils.data.DistributedSampler` repeats samples so that every rank gets as many,
    which counts them twice in the metrics of a small evaluation set. Here the last ranks may get
    one sample fewer; metrics whose state is synced across ranks at ``compute`` (torchmetrics) then
    count each sample once. Lightning keeps a sampler of this type instead of injecting its own.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(dataset: Dataset) -> UnpaddedDistributedSampler | None:
    """The unpadded sampler when ``torch.distributed`` is initialised with several ranks, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnpaddedDistributedSampler(dataset)
    return None
