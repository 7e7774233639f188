"""Read the sampled frames of a clip, and only those, from a video file (PyAV); frame folders are read by
:mod:`tsm.data.frame_folders`.

Videos: the first read of a file in a process demuxes every packet of its video stream (no decoding),
which gives the exact frame count, the presentation order of frames (frame ``i`` is the shown packet with the
``i``-th smallest timestamp, so B-frame reordering and variable frame rates need no fps arithmetic; an MP4 edit
list's hidden packets are decoded but are no frames) and where the keyframes are; that index is kept
(:mod:`tsm.data.video_index`), so later reads of the file seek the container straight to the packets they decode.
Decoding then starts at the keyframe before each wanted frame when that keyframe lies past what has been decoded so
far (a seek), and continues forward otherwise; it stops at the packet of the last wanted frame of a run and drains
the decoder, so no frame after it is decoded. On the way, frames that no other frame refers to (most B-frames) are
skipped by the decoder (``skip_frame="NONREF"``, where it honours that packet by packet) unless they are wanted. Only
the frames kept are converted to RGB. The decoder runs single-threaded: loader workers already take one core each,
and FFmpeg's frame threads hold back one frame per thread and must all drain at every seek; with
the cores busy, as in training, they made sparse reads 1.8x slower (experiments/data_throughput).

Frames come out as FFmpeg shows them: from the video stream it picks, turned upright by the stream's rotation.
Every failure to read a sample raises :class:`DataError`, naming the file and the reason; so does a frame the
decoder flags corrupt (damage it conceals), but damage that decodes as valid data cannot be noticed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from tsm.data.video_index import INDEXES, IndexMismatch, PacketIndex, SeekingPackets, stamp
from tsm.errors import DataError
from tsm.files import Signature
from tsm.rotation import upright

VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv", ".ogv")
# A file's packets may end this much before its header's duration (rounding of durations) before it counts as
# truncated: 1 frame plus 1%.
TRUNCATION_SLACK = (1, 0.01)
# Decoders that honour skip_frame packet by packet (FFmpeg's names), checked frame by frame against decoding every
# frame (tests/data/test_decode.py); others (libdav1d reads it once, when it opens) decode every frame.
SKIPS_NONREF = frozenset({"h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video", "vp8", "vp9"})
# The shortest frame side read: training's multi-scale crop keeps int(side x scale) pixels, so a 1-pixel
# frame crops to nothing (a bare RuntimeError in the transforms, out of on_error's reach); 8 keeps every
# crop scale down to 1/8 non-empty (TSM's go down to 0.66), and no dataset's videos come near it.
MIN_SIDE = 8
# One RGB converter per thread: a frame's own to_ndarray() sets up a new scaler each time (~3 ms).
# It runs single-threaded: a scaler's thread pool would not survive a fork into a loader worker.
_local = threading.local()


ON_ERROR = ("raise", "skip")  # what data.on_error may say about a sample or annotation line that cannot be used


def check_on_error(on_error: str) -> str:
    """``on_error`` itself, after checking it is one of :data:`ON_ERROR`."""
    if on_error not in ON_ERROR:
        raise ValueError(f"data.on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


@dataclass
class DecodeStats:
    """What :func:`read_video` did: packets read from the file (``demuxed``), packets sent to the decoder
    (including the non-reference ones it skips), keyframe jumps (seeks) and the seconds spent inside the
    decoder's own calls (``decoding_s``: what a read cannot go below without decoding fewer frames)."""

    demuxed: int = 0
    packets: int = 0
    seeks: int = 0
    decoding_s: float = 0.0


def error_reason(err: Exception) -> str:
    """An FFmpeg/OS error's reason without the file name it repeats (else the error's text or type)."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DataError(path, "video file not found")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot open video: {error_reason(err)}") from err


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The video stream FFmpeg would pick (not a cover image stored as the first stream)."""
    if not container.streams.video:
        raise DataError(path, "no video stream")
    stream = container.streams.best("video")
    stream.thread_type = "NONE"
    return stream


