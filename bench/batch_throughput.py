"""Per-breast time at batch 1, 2 and 4 in ONNX Runtime, paper size (2688x896), CPU: which batch a
server should form (Triton's dynamic batcher, `xpr triton --max-batch`).

    .venv/bin/python bench/batch_throughput.py [--bundle DIR] [--max-batch 4] [--reference DIR] [--runs 3]

A dynamic-batch bundle (`--max-batch N`: `xpr export --max-batch N`) runs every size through one
session, as the server runs it; a static one (`--max-batch 0`, e.g. the batch-1 export of cpu_paper.py) has
its graph exported again at each other batch from the same weights, one session per size. Either is
exported first when missing. `--reference` (another bundle, e.g. the static batch-1 export beside a
dynamic one) is timed in the same interleaved rounds. Writes bench/results/batch-throughput.json.

The default bundle is a dynamic-batch export (`--max-batch 4`), timed the way Triton's dynamic
batcher runs it. Until issue 16 the paper-size `--max-batch` export came out with its batch fixed at
the exporter's example batch 2 (the cross-attention chunk count was computed from the batch), so the
earlier results used static exports, one per size.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy import bench as B  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def export_cmd(dest: Path, seed: int, max_batch: int | None) -> list[str]:
    cmd = ["xpr", "export", "--config", "paper", "--seed", str(seed), "--no-engine", "--parity-samples", "0"]
    return [*cmd, *(["--max-batch", str(max_batch)] if max_batch else []), "--out", str(dest)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "export" / "bench-paper-b4", help="exported if missing")
    ap.add_argument("--max-batch", type=int, default=4, help="the missing bundle's dynamic batch (0: static)")
    ap.add_argument("--reference", type=Path, default=None, help="another bundle timed in the same rounds")
    ap.add_argument("--graphs", type=Path, default=None, help="batch<N>.onnx graphs reused / exports kept here")
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch-throughput.json")
    args = ap.parse_args()
    t0 = time.time()
    sizes = B.parse_batches(args.batches)
    commands = {"driver": shlex.join(["python", "bench/batch_throughput.py", *sys.argv[1:]])}
    cmd = export_cmd(args.bundle, args.seed, args.max_batch)
    commands["export"] = shlex.join(cmd)
    if not (args.bundle / "manifest.json").is_file():
        log("$ " + commands["export"])
        subprocess.run([sys.executable, "-m", "xpr_deploy.cli", *cmd[1:]], check=True, cwd=ROOT)
    reference = args.reference
    rep = B.bench_batches(args.bundle, sizes, runs=args.runs, warmup=args.warmup, threads=args.threads,
                          reference=reference, graphs_dir=args.graphs, progress=log)  # fmt: skip
    how = "one dynamic-batch session" if rep["dynamic_batch"] else "static graphs of the same weights, one per size"
    rep["what"] = (
        f"paper config 2688x896, CPU, FP32, ONNX Runtime, random weights (seed {args.seed}), keep 0.5; {how}; "
        "batch sizes timed interleaved"
    )
    rep["commands"] = commands
    rep["wall_s"] = round(time.time() - t0, 1)
    write_json(args.out, rep)
    B.print_batches(rep)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
