"""The backend registry: each backend is declared once, in the module that defines its runner
(`register_backend(BackendSpec(...))`, in the manner of timm's `register_model`), and everything
that offers a choice of backend reads it: `make_runner`, the `--backend` checks and help of
`xpr predict` / `xpr bench`, the rows of `xpr validate`, and `xpr doctor`.

A declaration says what the backend needs (a checkpoint, or which artefact of a bundle), how its
runner is built, what it supports (devices, batch, kept-window outputs), how `xpr validate`
compares it with the eager FP32 reference (its parity rows and their gates) and what `doctor`
prints about it. Adding a backend is one module that registers itself, imported once in
`factory.BACKEND_MODULES`, plus its tests (and an export step when it needs a new artefact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import XprRunnerMixin
    from .factory import ModelSource
    from .onnxrt import OrtSettings


@dataclass(frozen=True)
class Gate:
    """How a parity row is judged against eager FP32: `output` (an I/O role: logits | prob) within
    `atol`; kept-set differences whose windows all score within `tie_eps` (relative) of the
    reference's K/K+1 boundary are ties, any other is a flip and fails. `exact`: an exact-arithmetic
    twin, gated on the tie-free samples only (a tie changes what the model computes)."""

    output: str
    atol: float
    tie_eps: float
    exact: bool = False
    #: decisions at the operating threshold that may differ from the reference (None: not gated)
    max_decision_flips: int | None = None

    def describe(self) -> str:
        where = "tie-free samples" if self.exact else "all samples"
        extra = f", decision flips <= {self.max_decision_flips}" if self.max_decision_flips is not None else ""
        return f"max|Δ{self.output}| <= {self.atol:g} on {where}, no flips{extra}"


#: the gates of the rows shipped today (FP32 twin; FP16 / engine; INT8)
FP32_GATE = Gate("logits", 1e-4, 1e-5, exact=True)
FP16_GATE = Gate("prob", 1e-2, 2e-2)


@dataclass(frozen=True)
class RunnerRequest:
    """What a caller asks of `make_runner`, handed to the backend's `build`."""

    precision: str | None = None
    selection: bool = False
    all_selections: bool = False
    scores: bool = False
    ort: OrtSettings | None = None
    device: str = "cpu"
    model: Any = None
    name: str | None = None
    triton: str | None = None  # the triton backend's server URL
    triton_model: str | None = None  # and the model's name there (None: the bundle's, found on the server)


@dataclass(frozen=True)
class ParityRow:
    """One candidate row of `xpr validate` (a name in parity.json) and its gate.

    `candidate(source, model, row)` returns (runner, "") or (None, why it cannot run here); the
    default builds the backend's runner on `precision` with every block's kept indices exposed, and
    skips when the bundle lacks that graph."""

    name: str
    gate: Gate
    precision: str | None = None
    candidate: Callable[[ModelSource, Any, ParityRow], tuple[Any, str]] | None = None
    #: an optional artefact (INT8): no row at all, rather than a skipped one, when the bundle lacks it
    optional: bool = False


@dataclass(frozen=True)
class BackendSpec:
    name: str
    help: str
    needs: str  # "checkpoint" (eager) | "bundle"
    artefact: str  # what it reads: "checkpoint", "graphs.fp32|fp16", "graphs.int8", "engines[]"
    build: Callable[[ModelSource, RunnerRequest], XprRunnerMixin]
    devices: tuple[str, ...] = ("cpu",)
    batch: str = "bundle"  # "bundle": the bundle's static batch / profile; "any": whatever is fed
    selection_outputs: bool = True  # can return kept-window indices
    parity: tuple[ParityRow, ...] = ()
    #: ONNX Runtime session settings apply (bench's --threads / --profile, Triton's parameters)
    ort: bool = False
    #: (ok, detail) for `xpr doctor`; None: nothing to say beyond the package checks
    doctor: Callable[[], tuple[bool, str]] | None = None
    #: the Triton python-backend model may run it (`xpr triton --python-backend NAME`)
    triton: bool = False
    #: serves a bundle's graph of this precision when the user points at that graph file
    serves_precision: tuple[str, ...] = field(default_factory=tuple)


#: name -> declaration, in registration order (the order of validate's rows and of the help)
BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Declare a backend (once per name; a second declaration is a programming error)."""
    if spec.name in BACKENDS and BACKENDS[spec.name] is not spec:
        raise ValueError(f"backend {spec.name!r} is declared twice")
    if spec.needs not in ("checkpoint", "bundle"):
        raise ValueError(f"backend {spec.name!r}: needs must be checkpoint or bundle, not {spec.needs!r}")
    BACKENDS[spec.name] = spec
    return spec


def check_backend(name: str | None) -> str | None:
    if name is not None and name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def backend_spec(name: str) -> BackendSpec:
    check_backend(name)
    return BACKENDS[name]


def bundle_graph_candidate(source: ModelSource, model: Any, row: ParityRow, backend: str) -> tuple[Any, str]:
    """The default parity candidate of a graph backend: its runner on `row.precision`, or why not."""
    view = source.bundle
    prec = row.precision or "fp32"
    if view is None or prec not in view.graphs:
        return None, f"no {prec.upper()} graph in the bundle"
    return BACKENDS[backend].build(source, RunnerRequest(precision=prec, all_selections=True, name=row.name)), ""
