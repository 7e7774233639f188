"""Streaming TSM against the offline model it is derived from, frame by frame."""

import pytest
import torch

from tests.helpers.compare import rel_error
from tests.helpers.weights import random_recognizer
from tsm.models import build_recognizer
from tsm.models.recognizer import Recognizer
from tsm.shift import TemporalShift
from tsm.streaming.model import StreamingShift, StreamingTSM

T, B, SIZE, CLASSES = 6, 2, 32, 5


pytestmark = pytest.mark.usefixtures("single_thread")


def causal_model(backbone: str, place: str = "residual", **kwargs) -> Recognizer:
    return random_recognizer(backbone, CLASSES, T, shift={"direction": "causal", "place": place}, **kwargs)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randn(B, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "backbone,place", [("mobilenetv2_050", "residual"), ("resnet18", "residual"), ("resnet18", "inplace")]
)
def test_step_matches_offline_frame_logits(backbone, place, clip):
    model = causal_model(backbone, place)
    with torch.no_grad():
        offline = model.frame_logits(clip)
    stream = StreamingTSM.from_model(model)
    assert stream.num_buffers == sum(isinstance(m, TemporalShift) for m in model.modules()) > 0
    online = torch.stack([stream.step(clip[:, t]) for t in range(T)], dim=1)
    assert online.shape == (B, T, CLASSES)
    assert rel_error(online, offline) <= 1e-5
    # The check has teeth: without the previous frames, frame 1 comes out different.
    stream.reset()
    assert rel_error(stream.step(clip[:, 1]), offline[:, 1]) > 1e-2


def test_a_shift_in_the_last_blocks_only_streams_too(clip):
    model = random_recognizer("mobilenetv2_050", CLASSES, T, shift={"direction": "causal", "blocks": "last:3"})
    with torch.no_grad():
        offline = model.frame_logits(clip)
    stream = StreamingTSM.from_model(model)
    assert stream.num_buffers == 3
    assert rel_error(torch.stack([stream.step(clip[:, t]) for t in range(T)], dim=1), offline) <= 1e-5


def test_reset_restarts_the_sequence(clip):
    model = causal_model("mobilenetv2_050")
    with torch.no_grad():
        offline = model.frame_logits(clip)
    stream = StreamingTSM.from_model(model)
    for t in range(3):
        stream.step(clip[:, T - 1 - t])
    stream.reset()
    online = torch.stack([stream.step(clip[:, t]) for t in range(T)], dim=1)
    assert rel_error(online, offline) <= 1e-5


def test_forward_is_functional(clip):
    stream = StreamingTSM.from_model(causal_model("resnet18"))
    frame = clip[:, 0]
    shapes = stream.buffer_shapes(frame.shape)
    assert len(shapes) == len(stream.buffer_names) == stream.num_buffers
    with torch.no_grad():
        logits, *buffers = stream(frame)
        zero_logits, *_ = stream(frame, *(torch.zeros(s) for s in shapes))
        next_logits, *_ = stream(clip[:, 1], *buffers)
    assert [tuple(b.shape) for b in buffers] == shapes
    torch.testing.assert_close(logits, zero_logits, rtol=0, atol=0)
    assert all(s.state_in is None and s.state_out is None for s in stream.shifts)  # no state kept
    stream.step(clip[:, 0])
    torch.testing.assert_close(stream.step(clip[:, 1]), next_logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="buffers"):
        stream(frame, *buffers[:-1])


def test_original_model_is_untouched_and_its_weights_shared():
    """The stream copies the module tree (its shifts differ), not the weights: no second copy of the network."""
    model = causal_model("mobilenetv2_050")
    shifts = sum(isinstance(m, TemporalShift) for m in model.modules())
    stream = StreamingTSM.from_model(model)
    assert sum(isinstance(m, TemporalShift) for m in model.modules()) == shifts
    assert not any(isinstance(m, TemporalShift) for m in stream.modules())
    assert sum(isinstance(m, StreamingShift) for m in stream.modules()) == shifts
    assert not stream.training and model.fc.weight is stream.fc.weight
    assert {id(p) for p in stream.parameters()} == {id(p) for p in model.parameters()}
    assert {id(b) for b in stream.buffers()} == {id(b) for b in model.buffers()}


def test_bidirectional_model_raises():
    model = build_recognizer("mobilenetv2_050", CLASSES, T, shift={"direction": "bidirectional"})
    with pytest.raises(ValueError, match=r"bidirectional shift .*model/shift=causal \(model.shift.direction=causal\)"):
        StreamingTSM.from_model(model)


def test_temporal_pool_raises():
    model = build_recognizer("resnet18", CLASSES, T, shift={"direction": "causal"}, temporal_pool=True)
    with pytest.raises(ValueError, match="temporal pooling"):
        StreamingTSM.from_model(model)
