"""ONNX Runtime: polygraphy's `OnnxrtRunner` over the one place where xpr creates a session.

Provider order and session options are decided here and nowhere else, so `xpr validate` certifies
the configuration `xpr predict`, `xpr bench` and the Triton model run: CUDA first when this
onnxruntime has it, else CPU; full graph optimisation; ONNX Runtime's memory-pattern planner off
(at 2688x896 it reserves one block for the whole plan on the second run and the peak RSS nearly
doubles, for no speed-up measured here) and so is its same-size buffer reuse (the planner hands a
freed buffer only to a later tensor of exactly its size and holds it until then: the paper graph
peaked at 2.5 GB with it and at 0.96 GB without, at the same speed; bench/README.md). The other
options (optimisation level, arena, spinning) exist so `bench/graph_before_after.py` can measure
them; their defaults are ONNX Runtime's.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polygraphy.backend.onnxrt import OnnxrtRunner

from ..bundle import BlockKey, BundleError, IoNames
from ..errors import BackendUnavailable, XprError
from .base import DEFAULT_IO, XprRunnerMixin
from .registry import (
    FP16_GATE,
    FP32_GATE,
    BackendSpec,
    Gate,
    ParityRow,
    RunnerRequest,
    bundle_graph_candidate,
    register_backend,
)

if TYPE_CHECKING:
    from .factory import ModelSource

PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxLoadError(XprError):
    """ONNX Runtime refused a graph."""


class GraphMismatch(BundleError, OnnxLoadError):
    """The bundle's manifest and its graph disagree (names, shapes): the bundle is refused (exit 3)
    when the session is made, before anything runs."""


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
    return list(ort.get_available_providers())


def default_providers() -> list[str]:
    """What predict serves with on this machine: CUDA when this onnxruntime has it, then CPU."""
    have = available_providers()
    return [p for p in PREFERRED if p in have]


@dataclass(frozen=True)
class OrtSettings:
    """Session settings; the defaults are what predict and validate use."""

    providers: tuple[str, ...] = ()  # empty: default_providers()
    threads: int | None = None  # intra-op threads; None: ONNX Runtime's default (all cores)
    low_memory: bool = True  # memory-pattern planner off (see above)
    buffer_reuse: bool = False  # ONNX Runtime's same-size buffer reuse (off: see above)
    profile_prefix: str | None = None
    log_severity: int = 3
    #: graph optimisation level: "all" (layout + contrib fusions), "extended", "basic", "disabled"
    optimization: str = "all"
    cpu_arena: bool = True  # ONNX Runtime's CPU memory arena
    spinning: bool | None = None  # intra-op threads spin while waiting; None: ONNX Runtime's default
    #: write the graph as ONNX Runtime optimised it here (to see which kernels it runs)
    optimized_path: str | None = None

    def resolved(self) -> OrtSettings:
        if self.providers:
            have = available_providers()
            missing = [p for p in self.providers if p not in have]
            if missing:
                raise BackendUnavailable(f"ONNX Runtime providers {missing} not available (have {have})")
            return self
        return replace(self, providers=tuple(default_providers()))


_OPT_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disabled": "ORT_DISABLE_ALL",
}


def session_options(settings: OrtSettings) -> Any:
    """The `onnxruntime.SessionOptions` for `settings`: the one place they are decided."""
    import onnxruntime as ort

    s = settings
    so = ort.SessionOptions()
    so.log_severity_level = s.log_severity
    if s.optimization not in _OPT_LEVELS:
        raise XprError(f"ONNX Runtime optimization must be one of {sorted(_OPT_LEVELS)}, not {s.optimization!r}")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[s.optimization])
    if s.threads:
        so.intra_op_num_threads = int(s.threads)
        so.inter_op_num_threads = 1
    if s.low_memory:
        so.enable_mem_pattern = False
    so.enable_mem_reuse = s.buffer_reuse
    if not s.cpu_arena:
        so.enable_cpu_mem_arena = False
    if s.spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if s.spinning else "0")
    if s.optimized_path:
        so.optimized_model_filepath = s.optimized_path
    if s.profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = s.profile_prefix
    return so


def triton_parameters(settings: OrtSettings) -> dict[str, str]:
    """`session_options(settings)` as the model-config parameters of Triton's `onnxruntime_onnx`
    backend, so the served session is planned like the validated one. That backend has no key for
    buffer reuse, and it takes the optimisation level elsewhere (the default there is "all")."""
    import onnxruntime as ort

    so = session_options(settings)
    params = {
        "enable_mem_pattern": "1" if so.enable_mem_pattern else "0",
        "enable_mem_arena": "1" if so.enable_cpu_mem_arena else "0",
        "execution_mode": "0" if so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL else "1",
    }
    if settings.threads:
        params["intra_op_thread_count"] = str(so.intra_op_num_threads)
        params["inter_op_thread_count"] = str(so.inter_op_num_threads)
    return params


def create_session(model: str | Path | bytes, settings: OrtSettings, where: str | Path) -> Any:
    """The one place xpr creates an ONNX Runtime session; a graph it refuses is one line naming it."""
    import onnxruntime as ort

    s = settings.resolved()
    so = session_options(s)
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=list(s.providers))
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
        raise OnnxLoadError(f"{where}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None


def selection_tensors(proto: Any) -> dict[str, BlockKey]:
    """Tensor name -> block for every tagged window selection (TopK indices / XprWindowSelect output)."""
    from ..export.onnx import BLOCK_KEY

    out: dict[str, BlockKey] = {}
    for n in proto.graph.node:
        tag = next((p.value for p in n.metadata_props if p.key == BLOCK_KEY), None)
        if tag is None:
            continue
        view, stage, block = tag.split("/")
        out[n.output[1] if n.op_type == "TopK" else n.output[0]] = (view, int(stage), int(block))
    return out


def expose_selection(path: Path) -> tuple[bytes, dict[str, BlockKey]]:
    """The graph with every block's kept indices marked as outputs (parity needs them even when the
    bundle was exported without --with-selection): serialised model, output name -> block."""
    import onnx

    proto = onnx.load(str(path))
    sel = selection_tensors(proto)
    present = {o.name for o in proto.graph.output}
    for name in sel:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
    return proto.SerializeToString(), sel


def _dims_agree(graph: list[Any], manifest: list[int]) -> bool:
    """A graph shape against the manifest's: -1 (dynamic batch) must be a symbol in the graph; an
    integer must be that integer (a graph symbol where the manifest has an integer is let through)."""
    if len(graph) != len(manifest):
        return False
    for g, m in zip(graph, manifest, strict=True):
        if m == -1 and isinstance(g, int):
            return False
        if m != -1 and isinstance(g, int) and g != m:
            return False
    return True


def check_graph_io(sess: Any, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], where: Path) -> None:
    """The graph's inputs are the manifest's (names, static shapes) and it has every listed output:
    a manifest that disagrees with its graph fails here, in one line, not inside ONNX Runtime."""
    got_in = {i.name: list(i.shape) for i in sess.get_inputs()}
    got_out = {o.name: list(o.shape) for o in sess.get_outputs()}
    if set(got_in) != {t["name"] for t in inputs}:
        raise GraphMismatch(
            f"{where}: graph inputs {sorted(got_in)} are not the manifest's {[t['name'] for t in inputs]}"
        )
    for kind, want, got in (("input", inputs, got_in), ("output", outputs, got_out)):
        for t in want:
            if t["name"] not in got:
                raise GraphMismatch(f"{where}: the manifest's {kind} {t['name']!r} is not in the graph")
            shape = got[t["name"]]
            if not _dims_agree(shape, list(t["shape"])):
                raise GraphMismatch(
                    f"{where}: {kind} {t['name']!r} is {shape} in the graph, {t['shape']} in the manifest"
                )


class OnnxRuntimeRunner(XprRunnerMixin, OnnxrtRunner):  # type: ignore[misc]
    """polygraphy's OnnxrtRunner on a session from `create_session`; returns every graph output."""

    backend = "onnx"

    def __init__(
        self,
        graph: Path,
        settings: OrtSettings | None = None,
        *,
        io: IoNames = DEFAULT_IO,
        selection: dict[str, BlockKey] | None = None,
        expose_all_selections: bool = False,
        precision: str | None = None,
        name: str | None = None,
        expect: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.graph = Path(graph)
        self.expect = expect  # the manifest's (inputs, outputs): the graph must have exactly these
        self.settings = (settings or OrtSettings()).resolved()
        self.io, self.precision = io, precision
        self.selection = dict(selection or {})
        self._expose = expose_all_selections
        super().__init__(self._session, name=name or f"onnxrt-{precision or self.graph.stem}")

    def _session(self) -> Any:
        model: Path | bytes = self.graph
        if self._expose:
            model, found = expose_selection(self.graph)
            self.selection = {**found, **self.selection}
        sess = create_session(model, self.settings, self.graph)
        if self.expect is not None:
            check_graph_io(sess, *self.expect, where=self.graph)
        first = sess.get_inputs()[0].shape[0]
        self.batch = int(first) if isinstance(first, int) else None
        return sess

    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict[str, Any]:
        """polygraphy's, minus its torch-tensor check: that check imports torch (about 480 MB resident)
        into a process that only runs ONNX Runtime on NumPy arrays."""
        start = time.perf_counter()
        outputs = self.sess.run(None, dict(feed_dict))
        self.inference_time = time.perf_counter() - start
        return OrderedDict(zip(self.output_names(), outputs, strict=True))

    def output_names(self) -> list[str]:
        return [o.name for o in self.sess.get_outputs()]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "provider": self.settings.providers[0] if self.settings.providers else "?",
            "providers": list(self.settings.providers),
            "precision": self.precision,
            "graph": self.graph.name,
            "threads": self.settings.threads,
        }


