"""The accuracy metrics every split and the multi-view test report: top-1, top-5, mean class accuracy."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy


class MeanClassAccuracy(Metric):
    """The mean over the classes that have samples of each one's share predicted as it (the official TSM test's
    mean class accuracy). torchmetrics' macro average also counts a class predicted but without samples, as 0."""

    full_state_update = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state("hits", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        hit = scores.argmax(-1) == labels
        self.counts += torch.bincount(labels, minlength=self.num_classes)
        self.hits += torch.bincount(labels[hit], minlength=self.num_classes)

    def compute(self) -> torch.Tensor:
        seen = self.counts > 0
        return (self.hits[seen].float() / self.counts[seen].float()).mean()  # float32: MPS has no float64


def classification_metrics(num_classes: int) -> MetricCollection:
    """``acc`` (top-1), ``acc_top5`` and ``mean_class_acc`` over ``num_classes`` classes."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "mean_class_acc": MeanClassAccuracy(num_classes),
        },
        # Compute groups merge metrics whose states match after the first batch: top-1 and top-5 do
        # when that batch is all correct, and would then share one state for the whole epoch.
        compute_groups=False,
    )
