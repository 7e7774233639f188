"""Shared fixtures: composing the Hydra config the way src/train.py does."""

from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from torch import nn

from tsm.training.task import instantiate_data

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
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


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def tiny_checkpoint(run_dir: Path, overrides: list[str]) -> Path:
    """A Lightning checkpoint of one training step on tiny synthetic data, as src/train.py writes them."""
    cfg = compose_train([*TINY, *overrides], run_dir)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(hydra.utils.instantiate(cfg.model), datamodule=instantiate_data(cfg))
    path = run_dir / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm affine and running stats: timm zero-inits the last BN of residual branches,
    which would make every residual branch (and so every shift in it) contribute nothing."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.weight.data = torch.rand(c, generator=generator) + 0.5
            module.bias.data = 0.2 * torch.randn(c, generator=generator)
            module.running_mean = 0.2 * torch.randn(c, generator=generator)
            module.running_var = torch.rand(c, generator=generator) + 0.5
    return model


def randomize_constants(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every parameter and buffer that timm initialises to one constant: norm scales
    and shifts, running statistics, layer scales (1e-6), ConvNeXt-V2's GRN (zeros), zero-initialised
    last norms of residual branches. Scales, variances and ones become U(0.5, 1.5), the rest N(0, 0.2^2)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        tensor = tensor.detach()
        if not tensor.is_floating_point() or tensor.numel() < 2 or not bool((tensor == tensor.flatten()[0]).all()):
            continue
        positive = name.endswith("running_var") or float(tensor.flatten()[0]) >= 0.5
        values = (
            torch.rand(tensor.shape, generator=generator) + 0.5
            if positive
            else 0.2 * torch.randn(tensor.shape, generator=generator)
        )
        with torch.no_grad():
            tensor.copy_(values)
    return model


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for the module's tests: on shared cores a thread never waits at a parallel barrier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
