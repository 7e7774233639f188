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

from tsm.errors import DataError
from tsm.files import atomic_open
from tsm.models.weight_files import safe_load

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
    saved = read_cache(path) if path.is_file() else None
    if saved is not None:
        if saved.get("key") == key and saved.get("video_ids") == list(video_ids):
            if saved["logits"].dim() != 2 or len(saved["logits"]) != len(video_ids):
                raise DataError(path, f"its logits {tuple(saved['logits'].shape)} are not one row per video of its own")
            log.info("teacher logits of %d videos read from %s", len(video_ids), path)
            return saved["logits"]
        changed = "teacher checkpoint or view" if saved.get("key") != key else "training videos"
        log.warning("teacher logit cache %s is stale (%s changed): rebuilding it", path, changed)
    logits = build()
    with atomic_open(path) as file:  # a kill mid-write leaves the old cache or none, never half of one
        torch.save({"key": key, "video_ids": list(video_ids), "logits": logits}, file)
    log.info("teacher logits of %d videos written to %s", len(video_ids), path)
    return logits


def read_cache(path: Path) -> dict[str, Any] | None:
    """The saved cache, or None (with a warning naming the file) if a write cut short left it empty or truncated:
    it is rebuilt. Any other file is refused, not replaced: a file holding Python objects
    (:class:`~tsm.errors.UnsafeFileError`), one that is no ``torch.save`` file, one without logits."""
    try:
        saved = safe_load(path, "model.distill.cache_file")
    except DataError as error:  # a pickle asking for code is an UnsafeFileError, not caught here
        if not cut_short(path):
            raise DataError(path, f"{error.reason}; {NOT_REPLACED}") from error
        log.warning("teacher logit cache %s cannot be read (%s): rebuilding it", path, error.reason)
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("logits"), torch.Tensor):
        raise DataError(path, f"holds no teacher logits (another file?); {NOT_REPLACED}")
    return saved


NOT_REPLACED = "it is not replaced: give model.distill.cache_file another path, or delete the file"


def cut_short(path: Path) -> bool:
    """Whether an unreadable file is what a kill during a write left of a cache: empty, or the start of a
    ``torch.save`` zip archive."""
    with open(path, "rb") as file:
        head = file.read(4)
    return head in (b"", b"PK\x03\x04")
