"""This project's checkpoints: the network they record, and what using it needs.

A checkpoint written by ``src/train.py`` describes itself: its ``hyper_parameters`` rebuild the
network (no pretrained download, no backbone file: the saved weights replace them anyway) and its
``tsm_info`` entry records class names, frames per clip, input size, mean and std (see
:func:`checkpoint_info`); ``tsm_data`` is the resolved ``data`` config it was trained on (see
:func:`data_config`). Checkpoints written before ``tsm_info`` existed still load; what they lack is
filled with defaults and named in a warning. Every file is read by :func:`tsm.models.weight_files.safe_load`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import nn

from tsm.errors import DataError, UnsafeFileError
from tsm.metadata import DATA_KEY, INFO_KEY, check_info
from tsm.models.factory import build_recognizer
from tsm.models.official_weights import official_from_state
from tsm.models.recognizer import INFO_DEFAULTS
from tsm.models.weight_files import safe_load, tensor_mapping

log = logging.getLogger(__name__)

# The hyper-parameters that define the network (the rest are training settings).
ARCHITECTURE_KEYS = (
    "backbone",
    "num_classes",
    "num_segments",
    "shift",
    "dropout",
    "temporal_pool",
    "partial_bn",
    "backbone_args",
)


def is_lightning_checkpoint(state: Any) -> bool:
    return isinstance(state, Mapping) and "pytorch-lightning_version" in state and "hyper_parameters" in state


# timm.create_model arguments that read files or the network: never taken from a checkpoint
LOADING_ARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def architecture(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_recognizer`` arguments among a training module's hyper-parameters."""
    return {key: hparams[key] for key in ARCHITECTURE_KEYS if key in hparams}


def recorded_architecture(hparams: Any, source: str) -> dict[str, Any]:
    """:func:`architecture` of hyper-parameters read from ``source``, refused unless the backbone is
    ``i3d`` or a model of timm's registry (no hub name) and ``backbone_args`` load nothing."""
    if not isinstance(hparams, Mapping):
        raise UnsafeFileError(f"{source}: hyper_parameters is a {type(hparams).__name__}, not a mapping")
    arch = architecture(hparams)
    missing = [key for key in ("backbone", "num_classes", "num_segments") if key not in arch]
    if missing:
        raise DataError(
            source, f"its hyper_parameters lack {', '.join(missing)}: not a checkpoint of this project's train.py"
        )
    backbone = arch.get("backbone")
    if not isinstance(backbone, str) or not (backbone == "i3d" or timm.is_model(backbone)):
        raise UnsafeFileError(
            f"{source}: hyper_parameters.backbone={backbone!r} is not i3d or a model in timm's registry; "
            "a checkpoint's network is built from registered names only (no hub download)"
        )
    args = arch.get("backbone_args") or {}
    loading = [key for key in LOADING_ARGS if key in args] if isinstance(args, Mapping) else ["(not a mapping)"]
    if loading:
        raise UnsafeFileError(
            f"{source}: hyper_parameters.backbone_args {loading[0]} would load weights from a file or the network; "
            "a checkpoint's weights come from its own state_dict"
        )
    return arch


def checkpoint_info(state: Mapping[str, Any], source: str = "checkpoint") -> dict[str, Any]:
    """What using a checkpoint's network needs: ``class_names``, ``num_segments``, ``input_size``,
    ``scale_size``, ``mean``, ``std``, ``backbone``, ``shift``; defaults (and a warning naming them)
    for what an older checkpoint does not record."""
    hparams = state["hyper_parameters"]
    saved = dict(state.get(INFO_KEY) or {})
    info = {**INFO_DEFAULTS, **saved}
    info.setdefault("num_segments", hparams["num_segments"])
    info.setdefault("backbone", hparams["backbone"])
    info.setdefault("shift", hparams.get("shift"))
    missing = [key for key in ("class_names", *INFO_DEFAULTS) if key not in saved]
    if "class_names" not in info:
        info["class_names"] = [str(i) for i in range(hparams["num_classes"])]
    check_info(info, source, num_classes=hparams["num_classes"])
    if missing:
        log.warning(
            "%s predates self-describing checkpoints: it does not record %s; using class indices as names, "
            "input %d, scale %d and ImageNet mean and std where they are missing",
            source,
            ", ".join(missing),
            info["input_size"],
            info["scale_size"],
        )
    return info


