"""Part "loader": training clips per second of the project's datamodule over synthetic gestures, by worker count."""

from __future__ import annotations

import argparse
import time

from experiments.common import compose_train, synthetic_overrides
from experiments.gpu.table import Table
from tsm.training.task import instantiate_data


def data_overrides(args: argparse.Namespace) -> list[str]:
    """Synthetic gestures, ``args.clips`` training clips, in batches of ``args.batch`` clips of ``args.frames``
    frames cropped to ``args.size``."""
    frame = -(-args.size * 9 // 8)  # the smallest frame that experiments.common.crop_of crops to args.size
    return [
        *synthetic_overrides(args.clips, args.batch, frame),
        f"data.batch_size={args.batch}",
        f"data.num_segments={args.frames}",
    ]


def clips_per_s(args: argparse.Namespace, workers: int) -> float:
    """One epoch of the training loader, workers' start included."""
    cfg = compose_train([*data_overrides(args), f"data.num_workers={workers}", "data.log_dir=null"])
    loader = instantiate_data(cfg).train_dataloader()
    start = time.perf_counter()
    clips = sum(len(batch[0]) for batch in loader)
    return clips / (time.perf_counter() - start)


def section(args: argparse.Namespace) -> Table:
    note = (
        f"One epoch of {args.clips} training clips ({args.frames} frames rendered, augmented and cropped to "
        f"{args.size}x{args.size}, batches of {args.batch}) from ClipDataModule.train_dataloader(), as "
        "`python src/train.py` builds it; the workers' start is included."
    )
    table = Table("Loader", ["workers", "clips/s"], note)
    for workers in args.workers:
        table.add(str(workers), lambda workers=workers: [f"{clips_per_s(args, workers):.1f}"])
    return table
