"""Files written whole or not at all: a killed process leaves the old file (or none), never a truncated one.

:func:`atomic_open` writes to a temporary file in the target's own directory (so the final rename never
crosses a file system), flushes and fsyncs it, then moves it over the target with ``os.replace`` and
fsyncs the directory. Checkpoints (:class:`tsm.training.checkpoint_io.AtomicCheckpointIO`), the
teacher-logit cache and every results file of a run are written this way.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"  # a temporary file is ".<name>.<random>.tmp" beside its target
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would have given the file


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode, **kwargs)`` for writing, made atomic: the content appears at ``path`` only
    when the block ends without an exception."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files: mode must start with 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.chmod(temp, FILE_MODE)  # mkstemp's 0600 would hide results from the rest of a team
        os.close(descriptor)  # reopened by name: writers such as onnx.save read file.name
        with open(temp, mode, **kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``Path(path).write_text(text)`` (UTF-8), made atomic."""
    with atomic_open(path, "w", encoding="utf-8") as file:
        file.write(text)


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # file systems that cannot sync a directory still renamed it
    finally:
        os.close(descriptor)


Signature = tuple[int, int, int, int]  # a file's size, modification and change times (ns), inode


def file_signature(path: str | os.PathLike) -> Signature:
    """What tells a rewritten file from the one that was there: size, modification and change times (ns: a rewrite
    in place that restores the modification time, as ``rsync --inplace -t`` does, still changes the change time),
    inode. Raises :class:`FileNotFoundError` for no file."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files :func:`atomic_open` left in ``folder`` when its process was killed mid-write."""
    folder = Path(folder)
    return sorted(folder.glob(f".*{TEMP_SUFFIX}")) if folder.is_dir() else []
