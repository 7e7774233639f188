"""Checks of config values shared by the data, training, evaluation and export code: an error names the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_counts(values: Mapping[str, Any], minimum: int = 1, group: str = "data") -> None:
    """Each of ``values`` must be an integer >= ``minimum``; the error names ``group.key`` (``key`` for a top-level
    key, ``group=""``) and the value."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            raise ValueError(f"{f'{group}.' if group else ''}{key} must be {wanted}, got {value!r}")
