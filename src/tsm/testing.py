"""The eval task: load a checkpoint, run the multi-view test protocol on a split, write the report."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from tsm.data.views import MultiViewDataset
from tsm.evaluation import report, score_videos
from tsm.weights import load_recognizer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.test.split`` of ``cfg.data`` with the configured views."""
    model = load_recognizer(cfg.ckpt_path, num_segments=cfg.data.num_segments)
    if model.num_segments != cfg.data.num_segments:
        raise ValueError(
            f"the checkpoint was trained with {model.num_segments} segments but data.num_segments="
            f"{cfg.data.num_segments}; set data.num_segments={model.num_segments}"
        )
    datamodule = hydra.utils.instantiate(cfg.data)
    source = datamodule.source(split=cfg.test.split)
    if len(source.classes) != model.num_classes:
        raise ValueError(
            f"the checkpoint has {model.num_classes} classes, the {cfg.test.split} data {len(source.classes)}"
        )
    views = MultiViewDataset(
        source,
        num_segments=cfg.data.num_segments,
        num_clips=cfg.test.num_clips,
        num_crops=cfg.test.num_crops,
        crop_size=cfg.test.crop_size,
        scale_size=cfg.test.scale_size,
        mean=cfg.data.mean,
        std=cfg.data.std,
        mode=cfg.test.mode,
        stride=cfg.test.stride,
    )
    loader = DataLoader(views, batch_size=cfg.test.batch_size, num_workers=cfg.test.num_workers)
    scores, labels, indices = score_videos(model, loader, cfg.test.average, resolve_device(cfg.device))
    video_ids = [source.video_id(i) for i in indices.tolist()]
    return report(scores, labels, video_ids, source.classes, Path(cfg.paths.output_dir))
