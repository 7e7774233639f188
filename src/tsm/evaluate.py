"""The eval task: load a checkpoint, run the multi-view test protocol on a split, write the report
(``metrics.json``, ``predictions.csv``, ``confusion.csv``/``.png``, ``submission.csv`` for unlabelled sets)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Collection, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassConfusionMatrix

from tsm.checks import check_counts
from tsm.data.clips import MultiViewDataset, collate_skipping
from tsm.data.datamodule import SKIPPED_FILE
from tsm.data.sampling import MODES
from tsm.data.transforms import check_crop, flip_permutation, mirrored_crops, scale_for
from tsm.errors import DataError
from tsm.files import atomic_open, write_text_atomic
from tsm.metadata import REORDERED_CLASSES, classes_reordered
from tsm.metrics import classification_metrics
from tsm.models.checkpoints import load_recognizer
from tsm.plots import plot_confusion
from tsm.training.resume import RunDirInUse, previous_run, save_hydra_record

log = logging.getLogger(__name__)
AVERAGES = ("softmax", "logits")
REPORT_FILES = ("metrics.json", "predictions.csv", "confusion.csv", "submission.csv")  # what report() writes


def view_classes(source: Any, num_clips: int, num_crops: int) -> torch.Tensor | None:
    """``(views, K)``: for each view, the class order that reads its scores as the video's own; a mirrored view
    of "swiping left" scores it as "swiping right" (the source's flip label map). None when no view is mirrored.
    Mirrored views of data whose mirror images have no known class are refused."""
    mirrored = mirrored_crops(num_crops) * num_clips
    if not any(mirrored):
        return None
    name = getattr(source, "name", "the data")
    lone = sorted(getattr(source, "no_flip_classes", ()) or ())
    if not getattr(source, "flip_allowed", True) or lone:
        why = (
            f"{', '.join(repr(source.classes[i]) for i in lone[:3])} have no mirror class in the labels"
            if lone
            else "its classes include directions with no known flip label map"
        )
        raise ValueError(
            f"test.num_crops={num_crops} mirrors half of the views, and {name}'s mirrored clips would be scored "
            f"wrongly ({why}): use test.num_crops=3 or 1"
        )
    flipped = flip_permutation(getattr(source, "flip_label_map", None) or {}, len(source.classes))
    own = torch.arange(len(source.classes))
    return torch.stack([flipped if m else own for m in mirrored])


@torch.inference_mode()
def score_videos(
    model: nn.Module,
    loader: Iterable[Sequence],
    average: str = "softmax",
    device: str | torch.device = "cpu",
    classes_of_views: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-video scores ``(N, K)`` averaged over views, with labels and dataset indices; ``classes_of_views``
    (:func:`view_classes`) reorders each view's scores before the average."""
    if average not in AVERAGES:
        raise ValueError(f"test.average must be one of {AVERAGES}, got {average!r}")
    model.eval().to(device)
    scores, labels, indices = [], [], []
    for views, label, index in loader:
        b, v = views.shape[:2]
        logits = model(views.flatten(0, 1).to(device)).float().view(b, v, -1)
        per_view = logits.softmax(-1) if average == "softmax" else logits
        if classes_of_views is not None:
            per_view = per_view.gather(-1, classes_of_views.to(per_view.device).expand(b, -1, -1))
        scores.append(per_view.mean(1).cpu())
        labels.append(label)
        indices.append(index)
    if not scores:  # every video skipped under data.on_error=skip
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(scores), torch.cat(labels), torch.cat(indices)


def accuracy_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1, top-5 and mean class accuracy as plain floats."""
    values = classification_metrics(scores.shape[1])(scores, labels)
    return {f"test/{name}": value.item() for name, value in values.items()}


def write_confusion(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], out_dir: Path) -> None:
    """``confusion.csv`` (rows true, columns predicted) and ``confusion.png``."""
    matrix = MulticlassConfusionMatrix(len(classes))(scores, labels).int()
    with atomic_open(out_dir / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            writer.writerow([name, *row])
    plot_confusion(matrix, classes, out_dir / "confusion.png")


def write_predictions(
    scores: torch.Tensor, labels: torch.Tensor, video_ids: Sequence[str], classes: Sequence[str], out_dir: Path
) -> None:
    """``predictions.csv`` (id, true label, top-5 labels and scores) and, for videos without
    labels, ``submission.csv`` (``id;label``, the format of the Jester/Something test servers)."""
    top = scores.topk(min(5, scores.shape[1]), dim=1)
    with atomic_open(out_dir / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "top5_labels", "top5_scores"])
        for vid, label, idx, val in zip(
            video_ids, labels.tolist(), top.indices.tolist(), top.values.tolist(), strict=True
        ):
            true = classes[label] if label >= 0 else ""
            writer.writerow([vid, true, "|".join(classes[i] for i in idx), "|".join(f"{v:.5f}" for v in val)])
    if (labels < 0).any():
        with atomic_open(out_dir / "submission.csv", "w") as f:
            for vid, label, idx in zip(video_ids, labels.tolist(), top.indices[:, 0].tolist(), strict=True):
                if label < 0:
                    f.write(f"{vid};{classes[idx]}\n")


def report(
    scores: torch.Tensor,
    labels: torch.Tensor,
    video_ids: Sequence[str],
    classes: Sequence[str],
    out_dir: Path,
    skipped: int = 0,
) -> dict[str, float]:
    """Write every output of a test run into ``out_dir``; returns the metrics (empty without labels).
    ``skipped``: videos left out under ``data.on_error=skip`` (listed in ``skipped_samples.txt``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(scores, labels, video_ids, classes, out_dir)
    labelled = labels >= 0
    metrics: dict[str, float] = {
        "test/videos": int(len(labels)),
        "test/labelled_videos": int(labelled.sum()),
        "test/skipped": skipped,
    }
    if labelled.any():
        metrics |= accuracy_metrics(scores[labelled], labels[labelled])
        write_confusion(scores[labelled], labels[labelled], classes, out_dir)
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def check_recorded_inputs(info: dict, known: Collection[str], cfg: DictConfig, classes: Sequence[str]) -> None:
    """Refuse a test whose normalisation or class names are not those the checkpoint records (``info``'s ``known``
    keys; the others are defaults): its accuracy would be silently wrong. Log a test sampling other than the
    training one or a test crop other than the training crop (a protocol may want them)."""
    for key in ("mean", "std"):
        if key in known and [float(v) for v in cfg.data[key]] != [float(v) for v in info[key]]:
            raise ValueError(
                f"the checkpoint was trained with {key} {list(info[key])}, data.{key}={list(cfg.data[key])}: "
                f"set data.{key}={list(info[key])}"
            )
    if "class_names" in known:
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(info["class_names"], classes, strict=True)) if a != b]
        if differ:
            i, trained, given = differ[0]
            why = "another label file?"
            if classes_reordered(info["class_names"], classes):
                why = f"the same classes in another order: {REORDERED_CLASSES}"
            raise ValueError(
                f"the {cfg.test.split} data's classes are not the checkpoint's: {len(differ)} differ, the first is "
                f"class {i}, {given!r} in the data and {trained!r} in the checkpoint ({why})"
            )
    if "input_size" in known and cfg.test.crop_size != info["input_size"]:
        log.warning(
            "testing at test.crop_size=%s; the checkpoint was trained at %s (data.crop_size=%s tests at that size)",
            cfg.test.crop_size,
            info["input_size"],
            info["input_size"],
        )
    trained = info.get("sampling") if "sampling" in known else None
    if trained and (
        trained["mode"] != cfg.test.mode or (trained["mode"] == "dense" and trained["stride"] != cfg.test.stride)
    ):
        log.warning(
            "testing with test.mode=%s test.stride=%s; the checkpoint was trained with %s sampling, stride %s",
            cfg.test.mode,
            cfg.test.stride,
            trained["mode"],
            trained["stride"],
        )


