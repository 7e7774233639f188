"""Recognizers from the Lightning checkpoints that ``src/train.py`` writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def is_lightning_checkpoint(state: Any) -> bool:
    return isinstance(state, Mapping) and "pytorch-lightning_version" in state and "hyper_parameters" in state


def recognizer_from_lightning(state: Mapping[str, Any]) -> nn.Module:
    """Rebuild the training module from its saved hyper-parameters and return its network, in eval mode."""
    from tsm.module import TSMLitModule  # the module imports distillation, which imports this file

    hparams = {k: v for k, v in state["hyper_parameters"].items() if k != "distill"}
    module = TSMLitModule(**hparams)
    module.load_state_dict(state["state_dict"])
    return module.net.eval()
