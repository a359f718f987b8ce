"""INT8 (ONNX Runtime, QDQ) against FP32 on CPU (issue 24): speed at paper size, parity on a test split.

    # speed: paper-size bundle (random weights) with --int8 calibrated on N breasts, then one
    # interleaved `xpr bench` run (INT8 main, FP32 against it) in a fresh process, 2 threads
    .venv/bin/python bench/int8_cpu.py speed --calib DATA --calib-breasts 2 --runs 5 --threads 2

    # parity: a trained checkpoint exported with --int8 (its training split calibrates), then
    # `xpr validate`'s comparison on the checkpoint's *test* split (ΔAUC, decision flips at the
    # default operating point, kept-window Jaccard per stage)
    .venv/bin/python bench/int8_cpu.py parity --checkpoint RUN/best --data DATA --calib-breasts 16

Writes bench/results/int8-speed.json / int8-parity.json (with the machine and the command).
Memory: the export (calibration included) runs as a child process; its peak RSS is the children's
ru_maxrss. The integer kernels are counted in ONNX Runtime's optimised graph.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy.bench.machine import command_line, machine_info  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402

XPR = ROOT / ".venv" / "bin" / "xpr"
#: the op types of the optimised graphs the report counts (integer kernels and what stays float)
SHOWN_OPS = (
    "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "Gemm", "MatMul",
    "FusedMatMul", "QuantizeLinear", "DequantizeLinear",
)  # fmt: skip


def _export(args: list[str], log: Path) -> dict[str, Any]:
    """`xpr export ARGS` as a child process: wall time, peak RSS (calibration included)."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run([str(XPR), "export", *args], stdout=f, stderr=subprocess.STDOUT).returncode
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(peak_kb / 1024, 1)}


def speed(a: argparse.Namespace) -> dict[str, Any]:
    from xpr_deploy.runners.int8 import optimized_op_counts

    work = Path(a.work or tempfile.mkdtemp(prefix="xpr-int8-speed-"))
    bundle = work / "paper-int8"
    exp: dict[str, Any] = {"skipped": "bundle given"}
    if not (bundle / "manifest.json").exists():
        exp = _export(
            ["--config", "paper", "--out", str(bundle), "--no-engine", "--parity-samples", "0", "--int8",
             "--calib", str(a.calib), "--calib-breasts", str(a.calib_breasts), "--calib-method", a.calib_method],
            work / "export.log",
        )  # fmt: skip
        if exp["rc"] != 0:
            raise SystemExit(f"export failed (see {work / 'export.log'})")
    manifest = json.loads((bundle / "manifest.json").read_text())
    ops = {p: optimized_op_counts(bundle / manifest["graphs"][p], threads=a.threads) for p in ("fp32", "int8")}
    report = work / "bench.json"
    cmd = [str(XPR), "bench", "--onnx", str(bundle), "-b", "onnx-int8", "--against", "onnx:fp32",
           "--runs", str(a.runs), "--warmup", "1", "--threads", str(a.threads), "--out", str(report)]  # fmt: skip
    if a.profile:
        cmd += ["--profile", str(work / "profiles")]
    subprocess.run(cmd, check=True)
    rep = json.loads(report.read_text())
    against = rep["against"]["onnx:fp32"]
    return {
        "what": "INT8 QDQ graph (onnx-int8) vs FP32 graph (onnx), same bundle, ONNX Runtime CPU, one interleaved run",
        "config": "paper (random weights)",
        "threads": a.threads,
        "runs": a.runs,
        "int8_over_fp32_time": against["time_ratio"],
        "int8_over_fp32_time_paired": against["time_ratio_paired"],
        "int8_over_fp32_cpu_time": against["cpu_time_ratio"],
        "median_ms": {"int8": rep["median_ms"], "fp32": rep["variants"]["onnx:fp32"]["median_ms"]},
        "peak_mem_mb": against["peak_mem_mb"],
        "peak_mem_delta_mb": against["peak_mem_delta_mb"],
        "graph_mb": {"int8": against["graph_mb"]["pruned"], "fp32": against["graph_mb"]["onnx:fp32"]},
        "export": exp,
        "int8_manifest": {k: v for k, v in manifest["int8"].items() if k != "calibration"},
        "calibration": {k: v for k, v in manifest["int8"]["calibration"].items() if k != "keys"},
        "optimized_ops": {p: {k: v for k, v in c.items() if k in SHOWN_OPS} for p, c in ops.items()},
        "profile_summary": rep.get("profile_summary"),
        "bench": rep,
    }


