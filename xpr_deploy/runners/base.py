"""What every xpr runner adds to polygraphy's runner contract.

A runner is a polygraphy `BaseRunner`: `activate()` loads the model and allocates what it needs
once, `infer(feed)` returns the raw named outputs (logits, prob, and kept-window indices where the
backend exposes them) and sets `inference_time`, `deactivate()` frees everything. On top of that
each xpr runner knows its I/O roles (`io`), which outputs are kept-window indices (`selection`),
and says what configuration it is (`describe()`): validate prints that, predict and bench record it.
"""

from __future__ import annotations

from typing import Any

from polygraphy.backend.base import BaseRunner

from ..bundle import BlockKey, IoNames

#: the I/O roles of models that are not read from a bundle (checkpoints, eager)
DEFAULT_IO = IoNames("cc", "mlo", "logits", "prob")


class XprRunnerMixin:
    """Attributes the factory sets and the output helpers read."""

    backend: str = "?"
    name: str  # polygraphy's runner name (set by BaseRunner)
    is_active: bool
    io: IoNames = DEFAULT_IO
    #: output name -> (view, stage, block) for outputs holding kept window indices [B, K]
    selection: dict[str, BlockKey]
    #: the batch the model takes (static graphs and engines); None: any
    batch: int | None = None

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class XprRunner(XprRunnerMixin, BaseRunner):  # type: ignore[misc]
    """Base of the runners xpr writes itself (eager, TensorRT); ONNX Runtime is polygraphy's own."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.selection = {}
