"""GPU benchmark at paper size (2688x896) on the lent NVIDIA machine, from the source tree (no install).

    bash bench/gpu_run.sh                        # there: one `run` call, see bench/README.md#gpu
    python bench/gpu.py --dry-run --out r.json   # here: tiny config on the CPU, every section, small

Sections, each in a child process of its own (`--section NAME`):
- `eager`: eager PyTorch pruned (keep 0.5) vs dense (keep 1.0), interleaved, FP32 (TF32 off), FP16
  and bf16 autocast, plain calls and replayed CUDA graphs, plus FP32 with TF32 as a CUDA graph;
- `parity`: FP16 / bf16 autocast and the export's FP16 islands against FP32 on the GPU, on synthetic
  mammogram pairs: kept-window flips and ties, max |dprob|, max |dlogits| (validate's comparator);
- `train`: training steps of the recipe (`train.loop.train_step`: AMP, AdamW, clipping) at batch 4,
  at the target keep and dense (the pruning warm-up's first epoch), with the allocator's peak memory;
- `compile`: torch.compile FP16, pruned then dense; time-boxed, it gets what the deadline leaves.
ONNX Runtime CUDA and TensorRT are recorded as not run, with the reason (`NOT_RUN`).

Why child processes: a compile that outlasts its budget, a CUDA fault or an out-of-memory error
costs only that section; the parent kills a child at its timeout (from one global `--deadline`)
and writes the JSON after every section, so it is always written. A child writes its results as it
goes and stops itself just before its timeout, so a cut section keeps what it measured (`partial`).

Exit codes: 0 every section complete; 1 the JSON is written but a section failed, was cut or was
skipped by the deadline; 2 no CUDA device (without --dry-run) or a bad option: one line, no JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXIT_OK, EXIT_PARTIAL, EXIT_NO_CUDA = 0, 1, 2
SECTIONS = ("eager", "parity", "train", "compile")
#: seconds each section may take at most (GPU run / dry run); compile gets what the deadline leaves
BUDGET_S = {"eager": 150, "parity": 80, "train": 80, "compile": 240}
DRY_BUDGET_S = {"eager": 120, "parity": 120, "train": 120, "compile": 60}
MIN_SECTION_S = 20  # a section with less than this left is skipped, not started
NOT_RUN = {
    "onnxruntime_cuda": "onnxruntime-gpu is not installed on the lent machine (its wheel is over the 64 MiB that "
    "a call may carry) and ONNX Runtime on the CPU is pointless there: not run",
    "tensorrt": "TensorRT-RTX does not support sm_90 (H100/H200) and full TensorRT cannot be installed on the lent "
    "machine (no network, over the carry limit): the bundle's engines stay unrun",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


class Cut(Exception):
    """The section's own deadline passed: stop timing, keep what was measured."""


# ---- the sections (run in a child process) --------------------------------------------------


