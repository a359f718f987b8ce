"""xpr bench: statistics, interleaving, report structure and ratios (tiny config; nothing timed is asserted)."""

from __future__ import annotations

import json
import mmap
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpr_deploy import bench as B
from xpr_deploy.bundle import BundleView
from xpr_deploy.config import get_config
from xpr_deploy.model.summary import macs

TINY = get_config("tiny")


# ---- statistics ------------------------------------------------------------------------------
def test_latency_stats_values() -> None:
    t = [10.0, 20.0, 30.0, 40.0, 100.0]
    s = B.latency_stats(t, batch=2)
    assert s["runs"] == 5
    assert s["median_ms"] == 30.0
    assert s["mean_ms"] == pytest.approx(40.0)
    assert s["min_ms"] == 10.0 and s["max_ms"] == 100.0
    assert s["p90_ms"] == pytest.approx(float(np.percentile(t, 90)))
    assert s["p99_ms"] == pytest.approx(float(np.percentile(t, 99)))
    assert s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["throughput_per_s"] == pytest.approx(2 * 1000.0 / 40.0)
    with pytest.raises(ValueError):
        B.latency_stats([])


def test_ratio_stats_paired_and_of_medians() -> None:
    num, den = [5.0, 6.0, 9.0], [10.0, 10.0, 10.0]
    r = B.ratio_stats(num, den)
    assert r["ratio_of_medians"] == pytest.approx(0.6)
    assert r["median_paired_ratio"] == pytest.approx(0.6)
    assert r["min_paired_ratio"] == pytest.approx(0.5) and r["max_paired_ratio"] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        B.ratio_stats([1.0], [1.0, 2.0])


def test_time_interleaved_alternates_order_and_counts() -> None:
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("a", "b", "c")}
    level = {"v": 100.0}

    def memory():  # fake hooks: each call "uses" 10 MB more than the last
        def reset() -> None:
            level["v"] += 0.0

        def peak() -> float:
            level["v"] += 10.0
            return level["v"]

        return reset, peak, (lambda: level["v"])

    out = B.time_interleaved(fns, runs=3, warmup=1, memory=memory)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]  # order reversed every other round
    for v in out.values():
        assert len(v.wall_ms) == len(v.cpu_ms) == 3
        assert all(t >= 0 for t in v.wall_ms)
        assert v.peak_mem_mb is not None and v.peak_mem_delta_mb == pytest.approx(10.0)
    with pytest.raises(ValueError):
        B.time_interleaved(fns, runs=0)


def _vt(ms: list[float], mem: float = 100.0) -> B.VariantTimes:
    return B.VariantTimes(wall_ms=ms, cpu_ms=[m * 2 for m in ms], peak_mem_mb=mem, peak_mem_delta_mb=mem / 2)


def test_assemble_report_ratios_and_sweep() -> None:
    times = {
        "pruned": _vt([50.0, 60.0, 55.0]),
        "dense": _vt([100.0, 100.0, 110.0], 200.0),
        "keep=0.25": _vt([30.0, 31.0, 29.0]),
    }
    keeps: dict[str, float | None] = {"pruned": 0.5, "dense": 1.0, "keep=0.25": 0.25}
    m = {n: float(macs(TINY.with_prune_rates(1 - k), pruned=True)) for n, k in keeps.items() if k is not None}
    rep = B.assemble_report("eager", times, keeps, "pruned", 1, {"runs": 3}, {"config": "tiny"}, m)
    for k in (*B.REPORT_KEYS, "dense_median_ms", "pruned_over_dense", "variants", "machine", "command", "settings"):
        assert k in rep, k
    assert rep["median_ms"] == 55.0 and rep["dense_median_ms"] == 100.0
    assert rep["pruned_over_dense"] == pytest.approx(0.55)
    assert rep["pruned_over_dense_paired"] == pytest.approx(statistics.median([0.5, 0.6, 55 / 110]))
    assert rep["pruned_over_dense_cpu_time"] == pytest.approx(0.55)
    assert rep["peak_mem_mb"] == 100.0 and rep["dense_peak_mem_mb"] == 200.0
    sweep = rep["keep_sweep"]
    assert [s["keep"] for s in sweep] == [1.0, 0.5, 0.25]
    assert sweep[0]["latency_ratio"] == pytest.approx(1.0) and sweep[0]["macs_ratio"] == pytest.approx(1.0)
    assert sweep[2]["latency_ratio"] == pytest.approx(0.3)
    assert sweep[1]["macs_ratio"] == pytest.approx(macs(TINY, True) / macs(TINY, False))
    json.dumps(rep)  # serialisable as is


def test_report_without_dense_has_no_ratio() -> None:
    rep = B.assemble_report("onnx", {"pruned": _vt([1.0, 2.0])}, {"pruned": 0.5}, "pruned", 1, {})
    assert "pruned_over_dense" not in rep and "keep_sweep" not in rep


