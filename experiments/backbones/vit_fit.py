"""Which token-shift site lets a ViT learn the order of frames: before the attention, the MLP, or both?

    python experiments/backbones/vit_fit.py [--seeds 1 2 3] [--steps 750] [--clips 256] [--parallel 2] [--out DIR]

A ViT from scratch learns nothing of the synthetic gestures at the budgets this CPU allows
(vit_sites.py: every site and TSN at chance), so no site can be chosen by test accuracy there. This
measures what each site lets the network fit instead: a small ViT (ViT-Tiny's width, 4 blocks, 8x8
patches of 32x32 frames, 8 frames) trained on ``clips`` synthetic training clips *and the same clips
played backwards* with their time-reversed partner labels, so that inside each pair the order of the
frames is the only difference. The score is the order accuracy: over the clips of the non-static
classes, how often the logit of the clip's own class beats that of its partner (a tie counts a half).
TSN is exactly invariant to the order, so it scores 0.5 on every clip; a site scores above 0.5 as far
as its network has learned to use time. The same is measured on held-out clips and their reversals.
Each seed gives every arm the same initial weights (the sites add no parameters) and the same batches.
AdamW at lr 3e-4: at 1e-3 (the rate of vit_sites.py's small scale) training top-1 rose and fell back and
no arm learned the order in 3,000 steps (exploratory).

Writes ``vit_fit.md`` (the table) and ``vit_fit.png`` (training order accuracy per step).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from backbones.vit_sites import SITES, set_site  # noqa: E402  (experiments/backbones/vit_sites.py)
from study import summary  # noqa: E402

from tsm.data.sampling import segment_indices  # noqa: E402
from tsm.data.sources.synthetic import REVERSED, SyntheticGestures  # noqa: E402
from tsm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_stats, normalize  # noqa: E402
from tsm.models.factory import build_recognizer  # noqa: E402

VIT = {"img_size": 32, "patch_size": 8, "depth": 4}
SEGMENTS, FRAMES, SIZE, BATCH, LR = 8, 16, 32, 16, 3e-4
LEARNED = 0.9  # the training order accuracy whose first step the table reports
STATIC = next(k for k, partner in REVERSED.items() if k == partner)  # its own time reversal


def clips_and_reversals(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` clips of ``split`` (the middle frame of each of 8 segments) followed by the same
    clips played backwards, normalised ``(2*count, T, C, H, W)``, and their labels."""
    source = SyntheticGestures(split, {split: count}, num_frames=FRAMES, frame_size=SIZE)
    frames = segment_indices(FRAMES, SEGMENTS, train=False, rng=np.random.default_rng(0))
    mean, std = channel_stats(IMAGENET_MEAN, IMAGENET_STD)
    clips = torch.stack([normalize(source.read(i, frames).permute(0, 3, 1, 2), mean, std) for i in range(count)])
    labels = torch.tensor([source.label(i) for i in range(count)])
    partners = torch.tensor([REVERSED[int(y)] for y in labels])
    return torch.cat([clips, clips.flip(1)]), torch.cat([labels, partners])


@torch.no_grad()
def order_accuracy(net: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> float:
    """Over clips of non-static classes: how often the own class's logit beats the partner's (ties 1/2)."""
    net.eval()
    logits = torch.cat([net(part) for part in clips.split(64)])
    net.train()
    keep = labels != STATIC
    own = logits[keep].gather(1, labels[keep, None])[:, 0]
    partner = logits[keep].gather(1, torch.tensor([REVERSED[int(y)] for y in labels[keep]])[:, None])[:, 0]
    return ((own > partner).double() + 0.5 * (own == partner).double()).mean().item()


def build(site: str, seed: int) -> torch.nn.Module:
    """The small ViT with the shift at ``site`` (vit_sites.set_site), built under ``seed``."""
    set_site(site)
    shift = {"enabled": False} if SITES[site] is None else {"place": "residual"}
    torch.manual_seed(seed)
    classes = len(REVERSED)
    return build_recognizer("vit_tiny_patch16_224", classes, SEGMENTS, shift=shift, dropout=0.0, backbone_args=VIT)


def fit(site: str, seed: int, args: argparse.Namespace) -> dict:
    """Train ``args.steps`` AdamW steps of ``BATCH`` clips on one torch thread; the order accuracy on the
    training pairs every ``args.every`` steps and at the end, and on the held-out pairs at the end."""
    torch.set_num_threads(1)
    train, held_out = clips_and_reversals("train", args.clips), clips_and_reversals("val", args.held_out)
    net = build(site, seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    curve = [(0, order_accuracy(net, *train))]
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(train[1]), (BATCH,), generator=order)
        loss = F.cross_entropy(net(train[0][batch]), train[1][batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            curve.append((step, order_accuracy(net, *train)))
    learned = next((step for step, acc in curve if acc >= LEARNED), None)
    return {"train": curve[-1][1], "held_out": order_accuracy(net, *held_out), "curve": curve, "learned": learned}


def plot(results: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for site, runs in results.items():
        steps = [s for s, _ in runs[0]["curve"]]
        mean = [sum(r["curve"][i][1] for r in runs) / len(runs) for i in range(len(steps))]
        ax.plot(steps, mean, marker="o", markersize=3, label=site)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("training step (16 clips)")
    ax.set_ylabel("order accuracy on the training pairs")
    ax.set_title("small ViT from scratch: where the token shift goes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=750)
    parser.add_argument("--clips", type=int, default=256, help="training clips (each also played backwards)")
    parser.add_argument("--held-out", type=int, default=128, help="validation clips (each also played backwards)")
    parser.add_argument("--every", type=int, default=50, help="steps between two points of the curve")
    parser.add_argument("--parallel", type=int, default=2, help="arms at a time, one torch thread each")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    jobs = [(site, seed) for seed in args.seeds for site in SITES]
    start = time.time()
    with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(fit, *zip(*jobs, strict=True), [args] * len(jobs)))
    results = {site: [r for (s, _), r in zip(jobs, done, strict=True) if s == site] for site in SITES}
    lines = [
        f"Command: `python experiments/backbones/vit_fit.py --seeds {' '.join(map(str, args.seeds))} "
        f"--steps {args.steps} --clips {args.clips} --held-out {args.held_out} --parallel {args.parallel}`",
        "",
        f"Machine: {platform.machine()}, {args.parallel} arm(s) at a time on one torch thread each, torch "
        f"{torch.__version__}; {time.time() - start:.0f} s for all arms. A ViT of ViT-Tiny's width, 4 blocks, "
        f"8x8 patches of 32x32 frames, 8 frames, AdamW lr {LR} at batch {BATCH}, {args.steps} steps on "
        f"{args.clips} training clips and their time reversals; seeds {args.seeds}.",
        "",
        "Order accuracy (the own class's logit above the time-reversed partner's, over the non-static "
        "classes; TSN exactly 0.5), mean (min-max) over seeds, and the first step (of every "
        f"{args.every}) at which the training pairs reached {LEARNED} (a dash: not within the steps):",
        "",
        "| shift site in each ViT block | training clips and reversals | held-out clips and reversals | "
        f"step reaching {LEARNED} |",
        "|---|---|---|---|",
    ]
    for site, runs in results.items():
        steps = [r["learned"] if r["learned"] is not None else "-" for r in runs]
        lines.append(
            f"| {site} | {summary([r['train'] for r in runs])} | {summary([r['held_out'] for r in runs])} | "
            f"{', '.join(map(str, steps))} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "vit_fit.md").write_text(text)
    plot(results, args.out / "vit_fit.png")
    print(text)


if __name__ == "__main__":
    main()
