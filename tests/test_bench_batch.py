"""Per-breast time by batch size (`xpr bench --onnx BUNDLE --batch 1,2,4`), on tiny bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xpr_deploy import bench as B


@pytest.fixture(scope="module")
def dynamic_bundle(tiny_dynamic_bundle: Path) -> Path:
    """conftest's session bundle: the random tiny weights with a dynamic batch axis (--max-batch 4)."""
    return tiny_dynamic_bundle


def test_dynamic_bundle_one_session_per_breast_ratios(dynamic_bundle: Path) -> None:
    rep = B.bench_batches(dynamic_bundle, [1, 2, 4], runs=2, warmup=0, threads=2)
    assert rep["dynamic_batch"] and rep["batches"] == [1, 2, 4]
    v = rep["variants"]
    assert set(v) == {"batch=1", "batch=2", "batch=4"}
    assert len(set(rep["settings"]["graphs"].values())) == 1  # one graph, one session for every size
    for b in (1, 2, 4):
        row = v[f"batch={b}"]
        assert row["runs"] == 2 and row["batch"] == b
        assert row["per_breast_median_ms"] == pytest.approx(row["median_ms"] / b)
        assert row["throughput_per_s"] == pytest.approx(b * 1000.0 / row["mean_ms"])
        assert row["peak_mem_mb"] > 0
    assert v["batch=1"]["per_breast_over_batch1"] == pytest.approx(1.0)
    assert v["batch=4"]["per_breast_over_batch1"] == pytest.approx(
        (v["batch=4"]["median_ms"] / 4) / v["batch=1"]["median_ms"], rel=0.35
    )  # ratio of medians of per-round values: close to, not equal to, the ratio of the medians above
    assert rep["best_per_breast"] in v


def test_batch_over_max_batch_and_bad_sizes(dynamic_bundle: Path) -> None:
    with pytest.raises(B.BenchError, match="over the bundle's max_batch 4"):
        B.bench_batches(dynamic_bundle, [1, 8], runs=1, warmup=0)
    with pytest.raises(B.BenchError, match="comma-separated"):
        B.parse_batches("1,two")
    with pytest.raises(B.BenchError, match="positive"):
        B.parse_batches("0,1")
    assert B.parse_batches("4,1,2,2") == [1, 2, 4]


@pytest.mark.slow  # a graph exported on the fly (the static bundle is conftest's session one)
def test_static_bundle_exports_the_other_sizes(tiny_bundle: Path, tmp_path: Path) -> None:
    static = tiny_bundle
    kept = tmp_path / "graphs"
    rep = B.bench_batches(static, [1, 2], runs=1, warmup=0, threads=2, reference=static, graphs_dir=kept)
    assert not rep["dynamic_batch"]
    graphs = rep["settings"]["graphs"]
    assert graphs["batch=1"] == graphs["reference"] == str(static / "model.onnx")
    assert graphs["batch=2"] == str(kept / "batch2.onnx")  # exported from the same weights, kept
    assert rep["variants"]["reference"]["batch"] == 1
    stamp = (kept / "batch2.onnx").stat().st_mtime_ns
    B.bench_batches(static, [1, 2], runs=1, warmup=0, threads=2, graphs_dir=kept)
    assert (kept / "batch2.onnx").stat().st_mtime_ns == stamp  # reused, not exported again


def test_cli_bench_batch(dynamic_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    out = tmp_path / "b.json"
    args = ["bench", "--onnx", str(dynamic_bundle), "--batch", "1,2", "--runs", "1", "--warmup", "0"]
    res = CliRunner().invoke(app, [*args, "--threads", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "per breast" in res.output and json.loads(out.read_text())["batches"] == [1, 2]
    res = CliRunner().invoke(app, ["bench", "--config", "tiny", "--batch", "1,2"])
    assert isinstance(res.exception, B.BenchError) and "--batch goes with --onnx" in str(res.exception)
