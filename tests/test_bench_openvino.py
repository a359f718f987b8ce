"""bench/openvino_compare.py on a tiny bundle. OpenVINO is no runtime dependency, only of the `dev`
extra (the comparison's measurement); a venv without it skips here, and CI's guard fails that skip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("openvino")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # both runtimes on conftest's session tiny bundle
def test_openvino_vs_onnxruntime_same_graph(tiny_bundle: Path) -> None:
    spec = importlib.util.spec_from_file_location("openvino_compare", ROOT / "bench" / "openvino_compare.py")
    assert spec is not None and spec.loader is not None
    ov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ov)
    rep = ov.compare(tiny_bundle, runs=2, warmup=0, threads=2, parity_samples=1)
    assert set(rep["median_ms"]) == {"onnxruntime", "openvino"}
    assert "float32" in rep["settings"]["openvino"]["config"]["INFERENCE_PRECISION_HINT"]  # no bf16 down-cast
    assert rep["settings"]["exposed_selection_outputs"] > 0 and len(rep["parity"]) == 2
    assert rep["max_abs_logits"] < 1e-3 and rep["selection_equal"], rep["parity"]
    assert rep["openvino_over_onnxruntime"] > 0 and f"the {ov.BAR} bar" in rep["decision"]
