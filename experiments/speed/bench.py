"""One training step of TSM-ResNet50 in the official TSM code and in this project, interleaved.

    python -m experiments.speed.bench --official PATH [--sizes 112 224] [--batch 2] [--repeats 5] [--matmul-side 2048]
        [--out DIR]

``PATH`` is a checkout of https://github.com/mit-han-lab/temporal-shift-module (never vendored here): its
``ops.models.TSN`` is imported from there (the package is registered under its own name, ``ops``) and built as its
Kinetics script ``scripts/train_tsm_kinetics_rgb_8f.sh`` builds TSM-ResNet50 (8 segments, ``shift_div=8``,
``shift_place=blockres``, ``--npb``: every BatchNorm trained; no ImageNet weights), on input ``(B, T*3, H, W)``,
and, in a row of its own, with the partial BatchNorm its ``TSN`` class defaults to (all but the first BatchNorm
frozen). This project's TSM-ResNet50 is ``model=tsm model.backbone=resnet50`` (the residual shift, as blockres)
built as ``src/train.py`` builds it, in float32, in float32 with channels_last memory, and as
``conf/model/default.yaml`` and the default ``trainer.precision=auto`` set it up (channels_last; bf16 mixed
precision on a CPU with native bf16). A step is the forward pass of ``batch`` random clips of 8 frames, cross-
entropy over 400 classes, the backward pass and an SGD step with momentum and weight decay (no gradient clipping in
either): the official one a plain ``torch.optim.SGD`` as its ``main.py`` builds it, this project's its recipe's
(``TSMLitModule.recipe_optimizer``, one fused kernel); all of torch's threads. The candidates take turns repeat by
repeat (``experiments.common.interleaved``), so machine drift hits all alike. Writes ``results.md``: ms per step,
the ratio to the official step (--npb) at each size, and the arithmetic rate of each step (3x its forward pass's
multiply-adds, 2 FLOPs each, per second: the backward pass computes two products per forward one) beside the rate
torch reaches on this CPU in a dense square matrix product (side ``--matmul-side``, 2048) in float32 and in bf16, so
that one sees how much of the machine a step already uses (the tests' tiny run makes the side small: a CPU without
native bf16 emulates that product, at 0.3 GFLOP/s on a Zen 3 EPYC).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from experiments.common import interleaved, machine
from experiments.recipe.step_time import training_step
from tsm.benchmark import median_ms

FRAMES, CLASSES = 8, 400
MATMUL_DTYPES = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}
OFFICIAL = "official TSM code (fp32, every BatchNorm trained: its Kinetics script's --npb)"
OFFICIAL_PARTIAL_BN = "official TSM code (fp32, partial BatchNorm: its TSN class's default)"
# name -> overrides of src/train.py's config for this project's TSM-ResNet50
OURS = {
    "this project, fp32": ["trainer.precision=32-true"],
    "this project, fp32 + channels_last": ["trainer.precision=32-true", "model.channels_last=true"],
    "this project as its defaults set it up (channels_last, trainer.precision=auto)": ["model.channels_last=true"],
}
RESNET50 = ["model=tsm", "model.backbone=resnet50", "model.pretrained=false", f"data.num_classes={CLASSES}"]


def official_models(checkout: Path):
    """The checkout's ``ops.models`` module, its package registered as ``ops`` (how its own scripts import it)."""
    init = checkout / "ops" / "__init__.py"
    if not (checkout / "ops" / "models.py").is_file():
        raise SystemExit(f"--official {checkout}: no ops/models.py there; give a temporal-shift-module checkout")
    spec = importlib.util.spec_from_file_location("ops", init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["ops"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("ops.models")


def official_step(models, size: int, batch: int, partial_bn: bool) -> Callable[[], None]:
    """One SGD step of the official TSM-ResNet50 on random clips, as its main.py trains it (``partial_bn``: its
    ``--npb`` flag's opposite)."""
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its configuration
        model = models.TSN(
            CLASSES, FRAMES, "RGB", base_model="resnet50", is_shift=True, shift_div=8, shift_place="blockres",
            pretrain="none", print_spec=False, partial_bn=partial_bn,
        )  # fmt: skip
        model.train()  # with partial BatchNorm, this freezes all but the first BatchNorm, as its main.py does
    clips = torch.rand(batch, FRAMES * 3, size, size)
    labels = torch.randint(CLASSES, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)  # its script's --wd

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(clips), labels).backward()
        optimizer.step()

    return step


def matmul_gflops(dtype: torch.dtype, side: int, repeats: int) -> float:
    """GFLOP/s of one dense ``side``-cubed matrix product in ``dtype`` on all of torch's threads."""
    a, b = (torch.randn(side, side).to(dtype) for _ in range(2))
    return 2 * side**3 / median_ms(lambda: a @ b, repeats=repeats) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="a temporal-shift-module checkout")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matmul-side", type=int, default=2048, help="side of the reference matrix product")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    models = official_models(args.official.resolve())
    lines = [
        f"Command: `python -m experiments.speed.bench --official PATH --sizes {' '.join(map(str, args.sizes))} "
        f"--batch {args.batch} --repeats {args.repeats} --matmul-side {args.matmul_side}`",
        "",
        f"Machine: {machine()}. One training step of TSM-ResNet50: {args.batch} clips of {FRAMES} frames, "
        f"{CLASSES} classes, forward, cross-entropy, backward, SGD; median of {args.repeats} interleaved repeats. "
        "Ratio: to the official step at the same size as its Kinetics script trains it (every BatchNorm trained).",
        "",
        "| size | code | precision | ms per step | ratio to official | GFLOP/s |",
        "|---|---|---|---|---|---|",
    ]
    rates = {
        precision: matmul_gflops(dtype, args.matmul_side, 3 * args.repeats)
        for precision, dtype in MATMUL_DTYPES.items()
    }
    for size in args.sizes:
        steps = {name: official_step(models, size, args.batch, name == OFFICIAL_PARTIAL_BN)
                 for name in (OFFICIAL, OFFICIAL_PARTIAL_BN)}  # fmt: skip
        precisions = dict.fromkeys(steps, "32-true")
        for name, overrides in OURS.items():
            step, counts, precision = training_step([*RESNET50, *overrides, f"data.crop_size={size}"], args.batch)
            steps[name], precisions[name], macs = step, precision, counts["macs"]  # the same network in every row
        ms = interleaved(steps, args.repeats, inference=False)
        for name in steps:
            gflops = 3 * 2 * macs * args.batch / ms[name] / 1e6
            lines.append(
                f"| {size} | {name} | {precisions[name]} | {ms[name]:.0f} | {ms[name] / ms[OFFICIAL]:.2f} "
                f"| {gflops:.0f} |"
            )
    lines += [
        "",
        f"GFLOP/s: 3 x the forward pass's multiply-adds x 2 FLOPs x {args.batch} clips per step time. A dense "
        f"{args.matmul_side}x{args.matmul_side}x{args.matmul_side} matrix product on this CPU, torch, all threads: "
        + ", ".join(f"{precision} {rate:.0f} GFLOP/s" for precision, rate in rates.items())
        + ".",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
