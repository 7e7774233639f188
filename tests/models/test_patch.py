"""The shift patcher and the recognizer over timm backbones (random weights, tiny inputs)."""

import pytest
import timm
import torch
from torch import nn

from tests.helpers.weights import randomize_norms
from tsm.models import build_recognizer
from tsm.models.patch import patch_shift
from tsm.shift import TemporalShift

TSM = {"fold_div": 8, "direction": "bidirectional", "place": "residual", "blocks": "all"}

# Residual blocks with a skip connection, counted from the architectures' definitions:
# every ResNet block; inverted residuals with stride 1 and equal in/out channels.
RESIDUAL_SHIFTS = {
    "resnet18": 8,
    "resnet50": 16,
    "resnet101": 33,
    "mobilenetv2_100": 10,
    "mobilenetv3_large_100": 10,
    "efficientnet_b0": 9,
}
ALL_BLOCKS = {"resnet18": 8, "mobilenetv2_100": 17, "mobilenetv3_large_100": 16}


def shifts_in(model: nn.Module) -> list[TemporalShift]:
    return [m for m in model.modules() if isinstance(m, TemporalShift)]


@pytest.mark.parametrize("name,expected", RESIDUAL_SHIFTS.items())
def test_residual_placement_counts_and_forward(name, expected):
    model = build_recognizer(name, num_classes=5, num_segments=4, shift=TSM).eval()
    shifts = shifts_in(model)
    assert len(shifts) == expected
    assert all(s.num_segments == 4 and s.fold_div == 8 for s in shifts)
    assert all(isinstance(s.net, nn.Conv2d) for s in shifts)
    with torch.no_grad():
        x = torch.randn(2, 4, 3, 32, 32)
        assert model(x).shape == (2, 5)
        assert model.frame_logits(x).shape == (2, 4, 5)


def test_resnet_shift_sits_before_conv1_of_every_block():
    model = build_recognizer("resnet50", 3, 8, shift=TSM)
    for stage in (model.backbone.layer1, model.backbone.layer4):
        for block in stage:
            assert isinstance(block.conv1, TemporalShift)
            assert not isinstance(block.conv2, TemporalShift)
    assert "backbone.layer1.0.conv1.net.weight" in model.state_dict()


def test_mobilenet_shift_only_in_blocks_with_skip():
    model = build_recognizer("mobilenetv2_100", 3, 8, shift=TSM)
    for stage in model.backbone.blocks:
        for block in stage:
            conv = getattr(block, "conv_pw", None) or block.conv_dw
            assert isinstance(conv, TemporalShift) == block.has_skip


@pytest.mark.parametrize("name,expected", ALL_BLOCKS.items())
def test_inplace_wraps_every_block(name, expected):
    model = build_recognizer(name, 3, 4, shift={**TSM, "place": "inplace"})
    shifts = shifts_in(model)
    assert len(shifts) == expected
    assert not any(isinstance(s.net, nn.Conv2d) for s in shifts)


def test_blocks_every_other_and_stage_list():
    every_other = build_recognizer("resnet50", 3, 4, shift={**TSM, "blocks": "every_other"})
    assert len(shifts_in(every_other)) == 2 + 2 + 3 + 2  # blocks 0, 2, ... of stages of 3, 4, 6, 3
    last_two = build_recognizer("resnet50", 3, 4, shift={**TSM, "blocks": [2, 3]})
    assert len(shifts_in(last_two)) == 6 + 3
    assert not isinstance(last_two.backbone.layer1[0].conv1, TemporalShift)


def test_blocks_last_n_counts_the_blocks_with_a_residual_branch():
    """MobileNetV2 has 10 blocks with a residual branch (the ones TSM's online demo shifts): last:10 is
    all of them; last:3 the three deepest; ResNet-18's 8 blocks all have one."""
    names = lambda blocks, backbone="mobilenetv2_100", place="residual": patch_shift(  # noqa: E731
        timm.create_model(backbone, num_classes=0), 8, place=place, blocks=blocks
    )
    assert names("last:10") == names("all") and len(names("all")) == 10
    assert names("last:3") == ["stage 4 block 2.conv_pw", "stage 5 block 1.conv_pw", "stage 5 block 2.conv_pw"]
    assert names("last:3", "resnet18") == ["stage 2 block 1.conv1", "stage 3 block 0.conv1", "stage 3 block 1.conv1"]
    assert names("last:2", "resnet18", "inplace") == ["stage 3 block 0", "stage 3 block 1"]
    for bad in ("last:0", "last:11", "last:x", "last:\u0663"):
        with pytest.raises(ValueError, match=r"N of last:N must be 1..10"):
            names(bad)


