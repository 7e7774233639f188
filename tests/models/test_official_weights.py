"""Loading released TSM checkpoints: random tensors in the recorded key layouts, checked against a
re-implementation of the official networks from plain torch ops (float64 for ResNet-50)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck
from torch import nn

from tests.helpers import ROOT
from tsm.errors import DataError
from tsm.models.official_weights import OFFICIAL_SHIFT, load_official_tsm
from tsm.shift import TemporalShift

# A copy of ../shared/reference/tsm_official_checkpoint_keys.json, kept with the tests.
REFERENCE = ROOT / "tests" / "helpers" / "keys" / "tsm_official_checkpoint_keys.json"
RESNET_174 = "resnet50_174cls_8seg_shift8_blockres"
RESNET_400 = "resnet50_400cls_8seg_shift8_blockres"
MOBILENET_27 = "mobilenetv2_27cls_8seg_shift8_blockres"
T = 8
# Official MobileNetV2 ``features`` indices whose depthwise conv has stride 2 (first block of the
# (c=24, s=2), (c=32, s=2), (c=64, s=2) and (c=160, s=2) groups of the inverted residual settings).
MOBILENET_STRIDE2 = {2, 4, 7, 14}


@pytest.fixture(scope="module")
def reference() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    entries = json.loads(REFERENCE.read_text())
    return {name: [(key, tuple(shape)) for key, shape in pairs] for name, pairs in entries.items()}


@pytest.fixture(scope="module")
def states(reference) -> dict[str, dict[str, torch.Tensor]]:
    """Random checkpoint state dicts (``module.`` keys), scaled so that activations stay O(1)."""
    return {name: random_state(pairs, seed) for seed, (name, pairs) in enumerate(reference.items())}


def random_state(pairs: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, (key, shape) in enumerate(pairs):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(index, dtype=torch.long)  # distinct, so tensors identify their key
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) > 1:
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5
        elif key.endswith(".weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def released(state: dict[str, torch.Tensor], entry: str) -> dict:
    """The wrapper of the released files."""
    arch = entry.split("_")[0]
    return {"epoch": 50, "arch": arch, "state_dict": state, "optimizer": {"state": {}}, "best_prec1": 71.2}


def unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("module."): value for key, value in state.items()}


def fingerprint(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.sum().item(), t.flatten()[0].item()


def assert_same_tensors(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every checkpoint tensor sits in exactly one model tensor, with nothing left on either side."""
    by_print = {fingerprint(t): t for t in state.values()}
    assert len(by_print) == len(state)
    ours = model.state_dict()
    assert len(ours) == len(state)
    for name, tensor in ours.items():
        source = by_print.pop(fingerprint(tensor), None)
        assert source is not None, f"{name} holds no checkpoint tensor"
        assert torch.equal(tensor, source), name
    assert not by_print


