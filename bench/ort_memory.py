"""Peak resident memory of one ONNX Runtime session in a fresh process, by session option (issue 16).

    .venv/bin/python bench/ort_memory.py [--graph export/bench-paper-r05/model.onnx] [--runs 2]

Each setting runs in its own child process (nothing else loaded: no PyTorch, no other session):
the session is created, then called `--runs` times on random inputs, with the high-water mark
(`VmHWM`) reset before each call. `xpr` is the runner's `OrtSettings()` (memory pattern and
same-size buffer reuse off), `reuse-on` the same with ONNX Runtime's buffer reuse back on
(`buffer_reuse=True`), `ort-default` ONNX Runtime's own memory defaults (pattern and reuse on).
Writes bench/results/ort-memory.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy.bench.machine import machine_info  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402

#: name -> OrtSettings fields changed from xpr's defaults
SETTINGS: dict[str, dict[str, bool]] = {
    "xpr": {},
    "reuse-on": {"buffer_reuse": True},
    "ort-default": {"buffer_reuse": True, "low_memory": False},
}

CHILD = r"""
import json, sys, time
import numpy as np
from xpr_deploy.bench.memory import PeakRSS
from xpr_deploy.runners.onnxrt import OrtSettings, create_session

graph, changes, runs, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rss = PeakRSS()
settings = OrtSettings(providers=("CPUExecutionProvider",), threads=threads, **changes)
t = time.perf_counter()
sess = create_session(graph, settings, graph)
out = {"load_s": round(time.perf_counter() - t, 2), "rss_after_load_mb": round(rss.current_mb())}
rng = np.random.default_rng(0)
feed = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
        for i in sess.get_inputs()}
calls = []
for _ in range(runs):
    rss.reset()
    t = time.perf_counter()
    sess.run(None, feed)
    calls.append({"s": round(time.perf_counter() - t, 2), "peak_mb": round(rss.peak_mb())})
out["calls"] = calls
out["peak_mb"] = max([c["peak_mb"] for c in calls] + [out["rss_after_load_mb"]])
out["torch_loaded"] = "torch" in sys.modules
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", type=Path, default=ROOT / "export" / "bench-paper-r05" / "model.onnx")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ort-memory.json")
    args = ap.parse_args()
    if not args.graph.is_file():
        raise SystemExit(f"{args.graph}: no such graph (export one: xpr export --config paper --no-engine ...)")
    names = [n for n in args.settings.split(",") if n]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}: choose from {', '.join(SETTINGS)}")
    results = {}
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-c", CHILD, str(args.graph), json.dumps(SETTINGS[name]), str(args.runs),
               str(args.threads)]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
        if r.returncode:
            raise SystemExit(f"{name}: child failed ({r.returncode}): {r.stderr.strip()[-1500:]}")
        results[name] = {"changes": SETTINGS[name], **json.loads(r.stdout.strip().splitlines()[-1])}
        print(f"  peak {results[name]['peak_mb']} MB, calls {results[name]['calls']}", file=sys.stderr)
    rep = {
        "what": "peak RSS of one ONNX Runtime CPU session in a fresh process, weights included",
        "graph": str(args.graph),
        "graph_mb": round(args.graph.stat().st_size / 1e6, 1),
        "results": results,
        "command": shlex.join(["python", "bench/ort_memory.py", *sys.argv[1:]]),
        "machine": machine_info(),
    }
    write_json(args.out, rep)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
