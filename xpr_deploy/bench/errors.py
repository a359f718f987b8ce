"""The bench's own error type, in a module of its own so every bench module can raise it
without importing the others."""

from __future__ import annotations

from ..errors import XprError


class BenchError(XprError):
    """A benchmark cannot run as asked (bad model path, bad option)."""