def resolve_device(name: str) -> torch.device:
    """``device=``: auto (the GPU when there is one), cpu, cuda or cuda:N, refused naming the key when this machine
    has no such device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from err
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= gpus:
        raise ValueError(f"device={name!r}: this machine has {gpus} CUDA GPUs; use device=auto or cpu")
    return device


def check_output_dir(out_dir: Path) -> None:
    """Refuse a directory holding a training run or an earlier test's report, which this test would overwrite."""
    found = sorted({*previous_run(out_dir), *(name for name in REPORT_FILES if (out_dir / name).exists())})
    if found:
        raise RunDirInUse(
            f"{out_dir} already holds results ({', '.join(found)}) that this test would overwrite: give it a "
            "directory of its own (leave hydra.run.dir unset, or give another one)"
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.test.split`` of ``cfg.data`` with the configured views."""
    check_output_dir(Path(cfg.paths.output_dir))
    save_hydra_record(cfg, Path(cfg.paths.output_dir))
    test = cfg.test
    check_counts(
        {"num_clips": test.num_clips, "crop_size": test.crop_size, "batch_size": test.batch_size}, group="test"
    )
    check_counts({"num_workers": test.num_workers}, minimum=0, group="test")
    device = resolve_device(cfg.device)
    if test.mode not in MODES:  # the test's own sampling, not data.sampling's
        raise ValueError(f"test.mode must be one of {MODES}, got {test.mode!r}")
    scale_size = scale_for(test.crop_size) if test.scale_size is None else test.scale_size
    check_counts({"scale_size": scale_size}, group="test")
    check_crop(test.crop_size, scale_size, "test")
    model = load_recognizer(cfg.ckpt_path, num_segments=cfg.data.num_segments)
    if model.num_segments != cfg.data.num_segments:
        raise ValueError(
            f"the checkpoint was trained with {model.num_segments} segments but data.num_segments="
            f"{cfg.data.num_segments}; set data.num_segments={model.num_segments}"
        )
    datamodule = hydra.utils.instantiate(cfg.data)
    source = datamodule.source(split=cfg.test.split)
    datamodule.report_source(cfg.test.split, source)  # annotation lines skipped under data.on_error=skip
    if len(source.classes) != model.num_classes:
        raise ValueError(
            f"the checkpoint has {model.num_classes} classes, the {cfg.test.split} data {len(source.classes)}: "
            "give the data it was trained on (data=NAME data.root=DIR)"
        )
    check_recorded_inputs(model.info, getattr(model, "info_known", ()), cfg, source.classes)
    reorder = view_classes(source, cfg.test.num_clips, cfg.test.num_crops)
    views = MultiViewDataset(
        source,
        num_segments=cfg.data.num_segments,
        num_clips=cfg.test.num_clips,
        num_crops=cfg.test.num_crops,
        crop_size=cfg.test.crop_size,
        scale_size=scale_size,
        mean=cfg.data.mean,
        std=cfg.data.std,
        mode=cfg.test.mode,
        stride=cfg.test.stride,
        on_error=datamodule.on_error,
    )
    skipping = datamodule.on_error == "skip"
    collate = partial(collate_skipping, split=cfg.test.split) if skipping else None
    loader = DataLoader(views, batch_size=cfg.test.batch_size, num_workers=cfg.test.num_workers, collate_fn=collate)
    batches = (datamodule.on_before_batch_transfer(batch, 0) for batch in loader)  # records what was skipped
    readable = (batch for batch in batches if batch)  # a batch none of whose videos could be read is ()
    scores, labels, indices = score_videos(model, readable, cfg.test.average, device, reorder)
    skipped = datamodule.skipped[cfg.test.split]
    if skipped:
        where = datamodule.log_dir / SKIPPED_FILE if datamodule.log_dir else "the log"
        log.warning("%d %s videos skipped (data.on_error=skip), listed in %s", skipped, cfg.test.split, where)
    if not len(labels):
        where = getattr(source, "samples_from", None) or f"the {cfg.test.split} split"
        raise DataError(where, f"none of its {len(views)} videos could be read (see {SKIPPED_FILE})")
    video_ids = [source.video_id(i) for i in indices.tolist()]
    return report(scores, labels, video_ids, source.classes, Path(cfg.paths.output_dir), skipped)
