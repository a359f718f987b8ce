"""OpenVINO beside ONNX Runtime on the same FP32 graph, CPU, paper size (2688x896), batch 1.

    .venv/bin/pip install openvino==2026.4.1        # for this measurement only: not a dependency
    .venv/bin/python bench/openvino_compare.py [--bundle DIR] [--runs 4] [--threads 2]

Both run the bundle's FP32 graph with every block's kept-window indices exposed as outputs
(`runners.onnxrt.expose_selection`), from one file, in one process, interleaved round by round
(`bench.time_interleaved`), on the same inputs: ONNX Runtime through the runner predict serves with
(`OnnxRuntimeRunner`, CPU provider), OpenVINO's CPU plugin with FP32 inference precision (no bf16
down-cast), the latency hint and the same thread count. Parity: max |dlogits| / |dprob| and whether
every block kept the same windows, on the timing input and synthetic mammogram pairs.

Decision rule (issue 16): an `--backend openvino` runner only if OpenVINO is clearly faster: its
median at most 0.85 of ONNX Runtime's. Writes bench/results/openvino-vs-ort.json.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy import bench as B  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402

#: OpenVINO's median / ONNX Runtime's at or under which a runner is worth adding
BAR = 0.85


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class OpenVinoCall:
    """The graph compiled by OpenVINO's CPU plugin; called with a feed, returns outputs by name."""

    def __init__(self, graph: Path, threads: int | None) -> None:
        import openvino as ov

        core = ov.Core()
        self.default_precision = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        t0 = time.perf_counter()
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        self.compile_s = time.perf_counter() - t0
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__
        self.config = {
            k: str(self.compiled.get_property(k))
            for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT")
        }

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.request.infer(feed)
        return {out.get_any_name(): np.array(res[out]) for out in self.compiled.outputs}


