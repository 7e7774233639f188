"""Recognizers from files: checkpoints written by ``src/train.py`` and the released TSM weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def is_lightning_checkpoint(state: Any) -> bool:
    return isinstance(state, Mapping) and "pytorch-lightning_version" in state and "hyper_parameters" in state


def recognizer_from_lightning(state: Mapping[str, Any]) -> nn.Module:
    """Rebuild the training module from its saved hyper-parameters and return its network, in eval mode."""
    from tsm.module import TSMLitModule  # the module imports distillation, which imports this file

    hparams = {k: v for k, v in state["hyper_parameters"].items() if k not in ("distill", "init_from")}
    module = TSMLitModule(**hparams)
    module.load_state_dict(state["state_dict"])
    return module.net.eval()


def load_recognizer(path: str | Path, num_segments: int = 8) -> nn.Module:
    """The recognizer in a Lightning checkpoint of this project or in a released TSM ``.pth``
    (``num_segments`` applies to the latter, whose keys do not record it)."""
    from tsm.checkpoints import load_official_tsm

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such checkpoint file {file}")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if is_lightning_checkpoint(state):
        return recognizer_from_lightning(state)
    return load_official_tsm(state, num_segments=num_segments)


def init_from(net: nn.Module, path: str | Path) -> None:
    """Initialise ``net`` from a checkpoint of the same architecture (``model.init_from``); the
    classifier is kept fresh when the class counts differ, as when fine-tuning on a new dataset."""
    source = load_recognizer(path, num_segments=net.num_segments).state_dict()
    own = net.state_dict()
    missing = [k for k in own if k not in source and not k.startswith("fc.")]
    unexpected = [k for k in source if k not in own]
    wrong_shape = [k for k in own.keys() & source.keys() if own[k].shape != source[k].shape and not k.startswith("fc.")]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"model.init_from {path} does not match model.backbone/model.shift: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong_shape[:5]}"
        )
    net.load_state_dict({k: v for k, v in source.items() if own[k].shape == v.shape}, strict=False)
