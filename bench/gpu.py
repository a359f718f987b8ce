"""GPU benchmark at paper size (2688x896, batch 1). NOT RUN YET: no GPU was lent to the session that wrote it.

    .venv/bin/python bench/gpu.py [--bundle DIR] [--runs 50] [--warmup 10] [--skip-compile]

What it times, each pruned (keep 0.5) against dense (keep 1.0), interleaved in one process:
- eager PyTorch FP32, FP16 and bf16 (autocast: LayerNorm, softmax and the window scores stay FP32),
  each replayed as a CUDA graph (static shapes and static K make the whole forward capturable),
  and FP16 through torch.compile (one compiled graph per keep ratio);
- ONNX Runtime with its CUDA provider, when `onnxruntime-gpu` is installed (the gpu extra);
- the bundle's TensorRT / TensorRT-RTX engine, when a backend is installed: GPU compute time from
  CUDA events apart from host time (copies in, prob back).
Peak memory is torch's allocator peak per call (eager) or engine activation memory + I/O.

Writes bench/results/gpu-<gpu>.json with the machine description and the exact commands.
A section that cannot run (no provider, no engine, no TensorRT) is recorded as skipped with the reason.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xpr_deploy import bench as B  # noqa: E402
from xpr_deploy.config import get_config  # noqa: E402
from xpr_deploy.errors import XprError  # noqa: E402
from xpr_deploy.io import write_json  # noqa: E402
from xpr_deploy.model.xpruning import random_model  # noqa: E402

XPR = str(Path(sys.executable).with_name("xpr"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def section(name: str, results: dict[str, Any], fn: Any) -> None:
    """Run one measurement; a failure is recorded with its reason and the others still run."""
    log(f"== {name}")
    try:
        results[name] = fn()
    except (XprError, RuntimeError, ImportError, OSError) as exc:
        results[name] = {"skipped": True, "reason": f"{type(exc).__name__}: {exc}"}
        log(f"{name}: skipped ({exc})")
        traceback.print_exc()


def brief(rep: dict[str, Any]) -> dict[str, Any]:
    keys = ("median_ms", "p90_ms", "p99_ms", "min_ms", "throughput_per_s", "peak_mem_mb", "dense_median_ms",
            "pruned_over_dense", "pruned_over_dense_paired", "gpu_median_ms", "host_overhead_median_ms",
            "skipped", "reason")  # fmt: skip
    return {k: rep[k] for k in keys if k in rep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=ROOT / "export" / "bench-paper-r05-fp16")
    ap.add_argument("--skip-compile", action="store_true", help="torch.compile takes minutes per keep ratio")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name(0)
    out = args.out or ROOT / "bench" / "results" / f"gpu-{re.sub(r'[^a-z0-9]+', '-', gpu.lower()).strip('-')}.json"
    commands: dict[str, str] = {"driver": shlex.join(["python", "bench/gpu.py", *sys.argv[1:]])}
    results: dict[str, Any] = {}
    t0 = time.time()

    model = random_model(get_config("paper"), args.seed)
    common = {"runs": args.runs, "warmup": args.warmup, "dense": True, "device": "cuda", "progress": log}
    for dtype in ("fp32", "fp16", "bf16"):
        section(f"eager_{dtype}_cuda_graph", results, lambda d=dtype: B.bench_eager(model, dtype=d, mode="cuda-graph",
                                                                                     **common))  # fmt: skip
        commands[f"eager_{dtype}_cuda_graph"] = (
            f"xpr bench --config paper --device cuda --dtype {dtype} --mode cuda-graph --dense "
            f"--runs {args.runs} --warmup {args.warmup}"
        )
    section("eager_fp16_plain", results, lambda: B.bench_eager(model, dtype="fp16", mode="eager", **common))
    if not args.skip_compile:
        section("eager_fp16_compile", results, lambda: B.bench_eager(model, dtype="fp16", mode="compile", **common))
        commands["eager_fp16_compile"] = (
            f"xpr bench --config paper --device cuda --dtype fp16 --mode compile --dense --runs {args.runs}"
        )
    model.cpu()
    torch.cuda.empty_cache()

    if not (args.bundle / "manifest.json").is_file():
        cmd = [XPR, "export", "--config", "paper", "--seed", str(args.seed), "--fp16", "--parity-samples", "0",
               "--out", str(args.bundle)]  # fmt: skip
        log("$ " + shlex.join(cmd))
        subprocess.run(cmd, check=True, cwd=ROOT)
        commands["export"] = shlex.join(["xpr", *cmd[1:]])

    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        for prec in ("fp32", "fp16"):
            section(f"onnx_cuda_{prec}", results, lambda p=prec: B.bench_onnx(
                args.bundle, runs=args.runs, warmup=args.warmup, dense=(p == "fp32"), precision=p,
                providers=["CUDAExecutionProvider", "CPUExecutionProvider"], progress=log))  # fmt: skip
            commands[f"onnx_cuda_{prec}"] = f"python -c 'bench_onnx({args.bundle}, precision={prec!r}, CUDA provider)'"
    else:
        results["onnx_cuda"] = {"skipped": True, "reason": "onnxruntime-gpu not installed (pip install '.[gpu]')"}

    section("engine", results, lambda: B.bench_engine(args.bundle, runs=args.runs, warmup=args.warmup, progress=log))
    commands["engine"] = f"xpr bench --engine {args.bundle} --runs {args.runs} --warmup {args.warmup}"

    report: dict[str, Any] = {
        "what": "paper config 2688x896, batch 1, GPU; random weights (seed 0); keep 0.5 vs dense",
        "summary": {k: brief(v) for k, v in results.items()},
        "results": results,
        "commands": commands,
        "machine": B.machine_info(),
        "wall_s": round(time.time() - t0, 1),
    }
    write_json(out, report)
    for k, v in report["summary"].items():
        print(f"{k:28s} {v}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
