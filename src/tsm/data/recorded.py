"""Rebuild the datamodule of a data config read from a file (a checkpoint's ``tsm_data``).

A config read from a file is data, not code: it is never given to ``hydra.utils.instantiate``, whose
``_target_`` can name any callable (``builtins.open``, ``torch.load`` with ``weights_only=False``, ...).
It is rebuilt here from this project's own classes alone, looked up by name in :data:`DATA_CLASSES`,
with plain values (None, booleans, numbers, strings, lists, string-keyed mappings) as their arguments.
Anything else, nested ``_target_`` s included, raises :class:`~tsm.errors.UnsafeFileError` naming the
file and the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any

from tsm.data import sources
from tsm.data.datamodule import ClipDataModule
from tsm.data.sources.synthetic import SyntheticGestures
from tsm.errors import UnsafeFileError

_SOURCES = [
    SyntheticGestures,
    *(getattr(sources, name) for name in sources.__all__ if name not in ("Sample", "VideoSource")),
]
# ``_target_`` name -> class: the datamodule and every video source, by module path and by package alias
DATA_CLASSES: dict[str, type] = {
    **{f"{cls.__module__}.{cls.__qualname__}": cls for cls in (ClipDataModule, *_SOURCES)},
    **{f"tsm.data.sources.{cls.__name__}": cls for cls in _SOURCES},
}
SPECIAL_KEYS = ("_target_", "_partial_")


def datamodule_from_record(config: Any, file: str, key: str) -> ClipDataModule:
    """The :class:`ClipDataModule` that ``config`` (found at ``key`` of ``file``) describes, built from
    :data:`DATA_CLASSES` and plain values only."""
    built = _rebuild(config, file, key)
    if not isinstance(built, ClipDataModule):
        raise UnsafeFileError(f"{file}: {key} does not describe a {ClipDataModule.__name__} (its _target_)")
    return built


def _rebuild(value: Any, file: str, key: str) -> Any:
    """``value`` with every ``_target_`` mapping replaced by its allowed class's object (or partial)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_rebuild(item, file, f"{key}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, Mapping):
        raise UnsafeFileError(f"{file}: {key} holds a {type(value).__name__}, not a plain value")
    cls = _allowed_class(value["_target_"], file, key) if "_target_" in value else None
    strange = [k for k in value if not isinstance(k, str) or (k.startswith("_") and k not in SPECIAL_KEYS)]
    if strange:
        raise UnsafeFileError(
            f"{file}: {key} has the key {strange[0]!r}; a stored config may only use {SPECIAL_KEYS} among "
            "underscored keys, and string keys"
        )
    args = {k: _rebuild(v, file, f"{key}.{k}") for k, v in value.items() if k not in SPECIAL_KEYS}
    if cls is None:
        return args
    return _construct(cls, value.get("_partial_", False), args, file, key)


def _allowed_class(target: Any, file: str, key: str) -> type:
    """``DATA_CLASSES[target]``; any other ``_target_`` is refused."""
    if isinstance(target, str) and target in DATA_CLASSES:
        return DATA_CLASSES[target]
    raise UnsafeFileError(
        f"{file}: {key}._target_ is {target!r}, not one of this project's data classes "
        f"({', '.join(sorted(DATA_CLASSES))}); a config read from a file is never run, only rebuilt from "
        "these. To use other data, name it on the command line (+data=NAME)"
    )


def _construct(cls: type, is_partial: Any, args: dict[str, Any], file: str, key: str) -> Any:
    """``cls(**args)``, or its partial; the arguments are checked against its signature first."""
    if not isinstance(is_partial, bool):
        raise UnsafeFileError(f"{file}: {key}._partial_ is {is_partial!r}, not true or false")
    try:
        inspect.signature(cls).bind_partial(**args)
    except TypeError as error:
        raise UnsafeFileError(f"{file}: {key} does not fit {cls.__module__}.{cls.__qualname__}: {error}") from error
    return partial(cls, **args) if is_partial else cls(**args)
