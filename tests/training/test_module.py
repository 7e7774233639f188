"""The optimizer recipe: parameter groups, linear lr scaling, warm-up schedules."""

import math
from types import SimpleNamespace

import hydra
import pytest
import torch

from tests.helpers.config import compose_train
from tsm.models import build_recognizer
from tsm.training.optim import build_optimizer, fused_update, param_groups, scaled_lr, warmup_schedule

HEAD_PRETRAINED = {"weight": 5.0, "bias": 10.0}


def test_linear_scaling_rule():
    assert scaled_lr(0.01, 12288, 64) == pytest.approx(1.92)
    assert scaled_lr(0.02, 64, 128) == pytest.approx(0.01)


def test_param_groups_follow_tsm_policy():
    model = build_recognizer("resnet18", 7, 4, shift={"fold_div": 8})
    groups = {g["name"]: g for g in param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)}
    assert groups["head_weight"]["lr"] == pytest.approx(0.5) and groups["head_weight"]["weight_decay"] == 1e-4
    assert groups["head_bias"]["lr"] == pytest.approx(1.0) and groups["head_bias"]["weight_decay"] == 0
    assert groups["norms"]["weight_decay"] == 0 and groups["norms"]["lr"] == pytest.approx(0.1)
    assert groups["weights"]["weight_decay"] == 1e-4
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))
    conv_weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {id(p) for p in conv_weights} <= {id(p) for p in groups["weights"]["params"]}


def test_biases_get_their_multiplier_and_no_decay():
    model = build_recognizer("mobilenetv3_small_100", 3, 2, shift={"fold_div": 8})  # has conv biases (SE)
    groups = {g["name"]: g for g in param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)}
    assert groups["biases"]["params"] and groups["biases"]["lr"] == pytest.approx(0.2)
    assert groups["biases"]["weight_decay"] == 0


@pytest.mark.parametrize(
    ("backbone", "undecayed"),
    [
        ("convnextv2_atto", {f"backbone.stages.{s}.blocks.{b}.mlp.grn.weight" for s in range(4) for b in range(2)}),
        ("vit_tiny_patch16_224", {"backbone.cls_token", "backbone.pos_embed"}),
    ],
)
def test_scales_and_embeddings_are_not_decayed(backbone, undecayed):
    """ConvNeXt-V2's response-norm weights (one-dimensional) and a ViT's position embedding and class token (named
    by timm's no_weight_decay) were decayed like convolution weights; timm trains them without."""
    model = build_recognizer(backbone, 3, 2, shift={"fold_div": 8})
    groups = {g["name"]: g for g in param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups["scales"]["params"]} >= undecayed
    assert groups["scales"]["weight_decay"] == 0 and all(p.ndim > 1 for p in groups["weights"]["params"])
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert len(grouped) == len(set(grouped)) == len(list(model.parameters()))


def test_partial_bn_params_are_left_out():
    model = build_recognizer("resnet18", 3, 2, partial_bn=True)
    groups = {g["name"]: g for g in param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)}
    assert len(groups["norms"]["params"]) == 2  # weight and bias of the first BatchNorm