def test_peak_rss_reads_this_process() -> None:
    rss = B.PeakRSS()
    peak, cur = rss.peak_mb(), rss.current_mb()
    assert peak is not None and peak > 0
    if sys.platform.startswith("linux"):
        assert cur is not None and peak >= cur * 0.99
        if rss.resettable:
            # 64 MB of new pages: a numpy array may reuse heap memory a previous test freed (still
            # resident), so the RSS would not grow; an anonymous mapping is always fresh
            block = mmap.mmap(-1, 64 * 2**20)
            for offset in range(0, len(block), 4096):
                block[offset] = 1
            assert rss.peak_mb() >= (cur or 0) + 50  # type: ignore[operator]
            block.close()


def test_example_views_shape_and_determinism() -> None:
    a, b = B.example_views((1, 1, 448, 224))
    assert a.shape == b.shape == (1, 1, 448, 224) and a.dtype == np.float32
    assert not np.array_equal(a, b)
    assert np.array_equal(B.example_views((1, 1, 448, 224))[0], a)


def test_machine_info_and_command() -> None:
    m = B.machine_info()
    for k in ("platform", "cpu", "logical_cpus", "torch", "onnxruntime", "utc"):
        assert k in m
    assert isinstance(B.command_line(), str)


# ---- backends on the tiny model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    from xpr_deploy.model.xpruning import random_model

    return random_model(TINY, 0)


