"""A video stream's demuxed index, kept across reads: where its frames and keyframes are, without their data.

The first read of a video demuxes every packet (:func:`tsm.data.decode.read_video`); the index it builds is
kept in this process (each loader worker has its own; the loaders' workers persist across epochs) and later
reads of the file seek straight to the keyframe they need and demux only from there (:class:`SeekingPackets`).
An index is dropped when the file's size, modification or change time or inode change, and the least recently used ones
go once the kept indexes hold more than :data:`CACHE_PACKETS` packets (about 24 bytes of memory each).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import av

from tsm.errors import DataError
from tsm.files import Signature, file_signature

# Packets the kept indexes of one process may hold together: ~50 MB, ~18 h of 30 fps video (HMDB51's ~0.65M
# frames whole, most of UCF101's ~2.5M; a worker keeps the videos it read last of a larger set).
CACHE_PACKETS = 2_000_000


class IndexMismatch(RuntimeError):
    """The file's packets, read by seeking, are not the ones its kept index lists (the reader starts afresh)."""


def stamp(packet: av.Packet) -> int | None:
    """A packet's (or frame's) timestamp: its presentation time, else its decode time."""
    return packet.pts if packet.pts is not None else packet.dts


class PacketIndex:
    """The packets of a video stream in decode order: their timestamps, presentation order and keyframes, in
    flat integer arrays (about 24 bytes a packet). Packets the container marks discarded (an MP4 edit list's
    pre-roll, as a clip cut without re-encoding has) are decoded for the frames that refer to them but are no
    frames of the video: frame ``i`` is the ``i``-th shown one."""

    def __init__(self, stamps: list[int | None], keyframes: list[bool], path: Path, shown: list[bool]) -> None:
        if any(s is None for s in stamps):
            missing = sum(s is None for s in stamps)
            raise DataError(
                path,
                f"{missing} of its {len(stamps)} video packets carry no timestamp (a cut without re-encoding?): "
                "re-mux it, e.g. ffmpeg -i IN -c copy OUT.mp4, or re-encode it",
            )
        order = sorted((k for k in range(len(stamps)) if shown[k]), key=stamps.__getitem__)
        self.stamps_by_position = array("q", stamps)  # decode position -> timestamp
        self.order = array("q", order)  # frame i -> decode position
        self.stamps = array("q", (stamps[k] for k in order))  # frame i -> timestamp, ascending
        self.keyframes = array("q", (k for k, key in enumerate(keyframes) if key))  # decode positions
        self.keystamps = array("q", (stamps[k] for k in self.keyframes))
        self.discarded = {stamps[k]: k for k in range(len(stamps)) if not shown[k]}  # timestamp -> decode position
        # frames told apart by their timestamps (a few files repeat one: they are decoded in order, whole)
        self.distinct = len(set(stamps)) == len(stamps)

    @classmethod
    def of(cls, packets: list[av.Packet], path: Path) -> PacketIndex:
        shown = [not p.is_discard for p in packets]
        return cls([stamp(p) for p in packets], [p.is_keyframe for p in packets], path, shown)

    def __len__(self) -> int:
        """The video's frames (the shown ones)."""
        return len(self.stamps)

    @property
    def packets(self) -> int:
        return len(self.stamps_by_position)

    def frame_of(self, timestamp: int | None) -> int | None:
        """The frame number shown at ``timestamp``; None for a timestamp no shown frame has."""
        if timestamp is None:
            return None
        i = bisect_left(self.stamps, timestamp)
        return i if i < len(self.stamps) and self.stamps[i] == timestamp else None

    def position_of(self, timestamp: int | None) -> int | None:
        """The decode position of the packet with ``timestamp``; None for a timestamp no packet has."""
        frame = self.frame_of(timestamp)
        return self.order[frame] if frame is not None else self.discarded.get(timestamp)

    def start(self, frame: int) -> int:
        """Packet position to start decoding at for ``frame``: the last keyframe before its packet
        (in decode order) that is not shown after it; 0 when there is none."""
        position, frame_stamp = self.order[frame], self.stamps[frame]
        for j in range(bisect_right(self.keyframes, position) - 1, -1, -1):
            if self.keystamps[j] <= frame_stamp:
                return self.keyframes[j]
        return 0


class SeekingPackets:
    """The packets of a stream by decode position, read from the file: a request that does not follow the
    previous one seeks the container to that packet (a keyframe, or the first packet) and demuxes from there."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, index: PacketIndex) -> None:
        self.container, self.stream, self.index = container, stream, index
        self.packets: Iterator[av.Packet] | None = None
        self.next = -1  # the position the demuxer will give next
        self.demuxed = 0  # packets read from the file

    def __getitem__(self, position: int) -> av.Packet:
        if position != self.next:
            self._seek(position)
        for packet in self.packets:
            self.demuxed += 1
            found = self.index.position_of(stamp(packet)) if packet.size else None
            if found is None or found < position:  # the demuxer's end marker, or a packet before the one wanted
                continue
            if found > position:  # the seek went past it: the container's own index disagrees with the packets
                raise IndexMismatch(f"seeking to packet {position} landed on packet {found}")
            self.next = position + 1
            return packet
        raise IndexMismatch(f"the video ends before packet {position} of the {self.index.packets} indexed")

    def _seek(self, position: int) -> None:
        if position or self.packets is not None:  # a fresh container already stands at the first packet
            target = self.index.stamps_by_position[position]
            try:
                self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            except (av.FFmpegError, OSError) as err:  # a container that cannot seek is read from its start
                raise IndexMismatch(f"cannot seek to packet {position}: {err}") from err
        self.packets = self.container.demux(self.stream)


class IndexCache:
    """The indexes of the videos this process read, by path, each with the file signature it was built from."""

    def __init__(self, max_packets: int = CACHE_PACKETS) -> None:
        self.max_packets = max_packets
        self.entries: OrderedDict[str, tuple[Signature, PacketIndex]] = OrderedDict()
        self.packets = 0
        self.lock = threading.Lock()

    signature = staticmethod(file_signature)  # what tells a rewritten file from the one indexed

    def get(self, path: Path, signature: Signature) -> PacketIndex | None:
        """The kept index of ``path`` if the file still has ``signature``; a stale one is dropped."""
        with self.lock:
            entry = self.entries.get(str(path))
            if entry is None:
                return None
            if entry[0] != signature:
                self._drop(str(path))
                return None
            self.entries.move_to_end(str(path))
            return entry[1]

    def put(self, path: Path, signature: Signature, index: PacketIndex) -> None:
        """Keep ``index``, dropping the least recently used indexes beyond :attr:`max_packets` packets."""
        if index.packets > self.max_packets:
            return
        with self.lock:
            self._drop(str(path))
            self.entries[str(path)] = (signature, index)
            self.packets += index.packets
            while self.packets > self.max_packets:
                self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.packets = 0

    def _drop(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.packets -= entry[1].packets


# The process's cache: loader workers are processes, each keeps the indexes of the videos it read.
INDEXES = IndexCache()
