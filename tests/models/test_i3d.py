"""I3D teacher: checkpoint layout, shapes at several input sizes, TF SAME padding, loading."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import ROOT
from tsm.models.i3d import I3D, MaxPool3dSame, Unit3D, load_i3d

# A copy of ../shared/reference/i3d_inception_v1_checkpoint_keys.json, kept with the tests.
REFERENCE = ROOT / "tests" / "helpers" / "keys" / "i3d_inception_v1_checkpoint_keys.json"


@pytest.fixture(scope="module")
def reference_shapes() -> dict[str, tuple[int, ...]]:
    pairs = json.loads(REFERENCE.read_text())["i3d_inception_v1_400cls"]
    return {key: tuple(shape) for key, shape in pairs}


def random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape)
    return state


def tf_same_pad(size: tuple[int, ...], kernel: tuple[int, ...], stride: int) -> list[int]:
    """F.pad list from the TF definition, written independently of the module."""
    pads = []
    for n, k in zip(reversed(size), reversed(kernel), strict=True):
        out = -(-n // stride)
        total = max((out - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def test_reference_checkpoint_loads_strictly(reference_shapes):
    model = I3D()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(reference_shapes)
    assert ours == reference_shapes
    state = random_state(reference_shapes)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.Mixed_5c.b1b.conv3d.weight, state["Mixed_5c.b1b.conv3d.weight"])


@pytest.mark.parametrize(("shape", "steps"), [((1, 16, 3, 64, 64), 1), ((1, 24, 3, 64, 64), 2), ((2, 8, 3, 96, 80), 1)])
def test_forward_shapes_and_frame_logits(shape, steps):
    torch.manual_seed(0)
    model = I3D(num_classes=10).eval()
    x = torch.rand(shape) * 2 - 1
    with torch.inference_mode():
        out = model(x)
        frames = model.frame_logits(x)
    assert out.shape == (shape[0], 10)
    assert torch.isfinite(out).all()
    assert frames.shape == (shape[0], steps, 10)
    torch.testing.assert_close(frames.mean(1), out)


def test_logits_average_pairs_of_time_steps_as_the_original():
    """The original (and its PyTorch port) pools time in pairs (kernel 2, stride 1) before the logits, so the end
    steps weigh half as much as the inner ones: (1, 2, 2, 1) / 6 over four steps, not a plain mean."""
    torch.manual_seed(0)
    model = I3D(num_classes=7, width=0.25).eval()
    x = torch.rand(2, 32, 3, 48, 48) * 2 - 1
    with torch.inference_mode():
        features = model.features(x).double().mean(dim=(3, 4))  # (B, C, 4)
        out = model(x).double()
    assert features.shape[2] == 4
    pooled = (features * torch.tensor([1, 2, 2, 1], dtype=torch.float64)).sum(2) / 6
    conv = model.logits.conv3d
    expected = pooled @ conv.weight.double().flatten(1).T + conv.bias.double()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_forward_rejects_non_clip_input():
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        I3D(num_classes=5)(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("size", [(5, 9, 11), (4, 8, 7), (3, 13, 10)])
def test_conv_unit_same_padding_matches_tf(size):
    torch.manual_seed(0)
    unit = Unit3D(2, 3, kernel=(3, 5, 7), stride=2).double().eval()
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    conv = F.conv3d(F.pad(x, tf_same_pad(size, (3, 5, 7), 2)), unit.conv3d.weight, stride=2)
    expected = F.relu(conv / math.sqrt(1 + 1e-3))  # fresh BN in eval: mean 0, var 1, weight 1, bias 0
    with torch.no_grad():
        out = unit(x)
    assert out.shape[2:] == tuple(math.ceil(n / 2) for n in size)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("n", [6, 7, 8, 9, 15])
def test_max_pool_same_padding_ignores_padding(n):
    pool = MaxPool3dSame(3, 2)
    x = -1 - torch.rand(1, 1, n, n, n, dtype=torch.float64)
    expected = F.max_pool3d(F.pad(x, tf_same_pad((n, n, n), (3, 3, 3), 2), value=-math.inf), 3, 2)
    out = pool(x)
    assert out.shape[2:] == (math.ceil(n / 2),) * 3
    assert (out < 0).all()
    torch.testing.assert_close(out, expected)


def test_reset_classifier_and_load(tmp_path):
    model = I3D(num_classes=7).eval()
    x = torch.rand(1, 8, 3, 32, 32)
    model.reset_classifier(27)
    assert model.num_classes == 27
    assert model.state_dict()["logits.conv3d.bias"].shape == (27,)
    with torch.inference_mode():
        assert model(x).shape == (1, 27)
    state = model.state_dict()
    raw, wrapped = tmp_path / "raw.pt", tmp_path / "wrapped.pt"
    torch.save(state, raw)
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    for source in (raw, str(wrapped), state):
        loaded = load_i3d(source)
        assert loaded.num_classes == 27
        assert torch.equal(loaded.Mixed_4d.b2b.bn.running_var, state["Mixed_4d.b2b.bn.running_var"])
    fresh_head = load_i3d(raw, num_classes=5)
    assert fresh_head.num_classes == 5
    assert torch.equal(fresh_head.Conv3d_1a_7x7.conv3d.weight, state["Conv3d_1a_7x7.conv3d.weight"])


def test_load_errors(tmp_path):
    missing_file = tmp_path / "nowhere" / "rgb_imagenet.pt"
    with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt") as info:
        load_i3d(missing_file)
    assert str(missing_file) in str(info.value)
    state = I3D(num_classes=4).state_dict()
    del state["Mixed_3c.b3b.bn.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Mixed_3c.b3b.bn.running_mean") as info:
        load_i3d(state)
    assert "extra.weight" in str(info.value)


@pytest.mark.slow
def test_full_size_clip():
    model = I3D().eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 16, 3, 224, 224) * 2 - 1)
    assert out.shape == (1, 400)
    assert torch.isfinite(out).all()


def test_build_recognizer_i3d_trains_like_any_recognizer(tmp_path):
    """``model.backbone=i3d``: fine-tuning from a port-format file resets the classifier for the data."""
    from tsm.models import build_recognizer
    from tsm.training.optim import param_groups

    path = tmp_path / "rgb_imagenet.pt"
    torch.save(I3D().state_dict(), path)
    model = build_recognizer("i3d", 27, 16, pretrained_file=str(path), dropout=0.3)
    assert model.num_classes == 27 and model.num_segments == 16 and model.dropout.p == 0.3
    groups = {g["name"]: g for g in param_groups(model, 0.1, 1e-4, {"weight": 5.0, "bias": 10.0}, 2.0)}
    assert groups["head_weight"]["params"] == [model.logits.conv3d.weight]
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="model/shift=none"):
        build_recognizer("i3d", 27, 16, shift={"fold_div": 8})
    with pytest.raises(FileNotFoundError, match="rgb_imagenet.pt"):
        build_recognizer("i3d", 27, 16, pretrained_file=str(tmp_path / "missing.pt"))


def test_width_scales_every_layer_and_builds_from_backbone_args():
    from tsm.models import build_recognizer

    full, thin = I3D(num_classes=5), I3D(num_classes=5, width=0.25)
    for (name, a), (_, b) in zip(full.named_modules(), thin.named_modules(), strict=True):
        if isinstance(a, torch.nn.Conv3d) and name != "logits.conv3d":
            assert b.out_channels == round(a.out_channels / 4), name
    assert thin.num_features == 256 and thin.logits.conv3d.in_channels == 256
    assert full.num_features == 1024
    built = build_recognizer("i3d", 5, 16, backbone_args={"width": 0.25}).eval()
    assert built.state_dict().keys() == thin.state_dict().keys()
    with torch.inference_mode():
        assert built(torch.rand(2, 16, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="other than width"):
        build_recognizer("i3d", 5, 16, backbone_args={"depth": 2})
    with pytest.raises(ValueError, match="released I3D"):
        build_recognizer("i3d", 5, 16, pretrained_file="rgb_imagenet.pt", backbone_args={"width": 0.5})
    with pytest.raises(ValueError, match="width must be > 0"):
        I3D(width=0)