class Section:
    """What a child knows: options, device, its deadline, and its results file (rewritten as it goes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args, self.torch = args, torch
        self.dry = bool(args.dry_run)
        self.device = "cpu" if self.dry else "cuda"
        self.config = "tiny" if self.dry else "paper"
        self.deadline = float(args.section_deadline)
        self.out = Path(args.section_out)
        self.results: dict[str, Any] = {}
        torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32 unless a variant says TF32
        torch.backends.cudnn.allow_tf32 = False

    def save(self) -> None:
        write_json_atomic(self.out, self.results)

    def check(self, msg: str = "") -> None:
        if msg:
            log(msg)
        if time.time() > self.deadline:
            raise Cut(f"section deadline reached ({msg or 'between steps'})")

    def model(self) -> Any:
        from xpr_deploy.config import get_config
        from xpr_deploy.model.xpruning import random_model

        return random_model(get_config(self.config), self.args.seed)


def brief(rep: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "median_ms",
        "p90_ms",
        "min_ms",
        "gpu_median_ms",
        "throughput_per_s",
        "peak_mem_mb",
        "dense_median_ms",
        "dense_peak_mem_mb",
        "pruned_over_dense",
        "pruned_over_dense_paired",
    )
    return {k: rep[k] for k in keys if k in rep}


def run_eager(s: Section) -> None:
    """Pruned vs dense per precision and mode, one interleaved comparison each (`bench_eager`)."""
    from xpr_deploy import bench as B

    torch = s.torch
    model = s.model()
    modes = ("eager",) if s.dry else ("eager", "cuda-graph")
    dtypes = ("fp32", "bf16") if s.dry else ("fp32", "fp16", "bf16")  # CPU FP16 is slow and shares bf16's path
    plan = [(d, m, False) for d in dtypes for m in modes]
    if s.dry:
        s.results["cuda-graph"] = {"skipped": True, "reason": "CPU dry run: CUDA graphs and TF32 need a GPU"}
    else:
        plan.append(("fp32", "cuda-graph", True))  # FP32 matmuls on TF32 tensor cores
    for dtype, mode, tf32 in plan:
        name = f"{dtype}{'-tf32' if tf32 else ''}_{mode}"
        s.check(f"eager {name}")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            rep = B.bench_eager(
                model,
                runs=s.args.runs,
                warmup=s.args.warmup,
                dense=True,
                device=s.device,
                dtype=dtype,
                mode=mode,
                progress=s.check,
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
        rep["settings"]["tf32"] = tf32
        s.results[name] = {"summary": brief(rep), "report": rep}
        s.save()


def run_parity(s: Section) -> None:
    """Reduced precision against FP32 on the same device: validate's pruning-aware comparator."""
    from xpr_deploy.runners.eager import EagerRunner
    from xpr_deploy.runners.registry import FP16_GATE
    from xpr_deploy.validate.compare import compare
    from xpr_deploy.validate.inputs import synthetic_inputs
    from xpr_deploy.validate.run import collect

    model = s.model()
    n = s.args.parity_samples
    s.check(f"parity: rendering {n} synthetic pairs")
    cc, mlo, labels = synthetic_inputs(tuple(model.cfg.img_size), n=n, seed=s.args.seed)
    k_of = {key: blk.k for key, blk in model.blocks()}
    common = {"device": s.device, "selection": True}
    runners = {
        "eager-fp32": EagerRunner(model, name="eager-fp32", scores=True, **common),
        "autocast-fp16": EagerRunner(model, name="autocast-fp16", autocast="fp16", **common),
        "autocast-bf16": EagerRunner(model, name="autocast-bf16", autocast="bf16", **common),
        "fp16-islands": EagerRunner(model, name="fp16-islands", precision="fp16", **common),
    }
    outputs: dict[str, list[dict[str, Any]]] = {}
    for name, r in runners.items():  # one at a time: fp16-islands converts its own copy of the weights
        s.check(f"parity: {name}")
        with r:
            io = r.io
            outputs[name] = [dict(r.infer({io.cc: cc[i : i + 1], io.mlo: mlo[i : i + 1]})) for i in range(n)]
    ref = collect(outputs["eager-fp32"], runners["eager-fp32"])
    s.results["samples"] = n
    s.results["inputs"] = f"{n} synthetic mammogram pairs (xpr synth's renderer), seed {s.args.seed}"
    s.results["device"] = s.device
    for name in ("autocast-fp16", "autocast-bf16", "fp16-islands"):
        row = compare(
            name,
            ref,
            collect(outputs[name], runners[name]),
            k_of=k_of,
            threshold=0.5,
            labels=labels,
            gate=FP16_GATE,
        )
        s.results[name] = {
            "status": row.status,
            "reason": row.reason,
            "gate": row.gate,
            "max_abs_prob": row.max_abs_prob_all,
            "max_abs_logits": row.max_abs_logits_all,
            "selection_flips": row.selection_flips,
            "selection_ties": row.selection_ties,
            "min_jaccard": row.min_jaccard,
            "decision_flips": row.decision_flips,
        }
        s.save()


