"""xpr validate: parity table + parity.json, exit 1 on a broken tolerance; tie vs flip classification."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from test_export_support import XPR, xpr_here

from xpr_deploy.bundle import BundleView
from xpr_deploy.io import sha256_file
from xpr_deploy.runners.registry import FP32_GATE
from xpr_deploy.validate import RunResult, compare, compare_selection, validate_bundle


def _result(sel: list[list[int]], scores: list[list[float]] | None = None, logits=None) -> RunResult:
    key = ("cc", 1, 0)
    lg = np.asarray(logits if logits is not None else [[0.0, 0.0]] * len(sel), dtype=np.float64)
    e = np.exp(lg - lg.max(axis=1, keepdims=True))
    return RunResult(
        lg,
        e[:, 1] / e.sum(axis=1),
        {key: np.asarray(sel)},
        {key: np.asarray(scores, dtype=np.float64)} if scores is not None else {},
    )


def test_near_tie_is_a_tie_and_a_real_difference_is_a_flip() -> None:
    k_of = {("cc", 1, 0): 2}
    ref = _result([[0, 1], [0, 1]], [[3.0, 2.0, 2.0 - 1e-7, 0.5], [3.0, 2.0, 1.0, 0.5]])
    cand = _result([[0, 2], [0, 2]])  # sample 0: window 2 is 1e-7 below window 1; sample 1: far below
    (blk,), tie_samples = compare_selection(ref, cand, k_of, eps=1e-5)
    assert (blk.ties, blk.flips) == (1, 1) and tie_samples == {0}
    assert blk.min_jaccard == 1 / 3 and 0 < blk.min_margin < 1e-6


def test_fp32_gate_ignores_tie_samples_but_counts_flips() -> None:
    k_of = {("cc", 1, 0): 2}
    ref = _result([[0, 1], [0, 1]], [[3.0, 2.0, 2.0, 0.5], [3.0, 2.0, 1.0, 0.5]], [[0.0, 0.0], [0.0, 0.0]])
    cand = _result([[0, 2], [0, 1]], logits=[[0.3, 0.0], [0.0, 5e-5]])
    res = compare("onnxruntime-fp32", ref, cand, k_of=k_of, threshold=0.5, labels=None, gate=FP32_GATE)
    assert res.status == "pass" and res.tie_samples == 1 and res.max_abs_logits == 5e-5
    assert res.max_abs_logits_all == 0.3
    cand = _result([[0, 1], [0, 1]], logits=[[0.0, 0.0], [0.0, 3e-4]])
    res = compare("onnxruntime-fp32", ref, cand, k_of=k_of, threshold=0.5, labels=None, gate=FP32_GATE)
    assert res.status == "fail" and "max|Δlogits|" in res.reason


def test_validate_cli_writes_parity_and_keeps_manifest_hash(fp16_bundle, tmp_path: Path, capfd, monkeypatch) -> None:
    b = tmp_path / "bundle"
    shutil.copytree(fp16_bundle.path, b)
    env = {"COLUMNS": "250"}  # rich wraps the table at 80 columns without a terminal
    saved = tmp_path / "outputs.json"
    args = ["validate", str(b), "--samples", "2", "--save-outputs", str(saved)]
    res = xpr_here(capfd, monkeypatch, *args, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "onnxruntime-fp32" in res.stdout and "pass" in res.stdout
    # each row says how it runs: what `xpr predict --backend onnx` uses on this machine (CPU here)
    for row in ("onnx / CPU / fp32", "onnx / CPU / fp16", "eager / cpu / fp16"):
        assert row in res.stdout, row
    # polygraphy reads the run results back
    poly = subprocess.run(
        [str(XPR.parent / "polygraphy"), "inspect", "data", str(saved)], capture_output=True, text=True, timeout=300
    )
    assert poly.returncode == 0, poly.stdout[-2000:] + poly.stderr[-2000:]
    for runner in ("eager-fp32", "onnxruntime-fp32", "onnxruntime-fp16", "eager-fp16"):
        assert runner in poly.stdout + poly.stderr
    rep = json.loads((b / "parity.json").read_text())
    assert rep["ok"] is True and rep["samples"] == 2
    man = json.loads((b / "manifest.json").read_text())
    assert man["files"]["parity.json"] == sha256_file(b / "parity.json")
    view = BundleView.open(b)  # re-sealed, still verifies
    assert rep["validated_files"] == {k: v for k, v in view.manifest["files"].items() if k != "parity.json"}


def test_broken_tolerance_fails(fp16_bundle) -> None:
    """Validating the bundle against a different model (head perturbed) must fail, not pass quietly."""
    from xpr_deploy.export.bundle import load_source

    model, _ = load_source(fp16_bundle.manifest["source_checkpoint"]["path"])
    with torch.no_grad():
        model.head.fc2.bias.add_(torch.tensor([0.0, 0.05]))
    rep = validate_bundle(fp16_bundle.path, model=model, samples=2)
    by = {c.name: c for c in rep.candidates}
    assert not rep.ok and by["onnxruntime-fp32"].status == "fail" and "max|Δlogits|" in by["onnxruntime-fp32"].reason


def test_validate_on_a_dicom_dataset(fp16_bundle, synth_vindr: Path) -> None:
    """--data: real DICOM files through the preprocessing contract, labels give ΔAUC."""
    rep = validate_bundle(fp16_bundle.path, data=synth_vindr, samples=4)
    by = {c.name: c for c in rep.candidates}
    assert rep.ok and rep.samples == 4 and rep.inputs.startswith("dataset")
    assert by["onnxruntime-fp32"].max_abs_logits <= 1e-4 and by["onnxruntime-fp16"].max_abs_prob_all <= 1e-2