def test_bench_eager_dense_and_sweep(tiny_model, tmp_path: Path) -> None:
    before = list(tiny_model.keep_ratios)
    rep = B.bench_eager(tiny_model, runs=2, warmup=0, dense=True, keep_sweep=[1.0, 0.5, 0.25])
    assert tiny_model.keep_ratios == before  # keep ratio restored
    assert set(rep["variants"]) == {"pruned", "dense", "keep=0.25"}  # 0.5 is the model's own: not twice
    assert rep["keep"] == pytest.approx(0.5)
    v = rep["variants"]
    assert rep["pruned_over_dense"] == pytest.approx(v["pruned"]["median_ms"] / v["dense"]["median_ms"])
    assert [s["keep"] for s in rep["keep_sweep"]] == [1.0, 0.5, 0.25]
    assert rep["keep_sweep"][1]["macs_ratio"] == pytest.approx(macs(TINY, True) / macs(TINY, False))
    assert rep["settings"]["dtype"] == "fp32" and rep["settings"]["runs"] == 2
    png = B.plot_keep_sweep(rep, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_eager_rejects_bad_options(tiny_model) -> None:
    with pytest.raises(B.BenchError):
        B.bench_eager(tiny_model, runs=1, dtype="fp8")
    with pytest.raises(B.BenchError):
        B.bench_eager(tiny_model, runs=1, mode="cuda-graph")


# tiny_bundle: conftest's session bundle (random tiny weights, no engine, no parity: not under test here)


def test_bench_onnx_dense_exported_from_the_bundle(tiny_bundle, tmp_path: Path) -> None:
    rep = B.bench_onnx(tiny_bundle, runs=2, warmup=1, threads=2, dense=True, profile_dir=tmp_path)
    assert rep["kind"] == "onnx"
    for k in ("median_ms", "p90_ms", "p99_ms", "peak_mem_mb", "dense_median_ms", "pruned_over_dense"):
        assert k in rep, k
    v = rep["variants"]
    assert rep["pruned_over_dense"] == pytest.approx(v["pruned"]["median_ms"] / v["dense"]["median_ms"])
    assert rep["settings"]["providers"] == ["CPUExecutionProvider"]
    assert rep["settings"]["runner"]["provider"] == "CPUExecutionProvider"  # the runner predict uses
    assert rep["model"]["bundle_sha256"] == BundleView.open(tiny_bundle).digest
    prof = rep["profile_summary"]["pruned"]
    assert prof["kernel_ms_per_run"] > 0 and any(o["op"] == "TopK" for o in B.summarize_ort_profile(
        rep["settings"]["profiles"]["pruned"], top=100)["ops"])  # fmt: skip


def test_bench_onnx_needs_a_bundle(tiny_bundle, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "alone.onnx"
    shutil.copyfile(tiny_bundle / "model.onnx", bare)
    from xpr_deploy.errors import XprError

    with pytest.raises(XprError, match="not inside an export bundle"):
        B.bench_onnx(bare, runs=1, warmup=0)
    with pytest.raises(B.BenchError, match="no such file"):
        B.bench_onnx(tiny_bundle / "missing.onnx", runs=1)


def test_bench_engine_skips_with_reason(tiny_bundle: Path) -> None:
    rep = B.bench_engine(tiny_bundle, runs=1, warmup=0)
    assert rep["skipped"] is True and "disabled (--no-engine)" in rep["reason"]


def test_cli_bench_writes_report(tmp_path: Path) -> None:
    """`--json` is the flag it is everywhere else (the report as the one thing on stdout, file paths on
    stderr); `--out FILE` also writes the same report to a file."""
    from typer.testing import CliRunner

    from xpr_deploy.cli import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "--config", "tiny", "--runs", "1", "--warmup", "0", "--dense",
                                   "--json", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    for k in ("median_ms", "p90_ms", "p99_ms", "peak_mem_mb", "dense_median_ms", "pruned_over_dense", "command"):
        assert k in rep, k
    assert json.loads(res.stdout) == rep  # the whole of stdout is that one object
    assert f"report: {out}" in res.stderr
    # without --json: the summary lines, and `--out`'s path, on stdout
    res = CliRunner().invoke(app, ["bench", "--config", "tiny", "--runs", "1", "--warmup", "0", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "median" in res.stdout and f"report: {out}" in res.stdout and not res.stdout.lstrip().startswith("{")
    # no model named, or a sweep that is not numbers: the real entry point's one line and exit 2
    usage = "error: give one of --eager CKPT, --onnx BUNDLE, --engine ENGINE (or --config for random weights)"
    xpr = [sys.executable, "-m", "xpr_deploy.cli", "bench"]
    p = subprocess.run([*xpr, "--keep-sweep", "1,0.5"], capture_output=True, text=True, timeout=300)
    assert (p.returncode, p.stderr.strip(), p.stdout) == (2, usage, ""), p.stderr
    p = subprocess.run([*xpr, "--config", "tiny", "--keep-sweep", "1,x"], capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "keep" in lines[0].lower() and "1,x" in lines[0], p.stderr


def test_cli_bench_out_is_written_atomically(tmp_path: Path) -> None:
    """A report that cannot be written (EFBIG: files may not grow past 64 bytes) is one line naming
    `--out`, exit 2; the previous report stays as it was, no temporary is left, nothing is on stdout."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    out = tmp_path / "r.json"
    out.write_text('{"old": 1}\n')
    cmd = [sys.executable, "-m", "xpr_deploy.cli", "bench", "--config", "tiny", "--runs", "1", "--warmup", "0",
           "--json", "--out", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert str(out) in last and "File too large" in last, p.stderr
    assert p.stdout == "" and out.read_text() == '{"old": 1}\n'
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_demo_step_writes_reports(tiny_model, tmp_path: Path) -> None:
    """Eager only (no bundle in the context): the ONNX path is covered by test_bench_onnx_with_dense_graph."""
    from types import SimpleNamespace

    from xpr_deploy.demo import bench_step
    from xpr_deploy.train.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "ckpt", tiny_model, {"label_rule": "vindr:birads>=4"})
    logs: list[str] = []
    ctx = SimpleNamespace(out=tmp_path / "demo", artifacts={"checkpoint": ckpt}, log=logs.append)
    summary = bench_step(ctx)
    assert set(summary) == {"eager", "reports"}
    rep = json.loads((tmp_path / "demo" / "bench" / "eager.json").read_text())
    assert rep["pruned_over_dense"] == pytest.approx(
        rep["variants"]["pruned"]["median_ms"] / rep["variants"]["dense"]["median_ms"]
    )
    assert summary["eager"]["pruned_over_dense"] == rep["pruned_over_dense"]
    assert len(logs) == 1 and ctx.artifacts["bench"] == tmp_path / "demo" / "bench"


def test_bench_request_is_what_xpr_bench_checks_and_runs(tmp_path: Path) -> None:
    """`bench_request` refuses a bad combination in one line, in the order `xpr bench` reads its
    options (no target before a bad sweep; --backend/--against and --batch only with --onnx), and
    `run_bench` picks the adapter the request names."""
    from xpr_deploy.bench import BenchError, BenchRequest, bench_request, run_bench

    for given, says in (
        ({"keep_sweep": "1,x"}, "give one of --eager CKPT, --onnx BUNDLE, --engine ENGINE"),
        ({"eager": tmp_path, "onnx": tmp_path}, "give one of --eager CKPT"),
        ({"config": "tiny", "keep_sweep": "1,x", "backend": "onnx-int8"}, "--keep-sweep '1,x'"),
        ({"config": "tiny", "backend": "onnx-int8", "batch": "x"}, "--backend and --against go with --onnx"),
        ({"config": "tiny", "against": ["onnx:fp32"]}, "--backend and --against go with --onnx"),
        ({"config": "tiny", "batch": "x"}, "--batch goes with --onnx BUNDLE"),
        ({"onnx": tmp_path, "batch": "0,x"}, "--batch '0,x'"),
    ):
        with pytest.raises(BenchError, match=f"^{re.escape(says)}"):
            bench_request(**given)
    req = bench_request(config="tiny", keep_sweep="1,0.5", runs=1, warmup=0)
    assert req == BenchRequest(config="tiny", keep_sweep=[1.0, 0.5], runs=1, warmup=0)
    with pytest.raises(BenchError, match=r"^--batch goes with --onnx"):
        run_bench(BenchRequest(config="tiny", batches=[1, 2]))  # a request built by hand is checked too
    rep = run_bench(BenchRequest(config="tiny", runs=1, warmup=0))
    assert rep["median_ms"] > 0 and "dense_median_ms" not in rep
