"""The project's error types for bad input: a file (or one of its lines or keys) that cannot be used.

Both carry the file they are about, so a caller can report it, and nothing else needs to be parsed
out of the message. Torch-free: the runtime side (:mod:`tsm.streaming.runtime`) raises them too.
"""

from __future__ import annotations

import os


class DataError(RuntimeError):
    """A sample that cannot be read, or an annotation line or file that cannot be used: where and why.
    ``path`` is the file (``file:line`` for a line of an annotation file). ``DataError(message)`` alone is
    how PyTorch re-raises one from a loader worker (the message then names the file)."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        super().__init__(str(path) if reason is None else f"{path}: {reason}")
        self.path = "" if reason is None else str(path)
        self.reason = str(path) if reason is None else reason


class UnsafeFileError(ValueError):
    """A file that asks for more trust than a data file gets: Python objects only a code-running
    unpickling could restore, or a stored config naming code outside this project's allow-list."""