def lrs(schedule, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return out


def test_cosine_with_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    seen = lrs(warmup_schedule(opt, total_steps=14, warmup_steps=4), opt, 14)
    assert seen[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    expected = [0.5 * (1 + math.cos(math.pi * (s - 4) / 10)) for s in range(4, 14)]
    assert seen[4:] == pytest.approx(expected)


def test_step_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    seen = lrs(warmup_schedule(opt, 10, 0, name="step", milestones=(3, 6), gamma=0.1), opt, 8)
    assert seen == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="scheduler.name"):
        warmup_schedule(opt, 10, 0, name="poly")


def test_val_loss_is_the_mean_over_clips_not_batches():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from tsm.training.module import TSMLitModule

    torch.manual_seed(0)
    module = TSMLitModule("mobilenetv2_050", 3, 2, shift={"fold_div": 8}).eval()
    clips, labels = torch.randn(4, 2, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    batches = [(clips[:3], labels[:3], torch.arange(3)), (clips[3:], labels[3:], torch.tensor([3]))]
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(module, DataLoader(batches, batch_size=None))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(module(clips), labels)
    assert result["val/loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_epoch_metrics_stay_separate_after_a_perfect_first_batch():
    """A first batch with every clip right must not tie top-5 and mean class accuracy together
    (torchmetrics' compute groups merge metrics whose states match after the first update)."""
    from tsm.metrics import classification_metrics as _metrics

    torch.manual_seed(0)
    metrics = _metrics(9)
    labels = torch.arange(9)
    first = torch.randn(9, 9) + 10 * torch.nn.functional.one_hot(labels, 9)  # all right
    second = torch.randn(9, 9)
    second_labels = (second.argmax(1) + 1) % 9  # all wrong at top-1
    metrics.update(first, labels)
    metrics.update(second, second_labels)
    values = metrics.compute()
    in_top5 = (second.topk(5, dim=1).indices == second_labels[:, None]).any(1).sum().item()
    assert values["acc"].item() == pytest.approx(9 / 18)
    assert values["acc_top5"].item() == pytest.approx((9 + in_top5) / 18)
    per_class = [(1 + 0) / (1 + (second_labels == c).sum().item()) for c in range(9)]
    assert values["mean_class_acc"].item() == pytest.approx(sum(per_class) / 9)


def test_optimizer_by_name():
    model = build_recognizer("resnet18", 3, 2, shift={"fold_div": 8})
    groups = param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)
    sgd = build_optimizer(groups, 0.1, {"name": "sgd", "momentum": 0.9, "nesterov": False})  # the paper's SGD
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    groups = param_groups(model, 0.1, 1e-4, HEAD_PRETRAINED, 2.0)
    adamw = build_optimizer(groups, 0.1, {"name": "adamw", "betas": [0.9, 0.99]})
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.99)
    by_name = {g["name"]: g for g in adamw.param_groups}
    assert by_name["weights"]["weight_decay"] == 1e-4 and by_name["norms"]["weight_decay"] == 0
    with pytest.raises(ValueError, match="model.optimizer.name must be 'sgd' or 'adamw', got 'adam'"):
        build_optimizer(groups, 0.1, {"name": "adam"})


def reference_sgd(params, grads, lr, weight_decay, momentum, nesterov):
    """SGD with momentum and coupled weight decay from its definition (torch's), in float64, over several steps."""
    params, bufs = [p.double().clone() for p in params], [None] * len(params)
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            d = g.double() + weight_decay * params[i]
            bufs[i] = d if bufs[i] is None else momentum * bufs[i] + d
            params[i] -= lr * (d + momentum * bufs[i] if nesterov else bufs[i])
    return params


def reference_adamw(params, grads, lr, weight_decay, betas, eps=1e-8):
    """AdamW (decoupled decay, bias-corrected moments) from its definition, in float64, over several steps."""
    params = [p.double().clone() for p in params]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g.double()
            params[i] *= 1 - lr * weight_decay
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            denom = (v[i] / (1 - betas[1] ** t)).sqrt() + eps
            params[i] -= lr / (1 - betas[0] ** t) * m[i] / denom
    return params


@pytest.mark.parametrize(
    "opt",
    [
        {"name": "sgd", "momentum": 0.9, "nesterov": False},
        {"name": "sgd", "momentum": 0.9, "nesterov": True},
        {"name": "adamw", "betas": [0.9, 0.99]},
    ],
    ids=["sgd", "sgd-nesterov", "adamw"],
)
def test_the_recipe_optimizer_is_fused_on_the_cpu_and_updates_as_defined(opt):
    """One fused kernel updates the parameters on the CPU (no Python loop over tensors), and three steps of it
    match the optimizer's definition per parameter group (lr multipliers, decay or none), odd shapes included."""
    torch.manual_seed(0)
    model = build_recognizer("resnet10t", 5, 3, shift={"fold_div": 8})
    groups = param_groups(model, 0.05, 1e-3, HEAD_PRETRAINED, 2.0)
    optimizer = build_optimizer(groups, 0.05, opt)
    assert all(g["fused"] for g in optimizer.param_groups)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    start = [p.detach().clone() for p in params]
    grads = [[torch.randn_like(p) for p in params] for _ in range(3)]
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    i = 0
    for group in optimizer.param_groups:
        n = len(group["params"])
        group_grads = [step_grads[i : i + n] for step_grads in grads]
        if opt["name"] == "sgd":
            expected = reference_sgd(start[i : i + n], group_grads, group["lr"], group["weight_decay"], 0.9,
                                     opt["nesterov"])  # fmt: skip
        else:
            expected = reference_adamw(start[i : i + n], group_grads, group["lr"], group["weight_decay"], (0.9, 0.99))
        for p, e in zip(group["params"], expected, strict=True):
            torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)
        i += n


def test_parameters_without_fused_kernels_keep_the_loop():
    """Parameters on a device without torch's fused kernels (here the meta device) get the per-tensor update."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(3, device="meta"))]}]
    assert not fused_update(groups)
    assert not build_optimizer(groups, 0.1, {"name": "sgd", "momentum": 0.9, "nesterov": False}).defaults["fused"]


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_a_fused_optimizer_is_clipped_as_lightning_clips(algorithm, tmp_path):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimizer; the module clips it itself, as
    torch's clip functions define it, and builds no fused optimizer where an fp16 gradient scaler runs."""
    module = hydra.utils.instantiate(compose_train([], tmp_path).model)  # the default run's module
    optimizer = module.recipe_optimizer(16)
    assert optimizer.defaults["fused"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.randn_like(p)
    grads = torch.cat([p.grad.flatten() for p in params]).double()
    module.configure_gradient_clipping(optimizer, 0.5, algorithm)
    clipped = torch.cat([p.grad.flatten() for p in params]).double()
    if algorithm == "norm":
        torch.testing.assert_close(clipped, grads * 0.5 / grads.norm(), rtol=1e-5, atol=1e-7)
    else:
        torch.testing.assert_close(clipped, grads.clamp(-0.5, 0.5))
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=torch.amp.GradScaler("cpu")))
    assert not module.recipe_optimizer(16).defaults["fused"]


def test_the_optimizer_recipe_has_one_home():
    """TSMLitModule keeps no optimizer defaults of its own: without the config's, it says where they are."""
    from tsm.training.module import TSMLitModule

    with pytest.raises(ValueError, match=r"model.optimizer is not set: .*conf/model/tsm.yaml"):
        TSMLitModule("resnet18", 3, 2).configure_optimizers()