def build_graph_runner(source: ModelSource, req: RunnerRequest, backend: str = "onnx") -> OnnxRuntimeRunner:
    """An ONNX Runtime runner on one of the bundle's graphs (`req.precision`, else the one the user
    pointed at, else the served one), checked against the manifest's I/O when the session is made."""
    view = source.bundle
    assert view is not None
    graph = view.graph(req.precision)
    prec = view.graph_precision(graph)
    r = OnnxRuntimeRunner(
        graph, req.ort, io=view.io, selection=view.selection_outputs(), expose_all_selections=req.all_selections,
        precision=prec, name=req.name or f"onnxrt-{prec}", expect=(view.inputs, view.outputs),
    )  # fmt: skip
    r.backend = backend
    return r


def _doctor_line() -> tuple[bool, str]:
    try:
        return True, "providers: " + ", ".join(default_providers())
    except BackendUnavailable as exc:
        return False, str(exc)


def _graph_row(name: str, precision: str, gate: Gate) -> ParityRow:
    return ParityRow(name, gate, precision, lambda s, m, row: bundle_graph_candidate(s, m, row, "onnx"))


register_backend(
    BackendSpec(
        "onnx", "ONNX Runtime on the bundle's FP32/FP16 graph (CUDA provider when present, else CPU)",
        needs="bundle", artefact="graphs.fp32|fp16", build=build_graph_runner, devices=("cpu", "cuda"),
        selection_outputs=True, ort=True, triton=True, serves_precision=("fp32", "fp16"), doctor=_doctor_line,
        parity=(_graph_row("onnxruntime-fp32", "fp32", FP32_GATE), _graph_row("onnxruntime-fp16", "fp16", FP16_GATE)),
    )
)  # fmt: skip


def with_settings(settings: OrtSettings | None, **changes: Any) -> OrtSettings:
    return replace(settings or OrtSettings(), **changes)


__all__: Sequence[str] = [
    "GraphMismatch", "OnnxLoadError", "OnnxRuntimeRunner", "OrtSettings", "create_session", "default_providers",
    "selection_tensors", "session_options",
]  # fmt: skip
