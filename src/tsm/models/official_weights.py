"""Load the checkpoints released with the TSM paper (mit-han-lab/temporal-shift-module) into a Recognizer.

The released files hold ``{"epoch", "arch", "state_dict", "optimizer", "best_prec1"}``, saved from a
``DataParallel`` model (keys start with ``module.``): the backbone under ``base_model.`` (torchvision
ResNet names, or ``features.N`` for MobileNetV2), shifted convs with ``.net`` in their names, and
the classifier as ``new_fc``. They are mapped onto ``build_recognizer``'s timm names. The keys do not
record the shift settings: the released ``shift8_blockres`` models use fold_div 8, bidirectional,
residual placement. Both sides use BatchNorm eps 1e-5 (torchvision defaults, timm's BatchNormAct2d).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from timm.models._efficientnet_blocks import DepthwiseSeparableConv
from torch import nn

from tsm.models.factory import build_recognizer
from tsm.models.recognizer import INFO_DEFAULTS, Recognizer
from tsm.models.weight_files import safe_load, tensor_mapping
from tsm.shift import TemporalShift

# The published TSM: bidirectional shift of 1/8 of the channels each way, before each residual branch.
OFFICIAL_SHIFT = {"fold_div": 8, "direction": "bidirectional", "place": "residual", "blocks": "all"}
RESNET50_DEPTHS = (3, 4, 6, 3)

# Official MobileNetV2 block layout, ``features.N.conv.<index>`` -> timm block attribute.
# The first block (expand ratio 1) is depthwise, BN, ReLU6, pointwise-linear, BN.
_SEPARABLE = {"0": "conv_dw", "1": "bn1", "3": "conv_pw", "4": "bn2"}
# Inverted residuals: expand 1x1, BN, ReLU6, depthwise, BN, ReLU6, project 1x1, BN.
_INVERTED = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "6": "conv_pwl", "7": "bn3"}


def load_official_tsm(path_or_state_dict: str | os.PathLike | Mapping, num_segments: int = 8) -> Recognizer:
    """A Recognizer in eval mode computing the same function as a released TSM checkpoint.

    Accepts a file path or an in-memory checkpoint, with or without the ``state_dict`` wrapper
    and the ``module.`` prefix. ResNet-50 and MobileNetV2 are recognised from the keys and the
    class count from ``new_fc.weight``; every key must map onto the model, none may be missing.
    Like the official models, the result takes clips of [0, 1] pixels normalised with the
    ImageNet mean and std, shape ``(B, num_segments, 3, H, W)``; ``num_segments`` is the one the
    checkpoint was trained with (``segment8`` in the released file names).
    """
    if isinstance(path_or_state_dict, Mapping):
        return official_from_state(path_or_state_dict, "the given state dict", num_segments)
    file = Path(path_or_state_dict)
    if not file.is_file():
        raise FileNotFoundError(f"no such TSM checkpoint file: {file}")
    return official_from_state(safe_load(file, "TSM checkpoint"), str(file), num_segments)


def official_from_state(checkpoint: Mapping, source: str, num_segments: int = 8) -> Recognizer:
    """:func:`load_official_tsm` for a checkpoint already read from ``source`` (named in errors)."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    state = {key.removeprefix("module."): value for key, value in tensor_mapping(state, source).items()}
    backbone, num_classes = _infer_architecture(state, source)
    model = build_recognizer(backbone, num_classes, num_segments, shift=OFFICIAL_SHIFT)
    model.load_state_dict(_map_state(state, model, backbone, source), strict=True)
    # released files record no class names
    model.info = {
        **INFO_DEFAULTS,
        "class_names": [str(i) for i in range(num_classes)],
        "num_segments": num_segments,
        "backbone": backbone,
        "shift": dict(OFFICIAL_SHIFT),
    }
    model.info_known = frozenset(model.info) - {"class_names"}  # the release's input protocol; no class names
    return model.eval()


