"""MAC and parameter counts against the TSM paper's anchors and a hand count."""

import pytest
import torch
from torch import nn

from tsm.benchmark import count, eager_latency_ms
from tsm.models import build_recognizer

TSM = {"fold_div": 8}


@pytest.mark.parametrize(
    "backbone,classes,gmacs,mparams",
    [("resnet50", 174, 32.70, 23.86), ("mobilenetv2_100", 400, 2.40, 2.74)],
)
def test_published_anchors_within_one_percent(backbone, classes, gmacs, mparams):
    result = count(build_recognizer(backbone, classes, 8, shift=TSM), (1, 8, 3, 224, 224))
    assert result["macs"] / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert result["params"] / 1e6 == pytest.approx(mparams, rel=0.01)


def test_shift_adds_no_macs_or_params():
    shape = (1, 8, 3, 64, 64)
    tsn = count(build_recognizer("resnet18", 10, 8), shape)
    tsm = count(build_recognizer("resnet18", 10, 8, shift=TSM), shape)
    assert tsn == tsm


def test_hand_counted_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 6, 7))
    # conv: each of 4x5x6 outputs takes 3x3x3 MACs; linear: 120 x 7 MACs.
    assert count(model, (1, 3, 5, 6)) == {"macs": 4 * 5 * 6 * 27 + 120 * 7, "params": 4 * 27 + 120 * 7 + 7}


def test_latency_is_positive_and_model_mode_is_kept():
    model = nn.Linear(4, 2).train()
    assert eager_latency_ms(model, (1, 4), repeats=3) > 0
    count(model, (1, 4))
    assert model.training
    torch.testing.assert_close(model(torch.zeros(1, 4)), model.bias[None])


def test_the_benchmark_command_refuses_a_count_below_one(tmp_path):
    """Before, repeats=0 failed as statistics' 'no median for empty data' after the model was built."""
    from tests.helpers.scripts import run_forked

    done = run_forked("src/benchmark.py", ["repeats=0", "batch_size=2", f"hydra.run.dir={tmp_path}"], ok=False)
    assert "ValueError: repeats must be a positive integer, got 0" in done.stderr
