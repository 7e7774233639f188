"""Composing the Hydra config the way src/train.py does, and a tiny checkpoint of it."""

from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from tests.helpers import ROOT
from tsm.training.task import instantiate_data

CONF_DIR = ROOT / "conf"
# Small enough for a CPU test, large enough for every stage of the pipeline.
TINY = [
    "data.source.sizes.train=8",
    "data.source.sizes.val=4",
    "data.source.sizes.test=4",
    "data.batch_size=2",
    "data.num_segments=4",
    "data.source.num_frames=6",
    "data.source.frame_size=36",
    "data.crop_size=32",
    "data.scale_size=32",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_train(overrides: list[str], run_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides and set the run directory, as ``@hydra.main``
    does (its config has no ``hydra`` node either)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def hydra_run_dir() -> str:
    """The run directory ``src/train.py`` would use now (``hydra.run.dir`` of ``conf/train.yaml``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", return_hydra_config=True).hydra.run.dir


def tiny_checkpoint(run_dir: Path, overrides: list[str]) -> Path:
    """A Lightning checkpoint of one training step on tiny synthetic data, as src/train.py writes them."""
    cfg = compose_train([*TINY, *overrides], run_dir)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(hydra.utils.instantiate(cfg.model), datamodule=instantiate_data(cfg))
    path = run_dir / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def optimizer_recipe(batch_size: int = 2) -> dict:
    """``optimizer`` and ``scheduler`` as conf/model/tsm.yaml sets them (their one home), for a TSMLitModule
    built in Python; ``batch_size`` replaces the config's ``${data.batch_size}``."""
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "tsm.yaml"), resolve=False)
    return {"optimizer": {**model["optimizer"], "batch_size": batch_size}, "scheduler": model["scheduler"]}
