"""Teacher logits cached per training video (``model.distill.cache=true``).

With a fixed teacher view (deterministic frames, centre crop, no flip) the teacher's logits for a
video never change, so they are computed once, saved in the run directory keyed by video id, and
looked up every epoch instead of running the teacher. The file records the SHA-256 of the teacher
checkpoint and a description of the view; when either differs, or the training videos do, the
cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from tsm.models.loading import safe_load

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the identity of a teacher checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compute_logits(
    teacher: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Sequence[Any]],
    num_videos: int,
    num_classes: int,
    device: torch.device,
) -> torch.Tensor:
    """``(num_videos, num_classes)`` float32 teacher logits from ``(clips, labels, indices)`` batches;
    rows of videos no batch carried (skipped under ``data.on_error=skip``) stay NaN."""
    logits = torch.full((num_videos, num_classes), float("nan"))
    for batch in batches:
        if not batch:  # no sample of it could be read
            continue
        clips, indices = batch[0], batch[2]
        logits[indices.cpu()] = teacher(clips.to(device)).float().cpu()
    return logits


def load_or_build(
    path: str | Path, key: dict[str, Any], video_ids: Sequence[str], build: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The cached logits at ``path`` when its ``key`` (teacher digest, view) and video ids match,
    else ``build()``'s, saved there. Rows follow ``video_ids``."""
    path = Path(path)
    if path.is_file():
        saved = safe_load(path, "model.distill.cache_file")
        if saved.get("key") == key and saved.get("video_ids") == list(video_ids):
            log.info("teacher logits of %d videos read from %s", len(video_ids), path)
            return saved["logits"]
        changed = "teacher checkpoint or view" if saved.get("key") != key else "training videos"
        log.warning("teacher logit cache %s is stale (%s changed): rebuilding it", path, changed)
    logits = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "video_ids": list(video_ids), "logits": logits}, path)
    log.info("teacher logits of %d videos written to %s", len(video_ids), path)
    return logits
