"""The shift on every supported timm family, CNN and transformer: random weights with every constant
timm initialises randomised (norms, layer scales, GRN), tiny clips, one torch thread."""

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
from timm.utils import reparameterize_model
from torch import nn

from tests.helpers.compare import rel_error
from tests.helpers.weights import randomize_constants
from tsm.benchmark import count
from tsm.export import to_onnx
from tsm.models import build_recognizer
from tsm.models.factory import for_deployment
from tsm.models.families import BLOCKS
from tsm.models.patch import PLACES, patch_shift
from tsm.shift import DIRECTIONS, TemporalShift
from tsm.streaming.model import StreamingTSM
from tsm.streaming.runtime import OnnxStreamSession

T, CLASSES = 4, 5
# backbone -> (frame side, timm arguments); the smallest member of each family
FAMILIES = {
    "mobilenetv4_conv_small": (32, {}),
    "mobilenetv4_hybrid_medium": (32, {}),
    "mobileone_s0": (32, {}),
    "convnext_atto": (32, {}),
    "convnextv2_atto": (32, {}),
    "regnetx_002": (32, {}),
    "regnety_002": (32, {}),
    "ghostnet_050": (32, {}),
    "ghostnetv2_100": (64, {}),  # its attention pools twice more than the network's stride
    "ghostnetv3_050": (64, {}),
    "tf_efficientnetv2_b0": (32, {}),
    "vit_tiny_patch16_224": (32, {"img_size": 32}),
    "deit_tiny_patch16_224": (32, {"img_size": 32}),
}
# where the shift goes when both placements are asked for: the one each family takes (MobileOne: its block input)
PLACE = {name: "inplace" if name.startswith("mobileone") else "residual" for name in FAMILIES}

pytestmark = pytest.mark.usefixtures("single_thread")


def family_model(name: str, direction: str | None = "causal", place: str | None = None, seed: int = 0) -> nn.Module:
    """A recognizer over ``name`` (``direction=None``: TSN) with every timm constant randomised, eval mode."""
    torch.manual_seed(seed)
    shift = None if direction is None else {"direction": direction, "place": place or PLACE[name]}
    model = build_recognizer(name, CLASSES, T, shift=shift, dropout=0.0, backbone_args=FAMILIES[name][1])
    return randomize_constants(model, seed).eval()


def clip(name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    side = FAMILIES[name][0]
    return torch.randn(batch, T, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FAMILIES)
def test_builds_with_both_directions_and_the_placements_that_fit(name):
    for direction in DIRECTIONS:
        for place in PLACES:
            if name.startswith("mobileone") and place == "residual":
                with pytest.raises(ValueError, match="MobileOneBlock.*place=inplace"):
                    family_model(name, direction, place)
                continue
            model = family_model(name, direction, place)
            shifts = [m for m in model.modules() if isinstance(m, TemporalShift)]
            assert shifts and all(s.direction == direction for s in shifts)
            with torch.no_grad():
                assert model(clip(name, batch=1)).shape == (1, CLASSES)


def order_sensitivity(model: nn.Module, x: torch.Tensor) -> float:
    """How far reversing the clips moves the logits, relative to how far other clips move them (float64)."""
    model, x = model.double(), x.double()
    with torch.no_grad():
        logits = model(x)
        return float((model(x.flip(1)) - logits).abs().max() / (model(x.roll(1, 0)) - logits).abs().max())


@pytest.mark.parametrize("name", FAMILIES)
def test_tsn_ignores_time_order_and_tsm_does_not(name):
    x = clip(name, batch=3)
    assert order_sensitivity(family_model(name, None), x) < 1e-9
    for place in PLACES if PLACE[name] == "residual" else ["inplace"]:
        assert order_sensitivity(family_model(name, "bidirectional", place), x) > 1e-3


@pytest.mark.parametrize("name", FAMILIES)
def test_tsm_adds_no_macs_and_no_parameters(name):
    shape = clip(name, batch=1).shape
    assert count(family_model(name, "bidirectional"), shape) == count(family_model(name, None), shape)


@pytest.mark.parametrize("name", FAMILIES)
def test_streaming_equals_offline_frame_logits(name):
    model = family_model(name)
    x = clip(name, batch=1)
    stream = StreamingTSM.from_model(for_deployment(model))
    with torch.no_grad():
        offline = model.frame_logits(x)[0]
        online = torch.cat([stream.step(x[:, t]) for t in range(T)])
    assert rel_error(online, offline) < 1e-5


@pytest.mark.parametrize("name", [n for n in FAMILIES if not n.startswith("deit")])  # DeiT is ViT's class
def test_onnx_clip_and_stream_match_pytorch(name, tmp_path):
    model = family_model(name)
    side = FAMILIES[name][0]
    x = clip(name, seed=3)
    with torch.no_grad():
        offline = model(x)
        frames = model.frame_logits(x[:1])[0]
    clip_file = to_onnx(model, tmp_path / "clip.onnx", mode="clip", input_size=side)
    (got,) = ort.InferenceSession(str(clip_file), providers=["CPUExecutionProvider"]).run(None, {"clip": x.numpy()})
    assert rel_error(got, offline) < 1e-4
    session = OnnxStreamSession(to_onnx(model, tmp_path / "stream.onnx", mode="stream", input_size=side))
    online = np.concatenate([session.step(x[0, t : t + 1].numpy()) for t in range(T)])
    assert rel_error(online, frames) < 1e-4


@pytest.mark.parametrize("name", ["mobileone_s0", "ghostnetv3_050"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_reparameterised_model_computes_the_training_form(name, direction):
    model = family_model(name, direction)
    folded = reparameterize_model(model)
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in model.parameters())
    assert len([m for m in folded.modules() if isinstance(m, TemporalShift)]) == len(
        [m for m in model.modules() if isinstance(m, TemporalShift)]
    )
    x = clip(name)
    with torch.no_grad():
        assert rel_error(folded(x), model(x)) < 1e-4


def test_vit_shifts_tokens_before_attention_class_token_included():
    model = family_model("vit_tiny_patch16_224", "bidirectional")
    block = model.backbone.blocks[0]
    assert isinstance(block.norm1, TemporalShift) and block.norm1.channel_dim == -1
    assert not isinstance(block.norm2, TemporalShift)
    # the class token of frame 0 reads channels of frame 1's class token: changing frame 1 changes frame 0
    x = clip("vit_tiny_patch16_224", batch=1)
    changed = x.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    with torch.no_grad():
        assert rel_error(model.frame_logits(changed)[:, 0], model.frame_logits(x)[:, 0]) > 1e-3


def test_unknown_block_and_backbone_raise_naming_them():
    with pytest.raises(TypeError, match="RepVggBlock at stage 0 block 0 of ByobNet"):
        patch_shift(timm.create_model("repvgg_a0", num_classes=0), T)
    with pytest.raises(TypeError, match="cannot insert temporal shifts into FastVit: supported timm backbones"):
        patch_shift(timm.create_model("fastvit_t8", num_classes=0), T)


def test_a_new_family_is_a_table_entry(monkeypatch):
    """The documented extension: one line for the block, and the family's stages when the class is new."""
    net = timm.create_model("repvgg_a0", num_classes=0)
    block_type = type(net.stages[0][0])
    monkeypatch.setitem(BLOCKS, block_type, BLOCKS[type(timm.create_model("mobileone_s0").stages[0][0])])
    shifted = patch_shift(net, T, place="inplace")
    assert len(shifted) == sum(len(stage) for stage in net.stages)
