"""The pieces of ``trainer=gpu`` that run on a CPU: bf16 mixed precision and channels_last memory.

Tolerances (relative to the largest logit, against the float64 model): bf16 autocast 5e-2 (measured
2.3e-2 for MobileNetV2, 4.3e-3 for ResNet-18: bf16 keeps 8 bits of mantissa through every layer);
channels_last 1e-5 (measured 1.2e-6: only the summation order of the convolutions changes).
"""

import math

import pytest
import torch

from tests.helpers.compare import rel_error
from tests.helpers.config import TINY, compose_train
from tests.helpers.weights import random_recognizer
from tsm.training.task import train

BF16_TOLERANCE = 5e-2
CHANNELS_LAST_TOLERANCE = 1e-5


@pytest.mark.parametrize("backbone", ["mobilenetv2_050", "resnet18"])
def test_bf16_and_channels_last_logits_match_fp32(backbone):
    model = random_recognizer(backbone, 9, 4, shift={})
    clips = torch.randn(2, 4, 3, 33, 35)  # odd sizes
    with torch.no_grad():
        reference = model.double()(clips.double())
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(clips)
        model.to(memory_format=torch.channels_last)
        channels_last = model(clips)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert bf16.dtype == torch.bfloat16 and rel_error(bf16, reference) <= BF16_TOLERANCE
    assert rel_error(channels_last, reference) <= CHANNELS_LAST_TOLERANCE


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=gpu", "trainer.accelerator=cpu"],  # bf16-mixed, as trainer=gpu sets it
        ["trainer=gpu", "trainer.accelerator=cpu", "model.channels_last=true"],
    ],
    ids=["bf16_mixed", "bf16_mixed_channels_last"],
)
def test_gpu_trainer_config_runs_on_cpu(overrides, tmp_path):
    cfg = compose_train(["debug=fdr", "logger=csv", *TINY, *overrides], tmp_path)
    assert cfg.trainer.precision == "bf16-mixed"
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/acc"] <= 1
