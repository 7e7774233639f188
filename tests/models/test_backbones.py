"""resnet10t_050: the backbone this project registers in timm, and the from-scratch default's."""

import hydra
import pytest
import timm
import torch
from timm.models.resnet import BasicBlock

import tsm.models  # noqa: F401  (registers resnet10t_050 in timm)
from tests.helpers.config import compose_train
from tests.helpers.weights import randomize_norms
from tsm.shift import TemporalShift


def test_resnet10t_050_is_timms_resnet10t_at_half_width():
    torch.manual_seed(3)
    ours = timm.create_model("resnet10t_050", num_classes=0)
    torch.manual_seed(3)
    reference = timm.create_model("resnet10t", num_classes=0, channels=(32, 64, 128, 256), stem_width=16)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == reference_state.keys()
    assert all(torch.equal(ours_state[k], reference_state[k]) for k in ours_state)
    widths = [getattr(ours, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)]
    assert widths == [32, 64, 128, 256] and ours.num_features == 256
    # half of timm's ResNet10-T in every stage
    full = timm.create_model("resnet10t", num_classes=0)
    assert [getattr(full, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == [2 * w for w in widths]


def test_resnet10t_050_has_no_weights_to_download():
    with pytest.raises(ValueError, match="resnet10t_050 has no published weights"):
        timm.create_model("resnet10t_050", pretrained=True)


def test_default_run_shifts_the_input_of_every_resnet10t_050_block(tmp_path):
    """``python src/train.py`` builds TSM over resnet10t_050 with the in-place shift: every block input
    shifted, so its first 3x3 convolution sees three times at once; TSN (synthetic_tsn) is blind to order."""
    cfg = compose_train([], tmp_path)
    assert cfg.model.backbone == "resnet10t_050" and cfg.model.shift.place == "inplace"
    tsm = randomize_norms(hydra.utils.instantiate(cfg.model).net).eval()
    shifts = [m for m in tsm.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == 4 and all(isinstance(s.net, BasicBlock) for s in shifts)
    tsn = randomize_norms(hydra.utils.instantiate(compose_train(["+experiment=synthetic_tsn"], tmp_path).model).net)
    assert not any(isinstance(m, TemporalShift) for m in tsn.eval().modules())
    torch.manual_seed(0)
    clip = torch.randn(2, cfg.data.num_segments, 3, 40, 40)
    with torch.no_grad():
        assert (tsn(clip) - tsn(clip.flip(1))).abs().max() < 1e-5
        assert (tsm(clip) - tsm(clip.flip(1))).abs().max() > 1e-3