def test_bad_stage_index_and_place_raise():
    with pytest.raises(ValueError, match="outside 0..3"):
        build_recognizer("resnet18", 3, 4, shift={**TSM, "blocks": [4]})
    with pytest.raises(ValueError, match="place"):
        build_recognizer("resnet18", 3, 4, shift={**TSM, "place": "before"})
    with pytest.raises(ValueError, match="unknown model.shift keys"):
        build_recognizer("resnet18", 3, 4, shift={**TSM, "fold": 4})


def test_unknown_block_raises_naming_it_and_where():
    net = timm.create_model("resnet18", num_classes=0)
    net.layer2.append(nn.Identity())
    with pytest.raises(TypeError, match="Identity at stage 1 block 2"):
        patch_shift(net, 4)


def reversal_gap(model: nn.Module, clip: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(clip) - model(clip.flip(1))).abs().max().item()


def test_unknown_backbone_names_the_key_and_the_close_names():
    message = r"model.backbone='mobilenetv2_10' is not a timm model or i3d; did you mean .*mobilenetv2_100"
    with pytest.raises(ValueError, match=message):
        build_recognizer("mobilenetv2_10", 5, 4)
    with pytest.raises(ValueError, match=r"'resnet10t_05' .* did you mean resnet10t_050"):  # this project's backbone
        build_recognizer("resnet10t_05", 5, 4)
    assert build_recognizer("resnet10t.c3_in1k", 5, 4).num_segments == 4  # a name with timm's weight tag


def test_tsn_cannot_see_time_order_and_tsm_can():
    torch.manual_seed(0)
    clip = torch.randn(2, 8, 3, 32, 32)
    tsn = randomize_norms(build_recognizer("mobilenetv2_050", 6, 8, shift=None)).eval()
    tsm = randomize_norms(build_recognizer("mobilenetv2_050", 6, 8, shift=TSM)).eval()
    assert reversal_gap(tsn, clip) < 1e-5
    assert reversal_gap(tsm, clip) > 1e-3


@pytest.mark.parametrize("direction,sees_future", [("causal", False), ("bidirectional", True)])
def test_causal_frames_never_see_the_future(direction, sees_future):
    torch.manual_seed(0)
    model = randomize_norms(build_recognizer("resnet18", 4, 6, shift={**TSM, "direction": direction})).eval()
    clip = torch.randn(1, 6, 3, 32, 32)
    changed = clip.clone()
    changed[:, 4:] = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        gap = (model.frame_logits(clip)[:, :4] - model.frame_logits(changed)[:, :4]).abs().max().item()
    assert (gap > 1e-4) == sees_future


def test_temporal_pool_halves_frames_and_later_shifts_use_half():
    model = build_recognizer("resnet18", 4, 8, shift=TSM, temporal_pool=True).eval()
    assert model.backbone.layer1[0].conv1.num_segments == 8
    assert model.backbone.layer2.net[0].conv1.num_segments == 4
    with torch.no_grad():
        assert model.frame_logits(torch.randn(2, 8, 3, 32, 32)).shape == (2, 4, 4)
    with pytest.raises(TypeError, match="ResNets only"):
        build_recognizer("mobilenetv2_050", 4, 8, shift=TSM, temporal_pool=True)


def test_partial_bn_freezes_all_but_first_norm():
    model = build_recognizer("resnet18", 4, 4, shift=TSM, partial_bn=True).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms[0].training and norms[0].weight.requires_grad
    assert not any(n.training or n.weight.requires_grad for n in norms[1:])
    before = norms[5].running_mean.clone()
    model(torch.randn(2, 4, 3, 32, 32))
    assert torch.equal(before, norms[5].running_mean)


def test_wrong_clip_length_raises():
    model = build_recognizer("resnet18", 4, 8, shift=TSM)
    with pytest.raises(ValueError, match="T=8"):
        model(torch.randn(1, 4, 3, 32, 32))


def test_pretrained_file_loads_local_weights(tmp_path):
    source = timm.create_model("resnet18", num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_recognizer("resnet18", 4, 4, shift=TSM, pretrained_file=str(path))
    torch.testing.assert_close(model.backbone.layer1[0].conv1.net.weight, source.layer1[0].conv1.weight)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_recognizer("resnet18", 4, 4, pretrained_file=str(tmp_path / "missing.pth"))


def test_pretrained_file_of_another_width_names_the_file_and_the_shapes(tmp_path):
    path = tmp_path / "mobilenetv2_050.pth"
    torch.save(timm.create_model("mobilenetv2_050").state_dict(), path)
    with pytest.raises(ValueError, match=r"mobilenetv2_050.pth does not match the backbone.*other shapes \['conv_stem"):
        build_recognizer("mobilenetv2_100", 4, 4, shift=TSM, pretrained_file=str(path))
