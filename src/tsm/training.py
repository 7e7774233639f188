"""The train task: instantiate data, model, callbacks, loggers and trainer from a config, fit, test."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import rich
import rich.syntax
from omegaconf import DictConfig, OmegaConf


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks/logger group (None gives [])."""
    if cfg is None:
        return []
    return [hydra.utils.instantiate(entry) for entry in cfg.values() if entry is not None and "_target_" in entry]


def print_config(cfg: DictConfig, output_dir: Path) -> None:
    """Print the composed config and save it, resolved, as ``config.yaml`` in the run directory."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    rich.print(rich.syntax.Syntax(text, "yaml"))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(text)


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged tensors as plain floats, finite ones only kept as numbers."""
    out = {}
    for key, value in sorted(metrics.items()):
        number = float(value)
        out[key] = number if math.isfinite(number) else None
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) as configured; writes ``metrics.json`` in the run directory and returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    print_config(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    loggers = instantiate_group(cfg.get("logger"))
    trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False
    )
    metrics: dict[str, Any] = {}
    try:
        if cfg.train:
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            metrics.update(trainer.callback_metrics)
        if cfg.test:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            metrics.update(trainer.callback_metrics)
    finally:
        for logger in loggers:
            if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
                logger.experiment.finish()
    result = plain_metrics(metrics)
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
