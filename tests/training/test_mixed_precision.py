"""``trainer.precision=bf16-mixed`` with channels_last memory on the CPU: one training step against float32,
and a Lightning fit.

The step (train mode, 2 clips of 4 odd-sized frames, random weights) runs in bf16 autocast with NHWC memory
and is compared with the same network in float32 and NCHW memory. Tolerances were measured first (one thread,
seeds 0-4 of both models; this test runs seed 0) and set with margin:

- logits, relative to the largest: 3e-2 (measured up to 9.4e-3: bf16 keeps 8 bits of mantissa);
- loss, relative: 3e-3 (measured up to 6.9e-4);
- gradients, ``||bf16 - fp32|| / ||fp32||`` per parameter: 0.9 at most (measured up to 0.66) and 0.5 for the
  median parameter (measured up to 0.30). A random ReLU network's gradient jumps wherever a unit crosses
  zero: rounding only the clip and the weights to bf16, the step itself in float32, already moves single
  gradients by up to 0.41. A shift whose backward is the identity or the forward shift gives a median of
  0.68 or more, a largest of 1.16 or more (tried on both models).

The shift itself, in bf16 and NHWC, is checked exactly against its float64 reference in tests/test_shift.py.
"""

import copy
import statistics

import hydra
import pytest
import torch
from torch import nn

from tests.helpers.compare import rel_error
from tests.helpers.config import TINY, compose_train
from tests.helpers.weights import randomize_norms
from tsm.training.task import instantiate_data

LOGITS_TOLERANCE = 3e-2
LOSS_TOLERANCE = 3e-3
GRADIENT_TOLERANCE = 0.9
MEDIAN_GRADIENT_TOLERANCE = 0.5
CHANNELS_LAST = ["model.channels_last=true"]


def random_norms(net: nn.Module) -> nn.Module:
    """:func:`randomize_norms`, with the norms timm zero-initialises (the last of each residual branch) at
    U(0.05, 0.15): at U(0.5, 1.5) a random ResNet-50 in train mode is chaotic, its bf16 gradient nearly
    unrelated to its float32 one (cosine 0.20, against 0.997 here)."""
    zero = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()]
    randomize_norms(net)
    for norm in zero:
        norm.weight.data *= 0.1
    return net


def train_step(net: nn.Module, criterion: nn.Module, clips: torch.Tensor, labels: torch.Tensor, bf16: bool):
    """Forward and loss under autocast, as Lightning's bf16-mixed runs ``training_step``; backward outside it."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = net(clips)
        loss = criterion(logits, labels)
    loss.backward()
    return logits, loss, [p.grad for p in net.parameters()]


def distance(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.double() - expected.double()).norm() / expected.double().norm())


@pytest.mark.parametrize(
    "overrides,frame_size",
    # ResNet-50 with the default config's in-place shift, on the identity path too: a wrong shift gradient
    # reaches every gradient below it, not only through the small last norm of a residual branch
    [([], (33, 35)), (["model.backbone=resnet50"], (61, 67))],
    ids=["default", "tsm_resnet50"],
)
def test_bf16_channels_last_step_matches_fp32(overrides, frame_size, tmp_path, single_thread):
    cfg = compose_train([*TINY, *CHANNELS_LAST, "model.dropout=0", *overrides], tmp_path)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model)
    net = random_norms(module.net).train()
    reference = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(2, 4, 3, *frame_size, generator=generator)
    labels = torch.randint(0, module.hparams.num_classes, (2,), generator=generator)

    logits, loss, grads = train_step(net, module.criterion, clips, labels, bf16=True)
    logits32, loss32, grads32 = train_step(reference, module.criterion, clips, labels, bf16=False)

    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.grad.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert logits.dtype == torch.bfloat16 and all(g.dtype == torch.float32 for g in grads)
    assert rel_error(logits, logits32) <= LOGITS_TOLERANCE
    assert abs(loss.item() - loss32.item()) <= LOSS_TOLERANCE * abs(loss32.item())
    distances = [distance(g, g32) for g, g32 in zip(grads, grads32, strict=True)]
    assert max(distances) <= GRADIENT_TOLERANCE and statistics.median(distances) <= MEDIAN_GRADIENT_TOLERANCE


def test_bf16_mixed_fit_keeps_float32_channels_last_weights(tmp_path, single_thread):
    """Two steps of the default config under trainer.precision=bf16-mixed on the CPU: the forward runs in bf16,
    the parameters stay finite and float32, the conv weights in channels_last memory, and every conv and linear
    weight moves."""
    cfg = compose_train([*TINY, *CHANNELS_LAST, "trainer.precision=bf16-mixed"], tmp_path)
    module = hydra.utils.instantiate(cfg.model)
    weights = [m.weight for m in module.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    before = [w.detach().clone() for w in weights]
    logit_dtypes = []
    module.net.fc.register_forward_hook(lambda _module, _args, out: logit_dtypes.append(out.dtype))
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=instantiate_data(cfg))
    assert trainer.global_step == 2 and logit_dtypes == [torch.bfloat16] * 2
    assert all(p.dtype == torch.float32 and bool(p.isfinite().all()) for p in module.net.parameters())
    assert not any(torch.equal(w, w0) for w, w0 in zip(weights, before, strict=True))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights if w.dim() == 4)
