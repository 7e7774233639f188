"""The temporal shift against a float64 reference written from its definition."""

import pytest
import torch
from torch import nn

from tsm.shift import TemporalShift, temporal_shift


def reference_shift(x: torch.Tensor, t: int, fold_div: int, direction: str) -> torch.Tensor:
    """Element by element from the definition, in float64."""
    nt, c, h, w = x.shape
    fold = c // fold_div
    clips = x.double().reshape(nt // t, t, c, h, w)
    out = torch.zeros_like(clips)
    for frame in range(t):
        for ch in range(c):
            if direction == "bidirectional" and ch < fold:
                source = frame + 1  # from the future
            elif direction == "bidirectional" and ch < 2 * fold:
                source = frame - 1  # from the past
            elif direction == "causal" and ch < fold:
                source = frame - 1
            else:
                source = frame
            if 0 <= source < t:
                out[:, frame, ch] = clips[:, source, ch]
    return out.reshape(nt, c, h, w)


SHAPES = [(2, 8, 16, 4, 4), (3, 5, 17, 3, 7), (1, 1, 8, 1, 1), (2, 3, 9, 5, 2)]
# (dtype, memory format): float32 NCHW, and channels_last (NHWC) in float32 and in bf16, as under bf16-mixed
LAYOUTS = [
    (torch.float32, torch.contiguous_format),
    (torch.float32, torch.channels_last),
    (torch.bfloat16, torch.channels_last),
]
LAYOUT_IDS = ["fp32", "fp32_nhwc", "bf16_nhwc"]


@pytest.mark.parametrize("dtype,memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("direction", ["bidirectional", "causal"])
@pytest.mark.parametrize("n,t,c,h,w", SHAPES)
@pytest.mark.parametrize("fold_div", [2, 4, 8])
def test_matches_reference(direction, n, t, c, h, w, fold_div, dtype, memory_format):
    """Exact in every dtype (the shift only moves values), the output in the input's memory format."""
    if c // fold_div == 0 or (direction == "bidirectional" and 2 * (c // fold_div) > c):
        pytest.skip("fold does not fit these channels")
    x = torch.randn(n * t, c, h, w).to(dtype).contiguous(memory_format=memory_format)
    out = temporal_shift(x, t, fold_div, direction)
    assert out.shape == x.shape and out.dtype == x.dtype and out.stride() == x.stride()
    torch.testing.assert_close(out.double(), reference_shift(x, t, fold_div, direction), rtol=0, atol=0)


def test_channels_last_input_gives_same_values():
    x = torch.randn(2 * 4, 16, 5, 3)
    out = temporal_shift(x.contiguous(memory_format=torch.channels_last), 4)
    torch.testing.assert_close(out, temporal_shift(x, 4), rtol=0, atol=0)


def test_input_is_not_modified():
    x = torch.randn(6, 8, 2, 2)
    before = x.clone()
    temporal_shift(x, 3)
    assert torch.equal(x, before)


def test_segments_that_do_not_divide_batch_raise():
    with pytest.raises(ValueError, match="not a multiple of num_segments=4"):
        temporal_shift(torch.randn(6, 8, 2, 2), 4)


@pytest.mark.parametrize("fold_div,channels", [(1, 8), (16, 8), (0, 8)])
def test_fold_div_that_does_not_fit_raises(fold_div, channels):
    with pytest.raises(ValueError, match="fold_div"):
        temporal_shift(torch.randn(4, channels, 2, 2), 2, fold_div)


def test_unknown_direction_raises():
    with pytest.raises(ValueError, match="direction"):
        temporal_shift(torch.randn(4, 8, 2, 2), 2, 4, "backward")


def test_wrapper_shifts_then_calls_net_and_names_it_net():
    conv = nn.Conv2d(8, 4, 1, bias=False)
    wrapped = TemporalShift(conv, num_segments=2, fold_div=4)
    x = torch.randn(4, 8, 3, 3)
    torch.testing.assert_close(wrapped(x), conv(temporal_shift(x, 2, 4)))
    assert list(wrapped.state_dict()) == ["net.weight"]


def test_exports_to_onnx_with_right_values(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class Shift(nn.Module):
        def forward(self, x):
            return temporal_shift(x, 4, 8)

    x = torch.randn(8, 16, 3, 3)
    path = tmp_path / "shift.onnx"
    torch.onnx.export(Shift(), (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    other = torch.randn(8, 16, 3, 3)  # values differ from the traced example: nothing frozen in
    (y,) = ort.InferenceSession(str(path)).run(None, {"x": other.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), temporal_shift(other, 4, 8))


@pytest.mark.parametrize("direction", ["bidirectional", "causal"])
def test_export_form_equals_the_reference(direction, monkeypatch):
    """Under ONNX export the shift is built from slices and concatenations: same values, odd shapes."""
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    x = torch.randn(2 * 3, 13, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(temporal_shift(x, 3, 4, direction), reference_shift(x, 3, 4, direction), rtol=0, atol=0)


@pytest.mark.parametrize("dtype,memory_format", [*LAYOUTS, (torch.float64, torch.contiguous_format)])
@pytest.mark.parametrize("direction", ["bidirectional", "causal"])
def test_backward_is_the_adjoint_of_the_reference(direction, dtype, memory_format):
    """<shift(x), g> == <x, shift^T(g)>: the gradient equals the reference's autograd gradient, exactly
    (which a numerical gradcheck only approximates), in the input's dtype and memory format."""
    x = torch.randn(3 * 5, 11, 2, 3).to(dtype).contiguous(memory_format=memory_format).requires_grad_(True)
    g = torch.randn(3 * 5, 11, 2, 3).to(dtype).contiguous(memory_format=memory_format)
    (grad,) = torch.autograd.grad(temporal_shift(x, 5, 4, direction), x, g)
    assert grad.dtype == dtype and grad.stride() == x.stride()
    x64 = x.detach().double().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference_shift(x64, 5, 4, direction), x64, g.double())
    torch.testing.assert_close(grad.double(), expected, rtol=0, atol=0)
