"""Evaluation under DDP: every sample seen exactly once, however the dataset divides among the ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``n`` gets samples ``r, r + n, r + 2n, ...``, in order: no padding with repeats.

    :class:`~torch.utils.data.DistributedSampler` repeats samples so that every rank gets as many,
    which counts them twice in the metrics of a small evaluation set. Here the last ranks may get
    one sample fewer (and so maybe one batch fewer); metrics whose state is synced across ranks at
    ``compute`` (torchmetrics) then count each sample once. Lightning keeps a sampler of this type
    instead of injecting its own. As ranks may run different numbers of evaluation steps, no
    collective may run per step after the first (where DDP broadcasts rank 0's BatchNorm buffers):
    the metrics sync once, in the LightningModule's epoch-end hooks (see ``TSMLitModule``).
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        if 0 < len(dataset) < self.num_replicas:
            # A rank without a sample would skip the evaluation loop, its hooks and their collectives
            # (metric syncs, DDP's buffer broadcast at the first forward), which the others enter.
            raise ValueError(
                f"{len(dataset)} samples cannot be evaluated over {self.num_replicas} processes without "
                "repeating one: every process needs at least one (use fewer devices or more samples)"
            )
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