def check_loaded(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int) -> None:
    assert model.num_classes == num_classes
    assert not model.training and not any(m.training for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    assert_same_tensors(model, state)


@pytest.mark.parametrize(("entry", "num_classes"), [(RESNET_174, 174), (RESNET_400, 400), (MOBILENET_27, 27)])
def test_released_file_loads(states, tmp_path, entry, num_classes):
    path = tmp_path / "TSM.pth"
    torch.save(released(states[entry], entry), path)
    model = load_official_tsm(path)
    check_loaded(model, states[entry], num_classes)
    with torch.no_grad():
        logits = model(torch.randn(1, T, 3, 64, 64))
    assert logits.shape == (1, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("form", ["wrapped unprefixed", "raw prefixed", "raw unprefixed file"])
def test_other_forms_load(states, tmp_path, form):
    state = states[MOBILENET_27]
    checkpoint = {
        "wrapped unprefixed": released(unprefixed(state), MOBILENET_27),
        "raw prefixed": state,
        "raw unprefixed file": unprefixed(state),
    }[form]
    if form.endswith("file"):
        torch.save(checkpoint, tmp_path / "raw.pth")
        checkpoint = str(tmp_path / "raw.pth")
    check_loaded(load_official_tsm(checkpoint), state, 27)


def test_mobilenetv2_shifts_where_the_checkpoint_does(states):
    model = load_official_tsm(states[MOBILENET_27])
    theirs = {
        int(m.group(1)) for key in states[MOBILENET_27] if (m := re.search(r"features\.(\d+)\.conv\.0\.net\.", key))
    }
    blocks = [block for stage in model.backbone.blocks for block in stage]
    ours = {index for index, block in enumerate(blocks, start=1) if isinstance(block.conv_pw, TemporalShift)}
    assert ours == theirs == {3, 5, 6, 8, 9, 10, 12, 13, 15, 16}
    shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == len(theirs)
    assert all((s.num_segments, s.fold_div, s.direction) == (T, 8, "bidirectional") for s in shifts)


def test_resnet50_shifts_every_block(states):
    model = load_official_tsm(states[RESNET_174])
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(isinstance(b.conv1, TemporalShift) for b in blocks)
    assert sum(isinstance(m, TemporalShift) for m in model.modules()) == 16


# The official networks from plain torch ops over the checkpoint tensors (unprefixed keys).


def shift(x: torch.Tensor, fold_div: int = 8) -> torch.Tensor:
    """Bidirectional shift: the first fold takes frame t+1, the second frame t-1, zeros at the ends."""
    clips = x.view(-1, T, *x.shape[1:])
    fold = x.shape[1] // fold_div
    out = torch.zeros_like(clips)
    out[:, :-1, :fold] = clips[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return out.view_as(x)


def conv(x: torch.Tensor, sd: dict, name: str, stride: int = 1, groups: int = 1) -> torch.Tensor:
    """A bias-free conv with "same" padding; shifted first where the checkpoint wraps it in ``net``."""
    if f"{name}.net.weight" in sd:
        x, weight = shift(x), sd[f"{name}.net.weight"]
    else:
        weight = sd[f"{name}.weight"]
    return F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2, groups=groups)


def bn(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    stats = [sd[f"{name}.{p}"] for p in ("running_mean", "running_var", "weight", "bias")]
    return F.batch_norm(x, *stats, training=False, eps=1e-5)


def official_bottleneck(x: torch.Tensor, sd: dict, name: str, stride: int) -> torch.Tensor:
    out = F.relu(bn(conv(x, sd, f"{name}.conv1"), sd, f"{name}.bn1"))
    out = F.relu(bn(conv(out, sd, f"{name}.conv2", stride), sd, f"{name}.bn2"))
    out = bn(conv(out, sd, f"{name}.conv3"), sd, f"{name}.bn3")
    if f"{name}.downsample.0.weight" in sd:
        x = bn(conv(x, sd, f"{name}.downsample.0", stride), sd, f"{name}.downsample.1")
    return F.relu(out + x)


def official_resnet50(x: torch.Tensor, sd: dict) -> torch.Tensor:
    x = F.relu(bn(conv(x, sd, "base_model.conv1", 2), sd, "base_model.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for layer, depth in enumerate((3, 4, 6, 3), start=1):
        for block in range(depth):
            stride = 2 if layer > 1 and block == 0 else 1
            x = official_bottleneck(x, sd, f"base_model.layer{layer}.{block}", stride)
    return x.mean((2, 3))


def official_mobilenetv2(x: torch.Tensor, sd: dict) -> torch.Tensor:
    x = F.relu6(bn(conv(x, sd, "base_model.features.0.0", 2), sd, "base_model.features.0.1"))
    for index in range(1, 18):
        name, stride = f"base_model.features.{index}.conv", 2 if index in MOBILENET_STRIDE2 else 1
        if f"{name}.6.weight" in sd:  # expand 1x1, depthwise 3x3, project 1x1
            h = F.relu6(bn(conv(x, sd, f"{name}.0"), sd, f"{name}.1"))
            h = F.relu6(bn(conv(h, sd, f"{name}.3", stride, groups=h.shape[1]), sd, f"{name}.4"))
            h = bn(conv(h, sd, f"{name}.6"), sd, f"{name}.7")
        else:  # expand ratio 1: depthwise 3x3, project 1x1
            h = F.relu6(bn(conv(x, sd, f"{name}.0", stride, groups=x.shape[1]), sd, f"{name}.1"))
            h = bn(conv(h, sd, f"{name}.3"), sd, f"{name}.4")
        x = x + h if stride == 1 and h.shape == x.shape else h
    x = F.relu6(bn(conv(x, sd, "base_model.features.18.0"), sd, "base_model.features.18.1"))
    return x.mean((2, 3))


def official_tsm(clips: torch.Tensor, sd: dict, backbone) -> torch.Tensor:
    """Frames through the backbone, new_fc per frame, average over the segments."""
    features = backbone(clips.flatten(0, 1), sd)
    return F.linear(features, sd["new_fc.weight"], sd["new_fc.bias"]).view(clips.shape[0], T, -1).mean(1)


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Unprefixed keys, floating tensors in ``dtype``."""
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in unprefixed(state).items()}


@pytest.mark.parametrize(("block", "channels", "size", "stride"), [("layer1.0", 64, 16, 1), ("layer2.0", 256, 16, 2)])
def test_resnet_block_matches_official_block(states, block, channels, size, stride):
    model = load_official_tsm(states[RESNET_174]).double()
    layer, index = block.split(".")
    x = torch.randn(2 * T, channels, size, size, dtype=torch.float64)
    with torch.no_grad():
        ours = getattr(model.backbone, layer)[int(index)](x)
    expected = official_bottleneck(x, cast(states[RESNET_174], torch.float64), f"base_model.{block}", stride)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-8)


# MobileNetV2 runs in float32: CPU depthwise convs in float64 take seconds per layer.
@pytest.mark.parametrize(
    ("entry", "backbone", "dtype", "tolerance"),
    [(RESNET_174, official_resnet50, torch.float64, 1e-5), (MOBILENET_27, official_mobilenetv2, torch.float32, 1e-4)],
)
def test_whole_model_matches_official_network(states, entry, backbone, dtype, tolerance):
    model = load_official_tsm(states[entry]).to(dtype)
    clips = torch.rand(1, T, 3, 48, 48, dtype=dtype)
    with torch.no_grad():
        ours = model(clips)
        expected = official_tsm(clips, cast(states[entry], dtype), backbone)
    torch.testing.assert_close(ours, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


# Errors.


def test_extra_key_is_named(states):
    state = {**states[MOBILENET_27], "module.base_model.features.19.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=re.escape("base_model.features.19.0.weight")):
        load_official_tsm(state)


@pytest.mark.parametrize(
    "key", ["module.base_model.features.5.conv.4.running_var", "module.base_model.layer1.0.bn1.running_mean"]
)
def test_missing_key_is_named(states, key):
    state = dict(states[MOBILENET_27 if "features" in key else RESNET_174])
    del state[key]
    with pytest.raises(ValueError, match=re.escape(key.removeprefix("module."))):
        load_official_tsm(state)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("features.3.conv.0.net.weight", "features.3.conv.0.weight"),  # unshifted where TSM shifts
        ("features.4.conv.0.weight", "features.4.conv.0.net.weight"),  # shifted in a block without a skip
    ],
)
def test_shift_placement_mismatch_is_reported(states, old, new):
    state = {key.replace(old, new): value for key, value in states[MOBILENET_27].items()}
    with pytest.raises(ValueError, match="temporal shifts are not where"):
        load_official_tsm(state)


def test_wrong_shape_is_reported(states):
    state = {**states[MOBILENET_27], "module.base_model.features.0.1.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"features\.0\.1\.bias \(3,\) != \(32,\)"):
        load_official_tsm(state)


def test_unknown_architecture(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.encoder.0.weight": torch.zeros(2, 3)}}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))) as error:
        load_official_tsm(path)
    assert "encoder.0.weight" in str(error.value)


def test_other_resnet_depth_is_rejected():
    state = {f"base_model.layer{i}.{b}.conv3.weight": torch.zeros(1) for i in range(1, 5) for b in range(2)}
    with pytest.raises(ValueError, match="only ResNet-50"):
        load_official_tsm(state)


def test_missing_file(tmp_path):
    path = tmp_path / "missing" / "TSM.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_official_tsm(path)


def test_eval_and_init_from_accept_an_official_file(states, tmp_path):
    """``load_recognizer`` (behind src/eval.py) reads released files; ``model.init_from`` fine-tunes from one."""
    from tsm.models.checkpoints import load_recognizer
    from tsm.training.module import TSMLitModule

    path = tmp_path / "TSM_jester_mobilenetv2.pth"
    torch.save({"epoch": 1, "arch": "mobilenetv2", "state_dict": states[MOBILENET_27], "best_prec1": 0.0}, path)
    official = load_recognizer(path)
    assert official.num_classes == 27
    student = TSMLitModule("mobilenetv2_100", 5, 8, shift=OFFICIAL_SHIFT, init_from=str(path))
    theirs, ours = official.state_dict(), student.net.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if not k.startswith("fc."))
    assert ours["fc.weight"].shape == (5, 1280)
    with pytest.raises(
        ValueError, match="holds model.backbone=mobilenetv2_100 with the shift .* model=tsm model.backbo"
    ):
        TSMLitModule("resnet18", 5, 8, shift=OFFICIAL_SHIFT, init_from=str(path))


def test_weights_holding_nan_are_refused(states, tmp_path):
    """A diverged run's weights gave NaN scores, and src/eval.py reported an accuracy from them."""
    from tsm.models.checkpoints import load_recognizer

    state = {k: v.clone() for k, v in states[MOBILENET_27].items()}
    state["module.new_fc.bias"][3] = float("nan")
    torch.save({"state_dict": state}, tmp_path / "diverged.pth")
    with pytest.raises(DataError, match=r"diverged.pth: 1 weight tensors hold NaN or infinity, the first fc.bias"):
        load_recognizer(tmp_path / "diverged.pth")
