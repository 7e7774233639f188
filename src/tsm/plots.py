"""The PNGs a run leaves for a person to look at: learning curves and confusion matrices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tsm.files import atomic_open

MAX_LABELLED_CLASSES = 60  # beyond this, tick labels are unreadable


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], path: Path, title: str = "") -> None:
    """A confusion matrix (rows true, columns predicted) with class names and counts, as a PNG."""
    size = max(4.0, 0.3 * len(classes))
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    if len(classes) <= MAX_LABELLED_CLASSES:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    if len(classes) <= 12:
        peak = max(int(matrix.max()), 1)
        for row, counts in enumerate(matrix.tolist()):
            for col, count in enumerate(counts):
                color = "white" if count > peak / 2 else "black"
                ax.text(col, row, count, ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path) as file:
        fig.savefig(file, format="png", dpi=120)


def plot_learning_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
    """Loss and top-1 per epoch of the train and val splits, from ``{"split", "epoch", "loss", "acc"}`` rows."""
    fig = Figure(figsize=(9, 3.5))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("val", "-s")):
        rows = [r for r in history if r["split"] == split]
        epochs = [r["epoch"] + 1 for r in rows]
        loss_ax.plot(epochs, [r["loss"] for r in rows], style, label=split, markersize=4)
        acc_ax.plot(epochs, [r["acc"] for r in rows], style, label=split, markersize=4)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    acc_ax.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_open(path) as file:
        fig.savefig(file, format="png", dpi=120)
