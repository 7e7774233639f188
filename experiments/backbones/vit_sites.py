"""Where in a ViT block should the temporal shift go: before the attention, before the MLP, or both?

    python experiments/backbones/vit_sites.py [--scale default|small|tiny] [--parallel 2] [--out DIR]

A ViT trained from scratch on the synthetic gestures with AdamW, TSN beside the three token-shift sites,
the same seeds for each. ``default``: ViT-Tiny/16 at the default run's budget and 64x64 crops (16
tokens and the class token), exactly the ViT runs of accuracy.py, whose TSN and before-the-attention
runs it shares (the same overrides; the attention site is the one tsm.models.families gives the ViT);
``small``: ViT-Tiny's width, 4 blocks, 8x8 patches of 32x32 crops, 1,500 clips x 6 epochs. A site is
chosen the way a user adds a family: one entry of ``tsm.models.families.BLOCKS`` (here set in the
training process before the model is built).
Writes ``vit_sites_<scale>.md`` (validation and test top-1, mean and min-max over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from study import ADAMW, QUIET, ROOT, machine, summary, synthetic_overrides, train_in_process  # noqa: E402

# site -> the block submodules the shift wraps (None: TSN)
SITES = {"TSN": None, "attention": ("norm1",), "MLP": ("norm2",), "both": ("norm1", "norm2")}
VIT = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_args={img_size:32,patch_size:8,depth:4}",
    "model.optimizer.name=adamw",
    "model.optimizer.base_lr=0.004",
    "model.optimizer.weight_decay=0.05",
    "model.dropout=0.0",
]
VIT_DEFAULT = ["model.backbone=vit_tiny_patch16_224", "model.backbone_args={img_size:64}", *ADAMW]
# default scale: sites whose runs are accuracy.py's (its run directory names)
SHARED = {"TSN": "vit_tiny_patch16_224_TSN", "attention": "vit_tiny_patch16_224_TSM"}
SCALES = {
    "default": {"seeds": (1,), "model": VIT_DEFAULT, "data": [], "extra": []},
    "small": {
        "seeds": (1, 2),
        "model": VIT,
        "data": synthetic_overrides(1500, 200, 36),
        "extra": ["trainer.max_epochs=6"],
    },
    "tiny": {
        "seeds": (1,),
        "model": VIT,
        "data": synthetic_overrides(8, 4, 36),
        "extra": ["trainer.max_epochs=1", "data.batch_size=4", "data.num_segments=4"],
    },
}


def set_site(site: str) -> None:
    """In this process, ViT blocks take the shift at ``site`` (one entry of tsm.models.families.BLOCKS,
    as a user adds a family); TSN leaves the table as it is."""
    from timm.models.vision_transformer import Block

    from tsm.models.families import BLOCKS, Site

    if SITES[site] is not None:
        BLOCKS[Block] = Site(SITES[site], tokens=True)


def train_with_site(site: str, overrides: list[str]) -> None:
    """In this process: set ViT blocks' shift site, then train as src/train.py does."""
    set_site(site)
    run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
    train_in_process(overrides, run_dir)


def run(site: str, seed: int, scale_name: str, out: Path) -> dict:
    scale = SCALES[scale_name]
    run_dir = out / "runs" / f"vit_sites_{scale_name}" / f"{site}_seed{seed}"
    if scale_name == "default" and site in SHARED:
        run_dir = out / "runs" / "accuracy_default" / f"{SHARED[site]}_seed{seed}"
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        shift = ["model/shift=none" if SITES[site] is None else "model/shift=residual"]
        overrides = [*QUIET, *scale["model"], *shift, *scale["data"], *scale["extra"], f"seed={seed}"]
        overrides.append(f"hydra.run.dir={run_dir}")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--site", site, "--", *overrides], check=True, env=env, cwd=ROOT)
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=SCALES, default="default")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--site", choices=SITES, help=argparse.SUPPRESS)  # child process: train one run
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.site:
        train_with_site(args.site, args.overrides)
        return
    scale = SCALES[args.scale]
    jobs = [(site, seed) for site in SITES for seed in scale["seeds"]]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda job: run(*job, args.scale, args.out), jobs))
    by_site: dict[str, list[dict]] = {site: [] for site in SITES}
    for (site, _), metrics in zip(jobs, results, strict=True):
        by_site[site].append(metrics)
    lines = [
        f"Command: `python experiments/backbones/vit_sites.py --scale {args.scale} --parallel {args.parallel}`",
        "",
        f"Machine: {machine()}; runs {args.parallel} at a time, one torch thread each. Overrides: "
        f"`{' '.join(scale['model'] + scale['data'] + scale['extra'])}` (on the default run); "
        f"seeds {list(scale['seeds'])}.",
        "",
        "| shift site in each ViT block | val top-1 best | test top-1 |",
        "|---|---|---|",
    ]
    for site, rows in by_site.items():
        best = [r["val/acc_best"] for r in rows]
        test = [r["test/acc"] for r in rows]
        lines.append(f"| {site} | {summary(best)} | {summary(test)} |")
    text = "\n".join(lines) + "\n"
    (args.out / f"vit_sites_{args.scale}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