def recognizer_from_checkpoint(state: Mapping[str, Any], source: str = "checkpoint") -> nn.Module:
    """The network of a Lightning checkpoint of this project, rebuilt from its saved architecture alone,
    in eval mode, with ``.info`` (:func:`checkpoint_info`) attached, and ``.info_known``: the keys of ``info`` the
    checkpoint records (the others are defaults)."""
    arch = recorded_architecture(state["hyper_parameters"], source)
    saved = tensor_mapping(state.get("state_dict"), source)
    if not isinstance(state.get(INFO_KEY) or {}, Mapping):
        raise DataError(source, f"its {INFO_KEY} is a {type(state[INFO_KEY]).__name__}, not a mapping")
    try:
        net = build_recognizer(**arch)
    except (TypeError, ValueError, RuntimeError) as err:  # recorded values no network takes
        raise DataError(source, f"its hyper_parameters build no network: {err}") from err
    weights = {k.removeprefix("net."): v for k, v in saved.items() if k.startswith("net.")}
    try:
        missing, unexpected = net.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # a tensor of another shape than the recorded architecture's
        mismatches = "; ".join(line.strip() for line in str(err).splitlines()[1:]) or str(err)
        raise DataError(source, f"its weights do not fit the architecture it records: {mismatches}") from err
    if missing or unexpected:
        raise ValueError(
            f"{source}: its weights do not fit the architecture it records: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    net.info = checkpoint_info(state, source)
    net.info_known = frozenset(state.get(INFO_KEY) or ())  # the rest of info is defaults (an older checkpoint)
    return net.eval()


def load_recognizer(path: str | Path, num_segments: int = 8) -> nn.Module:
    """The recognizer (eval mode, ``.info`` attached) in a Lightning checkpoint of this project or in a
    released TSM ``.pth`` (``num_segments`` applies to the latter, whose keys do not record it)."""
    state = safe_load(path, "checkpoint")
    if is_lightning_checkpoint(state):
        net = recognizer_from_checkpoint(state, str(path))
    else:
        net = official_from_state(state, str(path), num_segments)
    check_finite(net, path)
    return net


def check_finite(net: nn.Module, path: str | Path) -> None:
    """Refuse weights holding NaN or infinity (a diverged run): every score they give is NaN."""
    bad = [name for name, value in net.state_dict().items() if value.is_floating_point() and not value.isfinite().all()]
    if bad:
        raise DataError(
            path, f"{len(bad)} weight tensors hold NaN or infinity, the first {bad[0]} (a run that diverged?)"
        )


def data_config(path: str | Path) -> dict[str, Any]:
    """The resolved ``data`` config a checkpoint of this project was trained on, as read (rebuild it with
    :func:`tsm.data.recorded.datamodule_from_record`, never ``hydra.utils.instantiate``); raises for
    files that do not record it."""
    state = safe_load(path, "checkpoint")
    if not is_lightning_checkpoint(state) or DATA_KEY not in state:
        raise ValueError(
            f"{path} does not record the data it was trained on (a released .pth, or a checkpoint older than "
            f"{DATA_KEY}): name the data with +data=NAME (and data.root=DIR)"
        )
    if not isinstance(state[DATA_KEY], Mapping):
        raise UnsafeFileError(f"{path}: {DATA_KEY} is a {type(state[DATA_KEY]).__name__}, not a data config")
    return dict(state[DATA_KEY])


def init_from(net: nn.Module, path: str | Path) -> None:
    """Initialise ``net`` from a checkpoint of the same architecture (``model.init_from``); the
    classifier is kept fresh when the class counts differ, as when fine-tuning on a new dataset."""
    source_net = load_recognizer(path, num_segments=net.num_segments)
    source = source_net.state_dict()
    own = net.state_dict()
    missing = [k for k in own if k not in source and not k.startswith("fc.")]
    unexpected = [k for k in source if k not in own]
    wrong_shape = [k for k in own.keys() & source.keys() if own[k].shape != source[k].shape and not k.startswith("fc.")]
    if missing or unexpected or wrong_shape:
        held = getattr(source_net, "info", {})
        raise ValueError(
            f"model.init_from {path} holds model.backbone={held.get('backbone')} with the shift {held.get('shift')}, "
            "which this model's architecture (model.backbone, model.shift, ...) must match (a released TSM file: "
            f"model=tsm model.backbone={held.get('backbone')}): missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong_shape[:5]}"
        )
    net.load_state_dict({k: v for k, v in source.items() if own[k].shape == v.shape}, strict=False)