def parity(a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from xpr_deploy.data import PreprocessSettings, SplitFile, load_dataset, preprocess_file
    from xpr_deploy.runners import open_source
    from xpr_deploy.train.checkpoint import read_meta
    from xpr_deploy.validate import run_parity

    work = Path(a.work or tempfile.mkdtemp(prefix="xpr-int8-parity-"))
    bundle = work / "bundle"
    exp: dict[str, Any] = {"skipped": "bundle given"}
    if not (bundle / "manifest.json").exists():
        exp = _export(
            [str(a.checkpoint), "--out", str(bundle), "--no-engine", "--with-selection", "--parity-samples", "0",
             "--int8", "--calib", str(a.data), "--calib-breasts", str(a.calib_breasts),
             "--calib-method", a.calib_method],
            work / "export.log",
        )  # fmt: skip
        if exp["rc"] != 0:
            raise SystemExit(f"export failed (see {work / 'export.log'})")
    meta = read_meta(a.checkpoint)
    fold = int((meta.get("split") or {}).get("fold") or 0)
    ds = load_dataset(a.data)
    test = SplitFile.read(Path(meta["checkpoint_dir"]) / "split.json").select(
        [p for p in ds.pairs if p.label in (0, 1)], fold=fold, part="test"
    )
    source = open_source(bundle)
    s = PreprocessSettings.from_dict(meta["preprocess"]) if meta.get("preprocess") else source.settings
    cc = np.stack([preprocess_file(p.cc, s)[None] for p in test]).astype(np.float32)
    mlo = np.stack([preprocess_file(p.mlo, s)[None] for p in test]).astype(np.float32)
    labels = np.array([p.label for p in test])
    rep = run_parity(source, cc, mlo, labels=labels, inputs=f"test split of {a.data} ({len(test)} breasts)")
    rows = {c.name: c for c in rep.candidates}
    out: dict[str, Any] = {"test_breasts": len(test), "threshold": rep.threshold, "export": exp}
    for name in ("onnxruntime-int8", "onnxruntime-fp32", "eager-fp16"):
        c = rows.get(name)
        if c is None or c.status == "skipped":
            continue
        stages: dict[str, dict[str, float]] = {}
        for b in c.blocks:
            st = stages.setdefault(str(b.stage), {"mean_jaccard": 1.0, "min_jaccard": 1.0})
            st["mean_jaccard"] = min(st["mean_jaccard"], float(b.mean_jaccard or 0.0))
            st["min_jaccard"] = min(st["min_jaccard"], b.min_jaccard)
        out[name] = {
            "status": c.status, "reason": c.reason, "gate": c.gate, "delta_auc": c.delta_auc,
            "decision_flips": c.decision_flips, "max_abs_prob": c.max_abs_prob_all,
            "selection_ties": c.selection_ties, "selection_flips": c.selection_flips,
            "jaccard_by_stage": stages,
        }  # fmt: skip
    out["parity"] = rep.to_dict()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--calib", type=Path, required=True)
    sp.add_argument("--runs", type=int, default=5)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--profile", action="store_true")
    pp = sub.add_parser("parity")
    pp.add_argument("--checkpoint", type=Path, required=True)
    pp.add_argument("--data", type=Path, required=True)
    for p in (sp, pp):
        p.add_argument("--calib-breasts", type=int, default=2 if p is sp else 16)
        p.add_argument("--calib-method", default="percentile")
        p.add_argument("--work", type=Path, default=None, help="keep the bundle here (reused when present)")
        p.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    res = speed(a) if a.cmd == "speed" else parity(a)
    res = {**res, "seconds": round(time.perf_counter() - t0, 1), "machine": machine_info(), "command": command_line()}
    out = a.out or ROOT / "bench" / "results" / f"int8-{a.cmd}.json"
    write_json(out, res)
    print(f"{out}: " + json.dumps({k: v for k, v in res.items() if k not in ("bench", "parity", "machine")})[:2000])


if __name__ == "__main__":
    main()
