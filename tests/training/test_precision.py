"""The pieces of ``trainer=gpu`` that run on a CPU: bf16 mixed precision and channels_last memory; and the
default ``trainer.precision=auto`` (bf16-mixed on a CPU with native bf16, 32-true elsewhere).

Tolerances (relative to the largest logit, against the float64 model): bf16 autocast 5e-2 (measured
2.3e-2 for MobileNetV2, 4.3e-3 for ResNet-18: bf16 keeps 8 bits of mantissa through every layer);
channels_last 1e-5 (measured 1.2e-6: only the summation order of the convolutions changes).
"""

import logging
import math
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.compare import rel_error
from tests.helpers.config import TINY, compose_train
from tests.helpers.weights import random_recognizer
from tsm.training.precision import auto_precision, cpu_has_bf16, has_depthwise, resolve_precision
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


def cpuinfo_flags() -> set[str]:
    """The CPU flags Linux reports (``flags`` on x86), read independently of torch."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to check the detection against")
    return {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split()}


def test_bf16_detection_agrees_with_the_kernel():
    flags = cpuinfo_flags()
    if not flags:
        pytest.skip("not an x86 CPU: bf16 detection is x86 only")
    assert cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize(
    ("accelerator", "cuda", "bf16", "depthwise", "expected"),
    [
        ("cpu", False, True, False, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),
        ("cpu", False, True, True, "32-true"),  # depthwise convolutions: slower in bf16 on a CPU
        ("auto", False, True, False, "bf16-mixed"),
        ("auto", True, True, False, "32-true"),  # auto picks the GPU
        ("gpu", True, True, False, "32-true"),
        ("cpu", True, True, False, "bf16-mixed"),  # asked for the CPU beside a GPU
    ],
)
def test_auto_precision_rules(accelerator, cuda, bf16, depthwise, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    precision, why = auto_precision(accelerator, depthwise, bf16=bf16)
    assert precision == expected and why


@pytest.mark.parametrize(("backbone", "depthwise"), [("resnet10t_050", False), ("mobilenetv2_050", True)])
def test_depthwise_convolutions_are_found(backbone, depthwise):
    assert has_depthwise(random_recognizer(backbone, 9, 4, shift={})) == depthwise


def test_explicit_precision_is_kept(tmp_path):
    model = random_recognizer("resnet10t_050", 9, 4, shift={})
    for precision in ("32-true", "bf16-mixed", "16-mixed"):
        cfg = compose_train([f"trainer.precision={precision}"], tmp_path)
        resolve_precision(cfg, model)
        assert cfg.trainer.precision == precision


@pytest.mark.parametrize(("backbone", "bf16"), [("resnet10t_050", True), ("mobilenetv2_050", False)])
def test_default_run_records_and_logs_the_resolved_precision(backbone, bf16, tmp_path, caplog):
    """``python src/train.py``'s config says ``auto``; its saved config.yaml and its log say what ran: bf16 for
    the default model on a CPU with bf16, float32 for MobileNetV2 (depthwise) on any CPU."""
    cfg = compose_train(["debug=fdr", "logger=csv", *TINY, f"model.backbone={backbone}"], tmp_path)
    assert cfg.trainer.precision == "auto"
    expected = "bf16-mixed" if bf16 and cpu_has_bf16() else "32-true"
    with caplog.at_level(logging.INFO, logger="tsm.training.precision"):
        metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["precision"] == expected
    assert f"trainer.precision=auto: {expected}" in caplog.text
