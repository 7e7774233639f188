"""Multi-view testing: score every view, average per video, write metrics and predictions."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

AVERAGES = ("softmax", "logits")


@torch.inference_mode()
def score_videos(
    model: nn.Module, loader: DataLoader, average: str = "softmax", device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-video scores ``(N, K)`` averaged over views, with labels and dataset indices."""
    if average not in AVERAGES:
        raise ValueError(f"test.average must be one of {AVERAGES}, got {average!r}")
    model.eval().to(device)
    scores, labels, indices = [], [], []
    for views, label, index in loader:
        b, v = views.shape[:2]
        logits = model(views.flatten(0, 1).to(device)).float().view(b, v, -1)
        per_view = logits.softmax(-1) if average == "softmax" else logits
        scores.append(per_view.mean(1).cpu())
        labels.append(label)
        indices.append(index)
    return torch.cat(scores), torch.cat(labels), torch.cat(indices)


def accuracy_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 and mean class accuracy as plain floats."""
    k = scores.shape[1]
    return {
        "test/acc": MulticlassAccuracy(k, average="micro")(scores, labels).item(),
        "test/acc_top5": MulticlassAccuracy(k, top_k=min(5, k), average="micro")(scores, labels).item(),
        "test/mean_class_acc": MulticlassAccuracy(k, average="macro")(scores, labels).item(),
    }


def write_confusion(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], out_dir: Path) -> None:
    """``confusion.csv`` (rows true, columns predicted) and ``confusion.png``."""
    matrix = MulticlassConfusionMatrix(len(classes))(scores, labels).int()
    with open(out_dir / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            writer.writerow([name, *row])
    size = max(4.0, 0.3 * len(classes))
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    if len(classes) <= 60:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=120)


def write_predictions(
    scores: torch.Tensor, labels: torch.Tensor, video_ids: Sequence[str], classes: Sequence[str], out_dir: Path
) -> None:
    """``predictions.csv`` (id, true label, top-5 labels and scores) and, for videos without
    labels, ``submission.csv`` (``id;label``, the format of the Jester/Something test servers)."""
    top = scores.topk(min(5, scores.shape[1]), dim=1)
    with open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "top5_labels", "top5_scores"])
        for vid, label, idx, val in zip(
            video_ids, labels.tolist(), top.indices.tolist(), top.values.tolist(), strict=True
        ):
            true = classes[label] if label >= 0 else ""
            writer.writerow([vid, true, "|".join(classes[i] for i in idx), "|".join(f"{v:.5f}" for v in val)])
    if (labels < 0).any():
        with open(out_dir / "submission.csv", "w") as f:
            for vid, label, idx in zip(video_ids, labels.tolist(), top.indices[:, 0].tolist(), strict=True):
                if label < 0:
                    f.write(f"{vid};{classes[idx]}\n")


def report(
    scores: torch.Tensor, labels: torch.Tensor, video_ids: Sequence[str], classes: Sequence[str], out_dir: Path
) -> dict[str, float]:
    """Write every output of a test run into ``out_dir``; returns the metrics (empty without labels)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(scores, labels, video_ids, classes, out_dir)
    labelled = labels >= 0
    metrics: dict[str, float] = {"test/videos": int(len(labels)), "test/labelled_videos": int(labelled.sum())}
    if labelled.any():
        metrics |= accuracy_metrics(scores[labelled], labels[labelled])
        write_confusion(scores[labelled], labels[labelled], classes, out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
