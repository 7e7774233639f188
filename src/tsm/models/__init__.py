"""Recognizers: the factory, the shift patcher, the I3D teacher, and loading them from files."""

from tsm.models.factory import build_recognizer

__all__ = ["build_recognizer"]
