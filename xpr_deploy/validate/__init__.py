"""Parity (SPEC §6): eager FP32 is the reference; ONNX Runtime FP32 / FP16, eager FP16 and the engine
are compared against it on realistic inputs (synthetic studies or a dataset), never only on noise.

Every candidate is built by the runner factory with the settings `xpr predict` uses on this machine,
run through polygraphy's `Comparator.run`, and its logits / P(malignant) compared with
`Comparator.compare_accuracy` (`SimpleCompareFunc`, i.e. `CompareFunc.simple`, per-output
tolerances). xpr's pruning-aware layer reads the same run results:

The candidates and their gates are the parity rows each backend declares in the registry
(`xpr_deploy.runners.registry`: `BackendSpec.parity`). Per candidate: max |Δ| of logits and of
P(malignant), decision flips at the operating threshold, ΔAUC when labels exist, and per block
and view the Jaccard of the kept-window sets (smallest and mean over the samples) with the
reference's K-th/(K+1)-th score margin. A selection difference whose windows all score within a
stated epsilon of the reference's K/K+1 boundary is a *tie* (reported, not a failure); any other
difference is a *flip* and fails. Samples with a tie are left out of the |Δ| gate (a tie changes
what the model computes) and reported apart.

Modules: `inputs` (what parity runs on), `run` (runners through polygraphy, validate-after-export),
`compare` (the pruning-aware layer), `report` (the parity report and parity.json).
"""

from __future__ import annotations

from .compare import RunResult, compare, compare_selection
from .inputs import dataset_inputs, synthetic_inputs
from .report import BlockParity, CandidateParity, ParityError, ParityReport, write_parity_report
from .run import ValidatedExport, export_and_validate, run_parity, store_report, validate_bundle

__all__ = [
    "BlockParity",
    "CandidateParity",
    "ParityError",
    "ParityReport",
    "RunResult",
    "ValidatedExport",
    "compare",
    "compare_selection",
    "dataset_inputs",
    "export_and_validate",
    "run_parity",
    "store_report",
    "synthetic_inputs",
    "validate_bundle",
    "write_parity_report",
]
