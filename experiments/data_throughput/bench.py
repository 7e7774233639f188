"""Clip reading throughput per data-loader worker: frame folders, and videos read sparsely or whole.

    python -m experiments.data_throughput.bench [--clips 40] [--out experiments/data_throughput/results.md]

Builds three inputs in a temporary folder, then reads 8-frame TSN training clips (random frame
per segment, fixed seed) from them in one process, as one loader worker does:
  (a) Jester-like: a folder of 37 JPEG frames, 176x100;
  (b) Kinetics-like: 10 s of 340x256 H.264 mp4 at 30 fps, a keyframe every 60 frames;
  (c) Something-V2-like: 3 s of 427x240 VP9 webm at 12 fps (libvpx-vp9's default keyframe spacing);
  (d) a long video: 60 s (``--long-seconds``) of (b)'s kind, where demuxing every packet costs the most.
Each video is read ``sparse`` (tsm.data.decode.read_video: from the keyframe before each wanted
frame, skipping unwanted non-reference frames, RGB only for kept frames, one decoder thread; the video's
demuxed index kept from the worker's earlier reads, as across epochs; also without it), by the
peers decord and torchcodec (each opening the file per clip as a dataset does, one thread; installed
with ``pip install -e .[bench]``, torchcodec also needs FFmpeg's shared libraries), and five ways
that decode every frame and pick 8 (see :func:`read_all`). Before timing, every reader's frames are
checked against ``sparse``'s for one clip (:func:`check_same_frames`). ``+ transform`` adds the training
transform (multi-scale crop to 224, flip, normalise) to the sparse / folder read.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np
import torch
import torchvision
from PIL import Image

from experiments.common import cpu
from tsm.data import decode
from tsm.data.decode import DecodeStats, read_video, to_rgb, video_num_frames
from tsm.data.frame_folders import read_frames
from tsm.data.sampling import segment_indices
from tsm.data.transforms import ClipTransform
from tsm.data.video_index import IndexCache

SEGMENTS = 8
PEERS = ("decord (one thread)", "torchcodec (one thread, exact seeks)")
Reader = Callable[[list[int]], torch.Tensor]
# label -> (what is converted to RGB, PyAV thread_type of the decoder)
BASELINES = {
    "decode all (PyAV threads), RGB for the 8 kept": ("kept", "AUTO"),
    "decode all (PyAV threads), RGB all": ("all", "AUTO"),
    "decode all (PyAV threads), RGB all with frame.to_ndarray()": ("plain", "AUTO"),
    "decode all (one thread), RGB for the 8 kept": ("kept", "NONE"),
    "decode all (one thread), RGB all": ("all", "NONE"),
}


def scene(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of a blocky random texture panning behind a moving square, with
    mild noise: some texture and motion so the codecs do real work."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    texture = np.kron(base, np.ones((8, 8, 1)))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        shift = t % 8
        frame = texture[shift : shift + height, shift : shift + width].copy()
        x, y = (5 * t) % (width - 40), (3 * t) % (height - 40)
        frame[y : y + 40, x : x + 40] = (255 - 3 * t % 255, 80, 40)
        frames[t] = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255)
    return frames


def encode(path: Path, frames: np.ndarray, codec: str, fps: int, gop: int | None) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
            stream.options = {"sc_threshold": "0"}  # keyframes exactly every gop frames
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def read_all(path: Path, indices: list[int], convert: str, thread_type: str) -> torch.Tensor:
    """Baseline: decode every frame, pick ``indices``. ``convert``: ``kept`` converts only those to
    RGB, ``all`` every frame (both with read_video's converter), ``plain`` every frame with
    ``frame.to_ndarray()``, which sets up a new scaler per frame (what most PyAV readers do).
    ``thread_type``: PyAV's decoder threading, ``AUTO`` (frame and slice threads) or ``NONE``."""
    keep = set(indices)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        frames = {}
        for i, frame in enumerate(container.decode(stream)):
            if convert == "plain":
                frames[i] = frame.to_ndarray(format="rgb24")
            elif convert == "all" or i in keep:
                frames[i] = to_rgb(frame)
    return torch.from_numpy(np.stack([frames[i] for i in indices]))


def read_unindexed(path: Path, indices: list[int]) -> torch.Tensor:
    """``read_video`` as on a video's first read in a worker: every packet demuxed, no index kept."""
    kept, decode.INDEXES = decode.INDEXES, IndexCache(max_packets=0)
    try:
        return read_video(path, indices)
    finally:
        decode.INDEXES = kept


def decord_read(path: Path, indices: list[int]) -> torch.Tensor:
    """decord, the reader of the official TSM code's successors and of mmaction2: one thread."""
    import decord

    return torch.from_numpy(decord.VideoReader(str(path), num_threads=1).get_batch(indices).asnumpy())


def torchcodec_read(path: Path, indices: list[int]) -> torch.Tensor:
    """torchcodec (PyTorch's decoder): exact seeks, one FFmpeg thread, frames as (T, H, W, C)."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=1, dimension_order="NHWC")
    return decoder.get_frames_at(indices).data


def check_same_frames(readers: dict[str, Reader], indices: list[int], reference: str = "sparse") -> dict[str, float]:
    """Every reader's frames for ``indices`` beside ``reference``'s: the mean absolute difference per
    reader (0: identical; the codecs' YUV-to-RGB conversions may round differently). Raises when a
    reader returns other frames (a wrong seek) or another shape."""
    expected = readers[reference](indices).float()
    differences = {}
    for name, read in readers.items():
        got = read(indices).float()
        if got.shape != expected.shape:
            raise AssertionError(
                f"{name} returned frames of shape {tuple(got.shape)}, {reference} {tuple(expected.shape)}"
            )
        per_frame = (got - expected).abs().flatten(1).mean(1)
        if per_frame.max() > 3:  # a neighbouring frame differs by far more than rounding does
            raise AssertionError(
                f"{name} returned other frames than {reference}: mean |difference| {per_frame.tolist()}"
            )
        differences[name] = float(per_frame.max())
    return differences


def clips_per_second(readers: dict[str, Reader], num_frames: int, clips: int) -> dict[str, float]:
    """Clips per second of each reader over the same ``clips`` random TSN draws, the readers taking
    turns clip by clip so that load from other processes hits them alike."""
    rng = np.random.default_rng(0)
    draws = [segment_indices(num_frames, SEGMENTS, True, rng) for _ in range(clips)]
    seconds = dict.fromkeys(readers, 0.0)
    for read in readers.values():
        read(draws[0])  # warm-up
    for indices in draws:
        for name, read in readers.items():
            start = time.perf_counter()
            read(indices)
            seconds[name] += time.perf_counter() - start
    return {name: clips / total for name, total in seconds.items()}


def decoding_ceiling(stats: DecodeStats, reads: int, rates: dict[str, float]) -> str:
    """The part of a sparse read spent inside the decoder's own calls (``stats`` of the timed sparse reads,
    ``reads`` of them), and the speed-up over each peer that a reader doing nothing else would reach: the most
    any exact reader decoding the same frames can gain."""
    decoding_ms, sparse_ms = 1e3 * stats.decoding_s / reads, 1e3 / rates["sparse"]
    ceiling = " / ".join(f"{1e3 / rates[label] / decoding_ms:.1f}x" for label in PEERS)
    return (
        f"decoding alone: {decoding_ms:.1f} of sparse's {sparse_ms:.1f} ms a clip inside the decoder's calls; "
        f"a reader doing nothing else would be {ceiling} {' / '.join(PEERS)}"
    )


def named_rows(name: str, rates: dict[str, float]) -> list[tuple[str, str, float | None]]:
    """Table rows of one input: its name on the first row only."""
    return [(name if k == 0 else "", how, rate) for k, (how, rate) in enumerate(rates.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="clips read per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--long-seconds", type=int, default=60, help="length of the long video (d), even")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    load_before = os.getloadavg()[0]
    transform = ClipTransform(True, 224, 256)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jester"
        folder.mkdir()
        for i, frame in enumerate(scene(37, 176, 100), 1):
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)
        kinetics = encode(Path(tmp) / "kinetics.mp4", scene(300, 340, 256), "libx264", 30, gop=60)
        something = encode(Path(tmp) / "something.webm", scene(36, 427, 240), "libvpx-vp9", 12, gop=None)
        # a long video: the 2 s scene looped (its content does not matter to demuxing)
        long = encode(
            Path(tmp) / "long.mp4",
            np.tile(scene(60, 340, 256), (args.long_seconds // 2, 1, 1, 1)),
            "libx264",
            30,
            gop=60,
        )

        def jester(indices: list[int]) -> torch.Tensor:
            return read_frames(folder, indices, "{:05d}.jpg")

        rates = clips_per_second(
            {"folder": jester, "folder + transform": lambda i: transform(jester(i), 0, rng)}, 37, args.clips
        )
        rows += named_rows("(a) Jester-like, 37 JPEG frames 176x100", rates)
        for name, path in (
            ("(b) Kinetics-like, 10 s H.264 340x256 30 fps, GOP 60", kinetics),
            ("(c) Something-V2-like, 3 s VP9 427x240 12 fps", something),
            (f"(d) long, {args.long_seconds} s H.264 340x256 30 fps, GOP 60 (sparse and peers only)", long),
        ):
            n = video_num_frames(path)
            sparse_stats = DecodeStats()  # of the timed sparse reads (and the warm-up one)
            readers: dict[str, Reader] = {
                "sparse": lambda i, p=path, st=sparse_stats: read_video(p, i, st),
                "sparse + transform": lambda i, p=path: transform(read_video(p, i), 0, rng),
                "sparse, demuxing every packet (no kept index)": partial(read_unindexed, path),
                "decord (one thread)": partial(decord_read, path),
                "torchcodec (one thread, exact seeks)": partial(torchcodec_read, path),
            }
            baselines = {} if path == long else BASELINES  # decoding all of a long video takes seconds a clip
            readers.update(
                {label: partial(read_all, path, convert=c, thread_type=t) for label, (c, t) in baselines.items()}
            )
            frame_readers = {k: v for k, v in readers.items() if "transform" not in k}
            differences = check_same_frames(frame_readers, segment_indices(n, SEGMENTS, True, rng))
            sparse_stats.decoding_s = 0.0  # the check's read is not one of the timed clips
            rates = clips_per_second(readers, n, args.clips)
            rows += named_rows(f"{name} ({n} frames)", rates)
            speedups = " / ".join(f"{rates['sparse'] / rates[label]:.1f}x" for label in PEERS)
            rows.append(("", f"sparse speed-up over {' / '.join(PEERS)}: {speedups}", None))
            kept = rates["sparse"] / rates["sparse, demuxing every packet (no kept index)"]
            rows.append(("", f"the kept index: {kept:.2f}x the clips/s of demuxing every packet", None))
            if baselines:
                speedups = " / ".join(f"{rates['sparse'] / rates[label]:.1f}x" for label in baselines)
                rows.append(("", f"sparse speed-up over the {len(baselines)} decode-all reads: {speedups}", None))
            rounding = ", ".join(f"{k} {v:.2f}" for k, v in differences.items() if k != "sparse")
            rows.append(("", f"same frames as sparse (max per-frame mean abs difference, 0-255): {rounding}", None))
            rows.append(("", decoding_ceiling(sparse_stats, args.clips + 1, rates), None))  # + the warm-up
            stats = DecodeStats()
            read_video(path, segment_indices(n, SEGMENTS, False, rng), stats)
            centre = f"{stats.packets}/{n} packets to the decoder, {stats.seeks} seeks, {stats.demuxed}/{n} demuxed"
            rows.append(("", f"centre clip: {centre} (with the kept index)", None))

    load = f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    machine = (
        f"{platform.platform()}, {cpu()}, nproc={os.cpu_count()}, {load}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, av {av.__version__}"
    )
    lines = [
        f"Machine: {machine}. {args.clips} 8-frame TSN training clips per reader, one process, one torch thread.",
        "",
        "| input | read | clips/s per worker |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {how} | {'' if rate is None else f'{rate:.1f}'} |" for name, how, rate in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