def compare(
    bundle: Path,
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    parity_samples: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Interleaved timing and output parity of ONNX Runtime and OpenVINO on the bundle's FP32 graph."""
    from xpr_deploy.runners.onnxrt import OnnxRuntimeRunner, OrtSettings, expose_selection
    from xpr_deploy.validate.inputs import synthetic_inputs

    src = B.open_bundle(bundle)
    assert src.bundle is not None
    graph_src = src.bundle.graph("fp32")
    proto, selection = expose_selection(graph_src)
    with tempfile.TemporaryDirectory(prefix="xpr-ov-") as tmp:
        graph = Path(tmp) / "model.onnx"
        graph.write_bytes(proto)
        del proto
        t0 = time.perf_counter()
        ort = OnnxRuntimeRunner(graph, OrtSettings(providers=("CPUExecutionProvider",), threads=threads), io=src.io)
        ort.activate()
        ort_load_s = time.perf_counter() - t0
        ov = OpenVinoCall(graph, threads)
        cc, mlo = B.example_views((src.bundle.batch, src.cfg.in_chans, *src.cfg.img_size))
        feed = {src.io.cc: cc, src.io.mlo: mlo}
        fns = {
            "onnxruntime": functools.partial(ort.infer, feed, check_inputs=False),
            "openvino": functools.partial(ov, feed),
        }
        times = B.time_interleaved(fns, runs, warmup, memory=B.rss_hooks, progress=progress)
        feeds = [feed]
        if parity_samples:
            if progress:
                progress(f"parity on {parity_samples} synthetic pairs")
            scc, smlo, _ = synthetic_inputs(tuple(src.cfg.img_size), n=parity_samples, seed=0)
            feeds += [{src.io.cc: scc[i : i + 1], src.io.mlo: smlo[i : i + 1]} for i in range(parity_samples)]
        parity = [_parity(dict(ort.infer(f, check_inputs=False)), ov(f), src.io, selection) for f in feeds]
        ort.deactivate()
    settings = {
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "graph": str(graph_src),
        "bundle_sha256": src.bundle.digest,
        "exposed_selection_outputs": len(selection),
        "onnxruntime": ort.describe(),
        "onnxruntime_session_s": ort_load_s,
        "openvino": {
            "version": ov.version,
            "compile_s": ov.compile_s,
            "config": ov.config,
            "cpu_default_inference_precision": ov.default_precision,
        },
    }
    return _report(times, parity, parity_samples, settings)


def _report(
    times: dict[str, Any], parity: list[dict[str, Any]], parity_samples: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """The ratio, the parity summary and the decision against BAR."""
    variants = {n: B.variant_report(t, 1) for n, t in times.items()}
    r = B.ratio_stats(times["openvino"].wall_ms, times["onnxruntime"].wall_ms)
    ratio = r["ratio_of_medians"]
    return {
        "what": "ONNX Runtime vs OpenVINO (CPU plugin, FP32), same FP32 graph, paper 2688x896, batch 1, CPU",
        "openvino_over_onnxruntime": ratio,
        "openvino_over_onnxruntime_paired": r["median_paired_ratio"],
        "openvino_over_onnxruntime_cpu_time": B.ratio_stats(times["openvino"].cpu_ms, times["onnxruntime"].cpu_ms)[
            "ratio_of_medians"
        ],
        "median_ms": {n: v["median_ms"] for n, v in variants.items()},
        "peak_mem_mb": {n: v["peak_mem_mb"] for n, v in variants.items()},
        "max_abs_logits": max(p["max_abs_logits"] for p in parity),
        "max_abs_prob": max(p["max_abs_prob"] for p in parity),
        "selection_equal": all(p["selection_equal"] for p in parity),
        "blocks_differing": max(p["blocks_differing"] for p in parity),
        "parity_inputs": f"the timing input + {parity_samples} synthetic mammogram pairs",
        "parity": parity,
        "bar": BAR,
        "decision": (
            f"OpenVINO/ONNX Runtime {ratio:.3f}: "
            + ("clears" if ratio <= BAR else "does not clear")
            + f" the {BAR} bar: "
            + ("an --backend openvino runner is worth building" if ratio <= BAR else "no OpenVINO runner")
        ),
        "variants": variants,
        "settings": settings,
        "machine": B.machine_info(),
    }


def _parity(a: dict[str, np.ndarray], b: dict[str, np.ndarray], io: Any, selection: dict[str, Any]) -> dict[str, Any]:
    """|Δ| of logits and prob, and the blocks whose kept-window sets differ (TopK order aside)."""
    differ = [
        "/".join(map(str, key))
        for name, key in selection.items()
        if any(set(x.tolist()) != set(y.tolist()) for x, y in zip(a[name], b[name], strict=True))
    ]
    return {
        "max_abs_logits": float(np.abs(a[io.logits].astype(np.float64) - b[io.logits]).max()),
        "max_abs_prob": float(np.abs(a[io.prob].astype(np.float64) - b[io.prob]).max()),
        "selection_equal": not differ,
        "blocks_differing": len(differ),
        "differing": differ[:20],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "export" / "bench-paper-r05", help="exported if missing")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parity-samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "openvino-vs-ort.json")
    args = ap.parse_args()
    t0 = time.time()
    export = [
        "xpr",
        "export",
        "--config",
        "paper",
        "--seed",
        str(args.seed),
        "--no-engine",
        "--parity-samples",
        "0",
        "--out",
        str(args.bundle),
    ]
    if not (args.bundle / "manifest.json").is_file():
        log("$ " + shlex.join(export))
        subprocess.run([sys.executable, "-m", "xpr_deploy.cli", *export[1:]], check=True, cwd=ROOT)
    rep = compare(
        args.bundle,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        parity_samples=args.parity_samples,
        progress=log,
    )
    rep["commands"] = {
        "driver": shlex.join(["python", "bench/openvino_compare.py", *sys.argv[1:]]),
        "export": shlex.join(export),
    }
    rep["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, rep)
    for k in ("openvino_over_onnxruntime", "median_ms", "max_abs_logits", "selection_equal", "decision"):
        print(f"{k:28s} {rep[k]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
