"""The accuracy metrics every split and the multi-view test report: top-1, top-5, mean class accuracy."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy


def classification_metrics(num_classes: int) -> MetricCollection:
    """``acc`` (top-1), ``acc_top5`` and ``mean_class_acc`` (macro) over ``num_classes`` classes."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
            "mean_class_acc": MulticlassAccuracy(num_classes, average="macro"),
        },
        # Compute groups merge metrics whose states match after the first batch: top-1 and top-5 do
        # when that batch is all correct, and would then share one state for the whole epoch.
        compute_groups=False,
    )
