"""INT8 on CPU: ONNX Runtime on the bundle's QDQ graph (`model.int8.onnx`, `xpr export --int8`).

The same `OnnxRuntimeRunner` and session settings as the `onnx` backend; what differs is the artefact
(the quantized graph, whose integer kernels ONNX Runtime's CPU provider runs with VNNI where the
CPU has it) and the parity gate: P(malignant) within 5e-2 of eager FP32, no kept-set difference
beyond the FP16 tie epsilon, and no decision flip at the operating threshold. ΔAUC and the
kept-window Jaccard per stage are reported with it (parity.json) and measured on a test split by
`bench/int8_cpu.py`; on a handful of samples, with K of 1 or 4 windows in the late stages, they
move on near-ties (eager FP16 shows the same), so they are figures, not gates.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .onnxrt import OnnxRuntimeRunner, OrtSettings, build_graph_runner, create_session
from .registry import BackendSpec, Gate, ParityRow, RunnerRequest, bundle_graph_candidate, register_backend

if TYPE_CHECKING:
    from .factory import ModelSource

PRECISION = "int8"
INT8_GATE = Gate("prob", atol=5e-2, tie_eps=2e-2, max_decision_flips=0)


def build_int8(source: ModelSource, req: RunnerRequest) -> OnnxRuntimeRunner:
    """On the CPU provider unless the caller names providers (the QDQ graph is a CPU artefact)."""
    ort = req.ort or OrtSettings()
    if not ort.providers:
        ort = replace(ort, providers=("CPUExecutionProvider",))
    return build_graph_runner(source, replace(req, precision=req.precision or PRECISION, ort=ort), backend="onnx-int8")


def optimized_op_counts(graph: Path, threads: int = 1) -> dict[str, int]:
    """Op types of the graph as ONNX Runtime's CPU provider runs it (its optimised-graph dump, level
    all): where the QDQ MatMuls became integer kernels, and where float ones remain."""
    import collections
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory(prefix="xpr-int8-opt-") as tmp:
        dump = Path(tmp) / "optimized.onnx"
        settings = OrtSettings(providers=("CPUExecutionProvider",), threads=threads, optimized_path=str(dump))
        create_session(graph, settings, graph)
        m = onnx.load(str(dump))
    return dict(collections.Counter(n.op_type for n in m.graph.node))


def _doctor_line() -> tuple[bool, str]:
    """VNNI is what makes int8 pay on x86 (ONNX Runtime picks its kernels at run time)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return True, "CPU flags unknown"
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    if vnni:
        return True, "the CPU flags list VNNI (int8 dot products)"
    return True, "the CPU flags list no VNNI: int8 may gain less over FP32 here"


def _candidate(source: ModelSource, model: Any, row: ParityRow) -> tuple[Any, str]:
    return bundle_graph_candidate(source, model, row, "onnx-int8")


register_backend(
    BackendSpec(
        "onnx-int8", "ONNX Runtime on the bundle's INT8 QDQ graph (CPU; `xpr export --int8`)", needs="bundle",
        artefact="graphs.int8", build=build_int8, devices=("cpu",), selection_outputs=True, ort=True, triton=True,
        serves_precision=(PRECISION,), doctor=_doctor_line,
        parity=(ParityRow("onnxruntime-int8", INT8_GATE, PRECISION, _candidate, optional=True),),
    )
)  # fmt: skip
