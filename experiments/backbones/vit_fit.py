"""Which token-shift site lets a ViT learn the order of frames: before the attention, the MLP, or both?

    python experiments/backbones/vit_fit.py [--seeds 1 2 3] [--steps 300] [--clips 96] [--out DIR]

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

Writes ``vit_fit.md`` (the table) and ``vit_fit.png`` (training order accuracy per step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import machine, summary  # noqa: E402

from tsm.data.datasets.synthetic import REVERSED, SyntheticGestures  # noqa: E402
from tsm.data.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_stats, normalize  # noqa: E402
from tsm.models.factory import build_recognizer  # noqa: E402

# site -> the ViT block submodules the shift wraps (None: TSN); the same arms as vit_sites.py
SITES = {"TSN": None, "attention": ("norm1",), "MLP": ("norm2",), "both": ("norm1", "norm2")}
VIT = {"img_size": 32, "patch_size": 8, "depth": 4}
SEGMENTS, FRAMES, SIZE, BATCH, LR = 8, 16, 32, 16, 1e-3
STATIC = REVERSED[8]  # the one class that is its own time reversal


def clips_and_reversals(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` clips of ``split`` (the middle frame of each of 8 segments) followed by the same
    clips played backwards, normalised ``(2*count, T, C, H, W)``, and their labels."""
    source = SyntheticGestures(split, {split: count}, num_frames=FRAMES, frame_size=SIZE)
    frames = [FRAMES // SEGMENTS * k + FRAMES // SEGMENTS // 2 for k in range(SEGMENTS)]
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
    """The small ViT with the shift at ``site`` (set in tsm.models.families.BLOCKS, as a user would)."""
    from timm.models.vision_transformer import Block

    from tsm.models.families import BLOCKS, Site

    BLOCKS[Block] = Site(SITES[site] or ("norm1",), tokens=True)
    shift = {"enabled": False} if SITES[site] is None else {"place": "residual"}
    torch.manual_seed(seed)
    classes = len(REVERSED)
    return build_recognizer("vit_tiny_patch16_224", classes, SEGMENTS, shift=shift, dropout=0.0, backbone_args=VIT)


def fit(site: str, seed: int, steps: int, train: tuple, held_out: tuple, every: int) -> dict:
    """Train ``steps`` AdamW steps of ``BATCH`` clips; order accuracy every ``every`` steps and at the end."""
    net = build(site, seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    order = torch.Generator().manual_seed(seed)
    curve = [(0, order_accuracy(net, *train))]
    for step in range(1, steps + 1):
        batch = torch.randint(len(train[1]), (BATCH,), generator=order)
        loss = F.cross_entropy(net(train[0][batch]), train[1][batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            curve.append((step, order_accuracy(net, *train)))
    return {"train": curve[-1][1], "held_out": order_accuracy(net, *held_out), "curve": curve}


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
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--clips", type=int, default=96, help="training clips (each also played backwards)")
    parser.add_argument("--held-out", type=int, default=96, help="validation clips (each also played backwards)")
    parser.add_argument("--every", type=int, default=25, help="steps between two points of the curve")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    train, held_out = clips_and_reversals("train", args.clips), clips_and_reversals("val", args.held_out)
    start = time.time()
    results = {site: [fit(site, s, args.steps, train, held_out, args.every) for s in args.seeds] for site in SITES}
    seeds = " ".join(map(str, args.seeds))
    lines = [
        f"Command: `python experiments/backbones/vit_fit.py --seeds {seeds} --steps {args.steps} "
        f"--clips {args.clips} --held-out {args.held_out}`",
        "",
        f"Machine: {machine()}; {time.time() - start:.0f} s for all arms. A ViT of ViT-Tiny's width, "
        f"4 blocks, 8x8 patches of 32x32 frames, 8 frames, AdamW lr {LR} at batch {BATCH}, {args.steps} steps "
        f"on {args.clips} training clips and their time reversals; seeds {args.seeds}.",
        "",
        "Order accuracy (the own class's logit above the time-reversed partner's; TSN exactly 0.5), "
        "mean (min-max) over seeds:",
        "",
        "| shift site in each ViT block | training clips and reversals | held-out clips and reversals |",
        "|---|---|---|",
    ]
    for site, runs in results.items():
        lines.append(f"| {site} | {summary([r['train'] for r in runs])} | {summary([r['held_out'] for r in runs])} |")
    text = "\n".join(lines) + "\n"
    (args.out / "vit_fit.md").write_text(text)
    plot(results, args.out / "vit_fit.png")
    print(text)


if __name__ == "__main__":
    main()
