"""Triton serving under load: the dynamic batcher on and off, on loopback, tiny model, CPU.

    .venv/bin/python bench/serve_load.py [--bundle DIR] [--clients 8] [--requests 25] [--max-batch 4]

Exports the tiny preset (random weights, seed 0) with `--max-batch` unless --bundle is given, writes
the Triton repository twice (python-backend model with and without `dynamic_batching`), starts the
real tritonserver of the `nvidia-pytriton` wheel on 127.0.0.1, and runs the same bounded load
(`xpr_deploy.serve.load.run_load`: every answer checked against the single-request answer) against
each model over HTTP. Writes bench/results/serve-load.json with the command that produced it.
Timings are from a shared CPU machine: compare the two rows with each other, not with a GPU.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.serve import TritonServer, find_server  # noqa: E402
from xpr_deploy.serve.load import client, infer, run_load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a dynamic-batch bundle (default: export tiny with --max-batch)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve-load.json")
    a = ap.parse_args()
    from xpr_deploy.triton import PythonModelOptions, write_repository
    from xpr_deploy.validate import synthetic_inputs

    with tempfile.TemporaryDirectory(prefix="xpr-serve-bench-") as tmp:
        work = Path(tmp)
        bundle = a.bundle
        if bundle is None:
            from xpr_deploy.export.bundle import ExportOptions, export_bundle, load_source

            model, meta = load_source(None, "tiny", 0)
            opts = ExportOptions(engine=False, parity_samples=0, max_batch=a.max_batch, name="tiny")
            bundle = export_bundle(model, meta, work / "bundle", opts).path
        repo = work / "repo"
        write_repository(bundle, repo, name="batched")
        write_repository(bundle, repo, name="unbatched", python=PythonModelOptions(dynamic_batching=False))
        models = ("batched_python", "unbatched_python")
        args = ("--model-control-mode", "explicit", *(x for m in models for x in ("--load-model", m)))
        install = find_server()
        cc, mlo, _ = synthetic_inputs((448, 224), 8, 0)
        feeds = [{"cc": cc[i : i + 1], "mlo": mlo[i : i + 1]} for i in range(len(cc))]
        rows: list[dict[str, Any]] = []
        with TritonServer(repo, install=install, extra_args=args) as srv:
            c = client("http", srv.http_url)
            single = [float(np.asarray(infer(c, "http", models[0], f)["prob"]).reshape(-1)[0]) for f in feeds]
            for m in models:
                run_load("http", srv.http_url, m, feeds, single, clients=2, requests=2)  # warm-up
                r = run_load("http", srv.http_url, m, feeds, single, clients=a.clients, requests=a.requests, atol=1e-5)
                r["dynamic_batching"] = m == "batched_python"
                st = c.get_inference_statistics(m)["model_stats"][0]
                inf, ex = int(st["inference_count"]), int(st["execution_count"])
                r["server_stats"] = {"inference_count": inf, "execution_count": ex,
                                     "mean_batch": round(inf / ex, 2) if ex else None}  # fmt: skip
                rows.append(r)
                lat = r["latency_ms"]
                print(f"{m}: {r['throughput_rps']} req/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
                      f"failed {r['failed']}, mismatches {r['mismatches']}")  # fmt: skip
    write_json(a.out, {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "server": f"{install.binary.name} ({install.origin}), python backend, KIND_CPU x1, 127.0.0.1",
        "model": f"tiny (448x224), random weights seed 0, dynamic batch 1..{a.max_batch}, ONNX Runtime CPU",
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "note": "shared 2-core CPU machine: the two rows are comparable with each other only",
        "results": rows,
    })  # fmt: skip
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