def _infer_architecture(state: Mapping[str, torch.Tensor], source: str) -> tuple[str, int]:
    """(timm backbone name, number of classes) from the checkpoint's keys."""
    keys = list(state)
    if any(key.startswith("base_model.layer1.") for key in keys):
        depths = tuple(
            len({m.group(1) for key in keys if (m := re.match(rf"base_model\.layer{i}\.(\d+)\.conv3\.", key))})
            for i in range(1, 5)
        )
        if depths != RESNET50_DEPTHS:
            raise ValueError(
                f"{source}: a ResNet with {depths} bottleneck blocks per stage; only ResNet-50 "
                f"{RESNET50_DEPTHS} is supported"
            )
        backbone = "resnet50"
    elif any(key.startswith("base_model.features.") for key in keys):
        backbone = "mobilenetv2_100"
    else:
        raise ValueError(
            f"{source}: not a TSM ResNet-50 or MobileNetV2 checkpoint (no base_model.layer1.* or "
            f"base_model.features.* keys); first keys: {keys[:5]}"
        )
    if "new_fc.weight" not in state:
        raise ValueError(f"{source}: no classifier key new_fc.weight; first keys: {keys[:5]}")
    return backbone, state["new_fc.weight"].shape[0]


def _mobilenetv2_names(backbone: nn.Module) -> dict[str, str]:
    """Official MobileNetV2 module names -> timm ``mobilenetv2_100`` module names."""
    names = {"features.0.0": "conv_stem", "features.0.1": "bn1"}
    blocks = [(f"blocks.{s}.{b}", block) for s, stage in enumerate(backbone.blocks) for b, block in enumerate(stage)]
    for index, (name, block) in enumerate(blocks, start=1):
        layout = _SEPARABLE if isinstance(block, DepthwiseSeparableConv) else _INVERTED
        names.update({f"features.{index}.conv.{i}": f"{name}.{attr}" for i, attr in layout.items()})
    names.update({f"features.{len(blocks) + 1}.0": "conv_head", f"features.{len(blocks) + 1}.1": "bn2"})
    return names


def _split(key: str) -> tuple[str, str, str]:
    """``layer1.0.conv1.net.weight`` -> ("layer1.0.conv1", ".net", "weight"); "" when not shifted."""
    module, _, param = key.rpartition(".")
    net = ".net" if module.endswith(".net") else ""
    return module.removesuffix(net), net, param


def _map_state(
    state: Mapping[str, torch.Tensor], model: Recognizer, backbone: str, source: str
) -> dict[str, torch.Tensor]:
    """The checkpoint under the model's key names; raises ValueError unless the two match exactly."""
    modules = _mobilenetv2_names(model.backbone) if backbone == "mobilenetv2_100" else None
    expected = model.state_dict()
    origin, unused, present, shifted = {}, [], set(), set()  # origin: model key -> checkpoint key
    for key in state:
        if key.startswith("new_fc."):
            origin["fc." + key.removeprefix("new_fc.")] = key
            continue
        module, net, param = _split(key.removeprefix("base_model."))
        target = module if modules is None else modules.get(module)
        if not key.startswith("base_model.") or target is None:
            unused.append(key)
            continue
        present.add(target)
        if net:
            shifted.add(target)
        origin[f"backbone.{target}{net}.{param}"] = key

    placed = {name.removeprefix("backbone.") for name, m in model.named_modules() if isinstance(m, TemporalShift)}
    if (shifted ^ placed) & present:
        raise ValueError(
            f"{source}: temporal shifts are not where this project puts them (before the first conv of every "
            f"residual branch): only in the checkpoint before {sorted(shifted - placed)}, only in this project "
            f"before {sorted((placed - shifted) & present)} (timm module names)"
        )
    unused += [key for name, key in origin.items() if name not in expected]
    missing = [_official_key(name, modules) for name in expected if name not in origin]
    wrong_shape = [
        f"{key} {tuple(state[key].shape)} != {tuple(expected[name].shape)}"
        for name, key in origin.items()
        if name in expected and state[key].shape != expected[name].shape
    ]
    if unused or missing or wrong_shape:
        raise ValueError(
            f"{source} does not match the TSM {backbone}: unused checkpoint keys {unused}, "
            f"missing checkpoint keys {missing}, shape mismatches {wrong_shape}"
        )
    return {name: state[key] for name, key in origin.items()}


def _official_key(name: str, modules: Mapping[str, str] | None) -> str:
    """The checkpoint key (without ``module.``) that would fill the model's ``name``."""
    if name.startswith("fc."):
        return "new_fc." + name.removeprefix("fc.")
    module, net, param = _split(name.removeprefix("backbone."))
    if modules is not None:
        module = next((official for official, timm in modules.items() if timm == module), module)
    return f"base_model.{module}{net}.{param}"