def _header_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """How long the header says the stream lasts: the stream's duration, else the container's less its start
    (Matroska counts the start in it; where that leaves nothing, the duration itself); None if it says neither."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream.metadata.get("DURATION", ""))  # Matroska's per-stream end (audio may run longer)
    if tagged is not None and stream.time_base:
        after_start = tagged - float(max(stream.start_time or 0, 0) * stream.time_base)
        return after_start if after_start > 0 else tagged
    if container.duration:
        after_start = container.duration - max(container.start_time or 0, 0)
        return (after_start if after_start > 0 else container.duration) / av.time_base
    return None


def _tag_seconds(tag: str) -> float | None:
    """A Matroska ``DURATION`` tag (``00:00:04.007000000``) in seconds; None if there is none or it does not parse."""
    parts = tag.split(":")
    try:
        return float(int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])) if len(parts) == 3 else None
    except ValueError:
        return None


def _demux(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> list[av.Packet]:
    """Every packet of ``stream`` with data; a file whose packets end clearly before its header's duration is
    truncated (durations, not counts: a header's count may include an edit list's hidden pre-roll or an AVI's
    dropped frames, and a frame rate says nothing of a variable-rate video's count)."""
    try:  # all but the empty packets: the one that ends demuxing, an AVI's dropped frames
        packets = [p for p in container.demux(stream) if p.size]
    except (av.FFmpegError, OSError) as err:
        raise DataError(path, f"cannot demux video: {error_reason(err)}") from err
    if not packets:
        raise DataError(path, "truncated video: no video packets")
    expected, stamps = _header_seconds(container, stream), [stamp(p) for p in packets]
    if expected is None or stream.time_base is None or None in stamps:
        return packets  # nothing to compare (PacketIndex refuses packets without timestamps)
    last = max(packets, key=stamp)
    frame = float((last.duration or 0) * stream.time_base) or (1 / float(stream.average_rate or 25))
    found = float((stamp(last) - min(stamps)) * stream.time_base) + frame
    absolute, relative = TRUNCATION_SLACK
    if found < expected * (1 - relative) - absolute * frame:
        raise DataError(path, f"truncated video: {found:.2f} s of frames in the file, {expected:.2f} s in its header")
    return packets


def _index_afresh(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path, signature: Signature
) -> tuple[list[av.Packet], PacketIndex]:
    """Every packet of ``stream`` (:func:`_demux`) and their index, kept for later reads of the file."""
    packets = _demux(container, stream, path)
    index = PacketIndex.of(packets, path)
    INDEXES.put(path, signature, index)
    return packets, index


def _signature(path: Path) -> Signature:
    try:
        return INDEXES.signature(path)
    except FileNotFoundError as err:
        raise DataError(path, "video file not found") from err
    except (OSError, ValueError) as err:  # ValueError: a NUL character in the path
        raise DataError(path, f"cannot open video: {error_reason(err)}") from err


def video_num_frames(path: str | os.PathLike) -> int:
    """Frames in a video (the shown ones), counted by demuxing its packets, whose index is kept for the reads that
    follow (a header's count may include an edit list's hidden pre-roll or an AVI's dropped frames)."""
    path = Path(path)
    signature = _signature(path)
    index = INDEXES.get(path, signature)
    if index is None:
        with _open(path) as container:
            index = _index_afresh(container, _video_stream(container, path), path, signature)[1]
    return len(index)


def overshoot_allowed(num_frames: int) -> int:
    """How many frames past a video's last an annotated frame count may reach: tools count a few frames apart
    (2, or 2% of a long video)."""
    return max(2, num_frames // 50)


def read_video(
    path: str | os.PathLike, indices: Sequence[int], stats: DecodeStats | None = None, num_frames: int | None = None
) -> torch.Tensor:
    """Frames ``indices`` (0-based, any order, repeats allowed) of a video as uint8 ``(T, H, W, 3)``.

    ``num_frames``, the video's frame count as its annotation gives it, may exceed the frames the video has by
    :func:`overshoot_allowed` (a count from another tool, a frame or two above this decoder's): indices past the last
    frame read the last frame; a larger count, or an index further out, is a :class:`DataError` (an annotation for
    a longer video), whichever frames a read samples. A video read before in this process is not demuxed again: its
    kept index (:mod:`tsm.data.video_index`) seeks straight to the packets wanted.
    """
    path = Path(path)
    stats = stats if stats is not None else DecodeStats()
    signature = _signature(path)
    index = INDEXES.get(path, signature)
    if index is not None:
        try:
            return _read(path, indices, stats, index, signature, num_frames)
        except IndexMismatch:  # the file's packets are not the indexed ones: index it again
            pass
    return _read(path, indices, stats, None, signature, num_frames)


def _read(
    path: Path,
    indices: Sequence[int],
    stats: DecodeStats,
    index: PacketIndex | None,
    signature: Signature,
    num_frames: int | None,
) -> torch.Tensor:
    """:func:`read_video` seeking by ``index``, or (None) demuxing every packet and keeping their index."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        if index is None:
            packets, index = _index_afresh(container, stream, path, signature)
            stats.demuxed += len(packets)
        elif index.distinct:
            packets = SeekingPackets(container, stream, index)
        else:  # frames told apart by their order alone: decoded from the first packet
            packets = _demux(container, stream, path)
        last = max([int(i) + 1 for i in indices] + [num_frames or 0])
        if last > len(index) + overshoot_allowed(len(index)):
            raise DataError(
                path,
                f"{last} frames are wanted and the video has {len(index)}: its annotation (a list file's frame "
                "count?) describes a longer video",
            )
        clamped = [min(max(int(i), 0), len(index) - 1) for i in indices]
        decode = _decode if index.distinct else _decode_in_order
        try:
            frames = decode(stream.codec_context, index, packets, sorted(set(clamped)), stats)
        except (av.FFmpegError, OSError, CorruptData) as err:
            raise DataError(path, f"cannot decode video: {error_reason(err)}") from err
        finally:
            stats.demuxed += getattr(packets, "demuxed", 0)
    missing = sorted(set(clamped) - frames.keys())
    if missing:
        raise DataError(path, f"frames {missing} could not be decoded")
    return stack_frames(frames, clamped, path)


class CorruptData(Exception):
    """The decoder concealed errors in a frame that the frames wanted are decoded from."""


def _decode(
    codec: av.CodecContext,
    index: PacketIndex,
    packets: Sequence[av.Packet] | SeekingPackets,
    wanted: list[int],
    stats: DecodeStats,
) -> dict[int, np.ndarray]:
    """Decode runs of ``packets`` (by decode position) that cover ``wanted`` (ascending frame numbers); RGB
    arrays of those frames. A frame the decoder flags corrupt (it concealed errors) raises :class:`CorruptData`,
    but for an open GOP's leading frames before the keyframe a run starts at (their references precede it)."""
    keep = set(wanted)
    wanted_packets = {index.order[frame] for frame in wanted}
    skips_nonref = codec.name in SKIPS_NONREF
    out: dict[int, np.ndarray] = {}
    run_start = index.stamps_by_position[0]  # the timestamp of the keyframe the current run started at

    def collect(frames: Iterable[av.VideoFrame]) -> None:
        for frame in frames:
            if frame.is_corrupt and (stamp(frame) is None or stamp(frame) >= run_start):
                raise CorruptData(f"corrupt video data: frame at timestamp {stamp(frame)} decodes with errors")
            i = index.frame_of(stamp(frame))
            if i in keep and i not in out:
                out[i] = to_rgb(frame)

    def decoded(packet: av.Packet | None) -> list[av.VideoFrame]:
        start = time.perf_counter()
        frames = codec.decode(packet)
        stats.decoding_s += time.perf_counter() - start
        return frames

    def drain() -> None:
        collect(decoded(None))
        codec.flush_buffers()

    position = 0  # next packet to send
    for frame in wanted:
        start = index.start(frame)
        if start > position:  # a keyframe lies ahead: jump to it instead of decoding the gap
            if position:
                drain()
            position, run_start = start, index.stamps_by_position[start]
            stats.seeks += 1
        while position <= index.order[frame]:
            # Frames no other frame refers to are skipped by the decoder unless they are wanted.
            if skips_nonref:
                codec.skip_frame = "DEFAULT" if position in wanted_packets else "NONREF"
            collect(decoded(packets[position]))
            position += 1
            stats.packets += 1
    drain()
    return out


def _decode_in_order(
    codec: av.CodecContext, index: PacketIndex, packets: list[av.Packet], wanted: list[int], stats: DecodeStats
) -> dict[int, np.ndarray]:
    """Decode every packet, numbering frames in the order the decoder shows them, for a video whose frames share
    timestamps (:attr:`PacketIndex.distinct` false); RGB arrays of the ``wanted`` frames."""
    keep, out, shown = set(wanted), {}, 0
    for packet in [*packets, None]:
        stats.packets += packet is not None
        for frame in codec.decode(packet):
            if frame.is_corrupt:
                raise CorruptData(f"corrupt video data: frame {shown} decodes with errors")
            if shown in keep:
                out[shown] = to_rgb(frame)
            shown += 1
    return out


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an ``(H, W, 3)`` uint8 RGB array, reusing this thread's converter, turned upright as its
    stream's display matrix says (a phone's portrait video), as players and FFmpeg's frame extraction show it."""
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return upright(_local.reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray(), frame.rotation)


def stack_frames(frames: dict[int, np.ndarray], indices: Sequence[int], path: Path) -> torch.Tensor:
    """``frames[i]`` for each of ``indices`` as one uint8 ``(T, H, W, 3)`` tensor: frames of one size,
    at least :data:`MIN_SIDE` pixels a side."""
    shapes = sorted({frame.shape for frame in frames.values()})
    if len(shapes) > 1:
        raise DataError(path, f"frames differ in size: {shapes}")
    if any(min(shape[:2]) < MIN_SIDE for shape in shapes):
        raise DataError(path, f"frames of {shapes[0][1]}x{shapes[0][0]} pixels: a side under {MIN_SIDE}")
    return torch.from_numpy(np.stack([frames[i] for i in indices]))