def run_train(s: Section) -> None:
    """`train_step` at batch 4 with the recipe's defaults (TrainConfig), target keep and dense."""
    from xpr_deploy.bench import PeakRSS, example_views
    from xpr_deploy.train.config import TrainConfig
    from xpr_deploy.train.loop import train_step
    from xpr_deploy.train.recipe import amp_context, class_weights, target_keep

    torch = s.torch
    dev = torch.device(s.device)
    tc = TrainConfig(data="", out="")
    model = s.model().to(dev).train()
    batch = tc.batch_size
    cc, mlo = (torch.from_numpy(v).to(dev) for v in example_views((batch, 1, *model.cfg.img_size), s.args.seed))
    labels = [i % 2 for i in range(batch)]
    y = torch.tensor(labels, device=dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    ctx, need_scaler = amp_context(dev, tc.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=need_scaler)
    weights = class_weights(labels).to(dev)
    amp = "off (CPU)" if dev.type != "cuda" else ("fp16 + GradScaler" if need_scaler else "bf16")
    s.results["settings"] = {
        "batch": batch,
        "amp": amp,
        "lr": tc.lr,
        "weight_decay": tc.weight_decay,
        "grad_clip": tc.grad_clip,
        "trainable_params": sum(p.numel() for p in params),
        "frozen": "patch embedding + stages 1-2 (paper)",
        "device": str(dev),
        "img_size": list(model.cfg.img_size),
    }
    rss = PeakRSS()
    steps = s.args.train_steps
    for label, keep in (("target_keep", target_keep(model.cfg)), ("dense", [1.0] * 4)):
        model.set_keep(keep)
        times, losses = [], []
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        rss.reset()
        for i in range(steps + 1):  # the first step warms up (allocator, kernels); its memory counts
            s.check(f"train {label}: step {i + 1}/{steps + 1}")
            t0 = time.perf_counter()
            loss = train_step(
                model,
                cc,
                mlo,
                y,
                opt=opt,
                scaler=scaler,
                ctx=ctx,
                weights=weights,
                params=params,
                grad_clip=tc.grad_clip,
            )
            losses.append(float(loss.detach()))  # synchronises
            times.append((time.perf_counter() - t0) * 1000.0)
        first, times = times[0], times[1:]
        rec: dict[str, Any] = {
            "keep": keep,
            "first_step_ms": round(first, 2),
            "step_ms": [round(t, 2) for t in times],
            "loss": losses,
        }
        if times:
            rec["median_step_ms"] = sorted(times)[len(times) // 2]
            rec["breasts_per_s"] = batch * 1000.0 / rec["median_step_ms"]
        if dev.type == "cuda":
            rec["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            rec["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2**20
            rec["fits_24gb"] = rec["peak_reserved_mb"] <= 24 * 1024
        else:
            rec["peak_rss_mb"] = rss.peak_mb()
        s.results[label] = rec
        s.save()
    model.set_keep(target_keep(model.cfg))


def run_compile(s: Section) -> None:
    """torch.compile FP16 (inductor, static shapes): pruned alone first, so a cut section keeps it,
    then pruned vs dense interleaved (the pruned graph is cached by then)."""
    from xpr_deploy import bench as B

    model = s.model()
    common = {
        "runs": s.args.runs,
        "warmup": max(1, s.args.warmup),
        "device": s.device,
        "dtype": "fp16",
        "mode": "compile",
        "progress": s.check,
    }
    for label, dense in (("pruned", False), ("pruned_vs_dense", True)):
        s.check(f"compile: {label}")
        t0 = time.perf_counter()
        rep = B.bench_eager(model, dense=dense, **common)
        timed = sum(sum(v["wall_ms"]) for v in rep["variants"].values()) / 1000.0
        s.results[label] = {
            "summary": brief(rep),
            "wall_s": time.perf_counter() - t0,
            "compile_and_warmup_s": time.perf_counter() - t0 - timed,
            "report": rep,
        }
        s.save()


RUNNERS: dict[str, Callable[[Section], None]] = {
    "eager": run_eager,
    "parity": run_parity,
    "train": run_train,
    "compile": run_compile,
}


def child(args: argparse.Namespace) -> int:
    s = Section(args)
    s.results["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    s.save()
    try:
        RUNNERS[args.section](s)
    except Cut as exc:
        s.results["cut"] = str(exc)
        s.save()
        return EXIT_PARTIAL
    except Exception as exc:
        s.results["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
        s.results["traceback"] = traceback.format_exc()[-3000:]
        s.save()
        traceback.print_exc()
        return EXIT_PARTIAL
    return EXIT_OK


# ---- the parent: deadline, children, the JSON -----------------------------------------------


def interpreter() -> list[str]:
    """This interpreter with its isolation flags (-S, -I, -E), so children see the same packages."""
    flags = [
        f
        for f, on in (
            ("-S", sys.flags.no_site),
            ("-I", sys.flags.isolated),
            ("-E", sys.flags.ignore_environment and not sys.flags.isolated),
        )
        if on
    ]
    return [sys.executable, *flags]


def run_section(name: str, args: argparse.Namespace, timeout: float, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{name}.json"
    cmd = [
        *interpreter(),
        str(Path(__file__).resolve()),
        "--section",
        name,
        "--section-out",
        str(out),
        "--section-deadline",
        f"{time.time() + max(1.0, timeout - 8.0):.1f}",
        *passthrough(args),
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)  # its own group: compile workers die with it
    status = "ok"
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc, status = None, "timed_out"
    results: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    if status == "ok" and "cut" in results:
        status = "partial"
    elif status == "ok" and (rc != 0 or "error" in results):
        status = "failed"
    rec: dict[str, Any] = {
        "status": status,
        "seconds": round(time.time() - t0, 1),
        "timeout_s": round(timeout, 1),
        "exit_code": rc,
        "results": results,
    }
    if status == "timed_out":
        rec["reason"] = f"killed at its timeout ({timeout:.0f} s); results are what it had written by then"
    elif status == "partial":
        rec["reason"] = results["cut"]
    elif status == "failed":
        rec["reason"] = results.get("error") or f"exit code {rc}"
    return rec


def passthrough(args: argparse.Namespace) -> list[str]:
    keys = ("runs", "warmup", "seed", "parity_samples", "train_steps")
    out = [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
    return [*out, "--dry-run"] if args.dry_run else out


def environment() -> dict[str, Any]:
    """What ran: the interpreter, where xpr_deploy and the carried packages came from, their versions."""
    import xpr_deploy

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "xpr_deploy": str(Path(xpr_deploy.__file__).parent),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "no_site": bool(sys.flags.no_site),
    }
    for mod in ("torch", "timm", "numpy", "onnx", "onnxruntime", "polygraphy", "pydicom", "safetensors"):
        try:
            m = __import__(mod)
            env[mod] = {"version": getattr(m, "__version__", "?"), "from": str(Path(m.__file__ or "").parent)}
        except ImportError as exc:
            env[mod] = {"missing": str(exc)}
    env["source_commit"] = os.environ.get("XPR_COMMIT") or None
    return env


def summary(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures a reader wants first; every number is also under `sections`."""
    out: dict[str, Any] = {}
    eager = sections.get("eager", {}).get("results", {})
    out["eager"] = {k: v["summary"] for k, v in eager.items() if isinstance(v, dict) and "summary" in v}
    parity = sections.get("parity", {}).get("results", {})
    out["parity"] = {
        k: {f: v[f] for f in ("max_abs_prob", "max_abs_logits", "selection_flips", "selection_ties", "decision_flips")}
        for k, v in parity.items()
        if isinstance(v, dict) and "selection_flips" in v
    }
    train = sections.get("train", {}).get("results", {})
    out["train"] = {
        k: {
            f: v.get(f)
            for f in (
                "first_step_ms",
                "median_step_ms",
                "breasts_per_s",
                "peak_mem_mb",
                "peak_reserved_mb",
                "fits_24gb",
                "peak_rss_mb",
            )
            if f in v
        }
        for k, v in train.items()
        if k in ("target_keep", "dense")
    }
    comp = sections.get("compile", {}).get("results", {})
    out["compile"] = {
        k: {**v["summary"], "compile_and_warmup_s": v["compile_and_warmup_s"]}
        for k, v in comp.items()
        if isinstance(v, dict) and "summary" in v
    }
    out["status"] = {k: v["status"] for k, v in sections.items()}
    return out


def default_out(gpu: str | None, dry: bool) -> Path:
    if dry:
        return Path(tempfile.gettempdir()) / "xpr-gpu-dry-run.json"
    slug = "".join(c if c.isalnum() else "-" for c in (gpu or "gpu").lower().replace("nvidia", "")).strip("-")
    return ROOT / "bench" / "results" / f"gpu-{'-'.join(p for p in slug.split('-') if p)}.json"


def parent(args: argparse.Namespace) -> int:
    t0 = time.time()
    try:
        import torch
    except ImportError as exc:
        print(f"bench/gpu.py: torch is not importable ({exc})", file=sys.stderr)
        return EXIT_NO_CUDA
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False): run it on the lent GPU "
            "machine (bash bench/gpu_run.sh), or check it here with --dry-run",
            file=sys.stderr,
        )
        return EXIT_NO_CUDA
    from xpr_deploy.bench import machine_info

    gpu = None if args.dry_run else torch.cuda.get_device_name(0)
    out = args.out or default_out(gpu, args.dry_run)
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    if skip - set(SECTIONS):
        print(f"bench/gpu.py: --skip {args.skip!r}: sections are {', '.join(SECTIONS)}", file=sys.stderr)
        return EXIT_NO_CUDA
    budgets = dict(DRY_BUDGET_S if args.dry_run else BUDGET_S)
    if args.compile_budget is not None:
        budgets["compile"] = args.compile_budget
    report: dict[str, Any] = {
        "what": (
            "DRY RUN: tiny config on the CPU (checks the script, not the GPU)"
            if args.dry_run
            else "paper config 2688x896, batch 1 (training: batch 4), random weights (seed "
            f"{args.seed}); keep 0.5 in every stage vs dense (keep 1.0)"
        ),
        "dry_run": bool(args.dry_run),
        "command": shlex.join(["python", "bench/gpu.py", *sys.argv[1:]]),
        "deadline_s": args.deadline,
        "budgets_s": budgets,
        "not_run": NOT_RUN,
        "sections": {},
        "environment": environment(),
        "machine": machine_info(),
    }
    sections: dict[str, dict[str, Any]] = report["sections"]

    def save() -> None:
        report["summary"] = summary(sections)
        report["wall_s"] = round(time.time() - t0, 1)
        write_json_atomic(out, report)

    save()
    with tempfile.TemporaryDirectory(prefix="xpr-gpu-") as tmp:
        for name in SECTIONS:
            left = args.deadline - (time.time() - t0) - 5.0
            if name in skip:
                sections[name] = {"status": "skipped", "reason": "--skip"}
            elif left < min(MIN_SECTION_S, budgets[name]):
                sections[name] = {"status": "skipped", "reason": f"global deadline: {max(left, 0):.0f} s left"}
            else:
                timeout = min(float(budgets[name]), left)
                log(f"== section {name} (timeout {timeout:.0f} s, {left:.0f} s left before the deadline)")
                sections[name] = run_section(name, args, timeout, Path(tmp))
                log(f"== section {name}: {sections[name]['status']} in {sections[name]['seconds']} s")
            save()
    for k, v in report["summary"].items():
        print(f"{k:8s} {json.dumps(v, default=str)}")
    print(f"wrote {out}")
    done = all(v["status"] == "ok" or (v["status"] == "skipped" and v["reason"] == "--skip") for v in sections.values())
    return EXIT_OK if done else EXIT_PARTIAL


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny config on the CPU, every section, small")
    ap.add_argument("--deadline", type=float, default=None, help="seconds for the whole run (default 300; dry 400)")
    ap.add_argument("--compile-budget", type=float, default=None, help="seconds for torch.compile at most")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to leave out ({', '.join(SECTIONS)})")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per variant (default 30; dry 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 5; dry 1)")
    ap.add_argument("--parity-samples", type=int, default=None, help="synthetic pairs (default 8; dry 1)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed steps after a warm-up one (default 3; dry 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/gpu-<gpu>.json")
    ap.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    ap.add_argument("--section-out", help=argparse.SUPPRESS)
    ap.add_argument("--section-deadline", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.deadline = args.deadline if args.deadline is not None else (400.0 if args.dry_run else 300.0)
    dry = bool(args.dry_run)
    for key, gpu, small in (("runs", 30, 1), ("warmup", 5, 0), ("parity_samples", 8, 1), ("train_steps", 3, 0)):
        if getattr(args, key) is None:
            setattr(args, key, small if dry else gpu)
    if args.section:
        return child(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
