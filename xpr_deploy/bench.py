"""Benchmarks (SPEC §7): eager PyTorch, ONNX Runtime and TensorRT engines, pruned against dense.

Why it is built this way:
- Shared CPUs are noisy, so every comparison (pruned vs dense, each keep ratio of a sweep) runs
  its variants interleaved in one process, alternating the order round by round; a ratio comes
  from one run, never from two runs made at different times. Both the ratio of medians and the
  median of the per-round ratios are reported.
- Peak memory is measured per variant and per timed call: on Linux the process's resident-set
  high-water mark is reset (`/proc/self/clear_refs`, "5") before each call and read after, so the
  figure belongs to that phase and not to model loading or another variant. On a GPU it is
  torch's allocator peak (eager) or the engine's activation memory plus its I/O buffers.
- Process CPU time is recorded next to wall time: on a shared machine it says how much of a
  slow run was waiting for a core.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailable, XprError

#: keys every report carries at its top level (the pruned / served variant), per issue 6
REPORT_KEYS = (
    "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s", "peak_mem_mb", "peak_mem_delta_mb",
)  # fmt: skip


class BenchError(XprError):
    """A benchmark cannot run as asked (bad model path, bad option)."""


# ---- statistics -------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_stats(times_ms: Sequence[float], batch: int = 1) -> dict[str, float]:
    """mean / median / p90 / p99 / min / max / std (ms) and throughput (samples per second).

    A sample is one breast (a CC + MLO pair); throughput uses the mean latency, so it is what a
    loop of back-to-back calls would sustain.
    """
    if not times_ms:
        raise ValueError("no timings")
    t = [float(x) for x in times_ms]
    mean = statistics.fmean(t)
    return {
        "runs": len(t),
        "mean_ms": mean,
        "median_ms": float(statistics.median(t)),
        "p90_ms": percentile(t, 90),
        "p99_ms": percentile(t, 99),
        "min_ms": min(t),
        "max_ms": max(t),
        "std_ms": statistics.pstdev(t),
        "throughput_per_s": batch * 1000.0 / mean if mean > 0 else float("inf"),
    }


def ratio_stats(num: Sequence[float], den: Sequence[float]) -> dict[str, float]:
    """Ratio of medians, and the median of per-round ratios (robust to slow drift of the machine)."""
    if len(num) != len(den) or not num:
        raise ValueError("need paired, non-empty timings")
    paired = [a / b for a, b in zip(num, den, strict=True)]
    return {
        "ratio_of_medians": float(statistics.median(num) / statistics.median(den)),
        "median_paired_ratio": float(statistics.median(paired)),
        "min_paired_ratio": min(paired),
        "max_paired_ratio": max(paired),
    }


# ---- memory -----------------------------------------------------------------------------------
class PeakRSS:
    """Resident-set high-water mark of this process, resettable per phase (Linux /proc)."""

    def __init__(self) -> None:
        self.resettable = self._try_reset()

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.resettable:
            self._try_reset()

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return None

    def peak_mb(self) -> float | None:
        v = self._status_mb("VmHWM")
        if v is None:  # not Linux: ru_maxrss is the peak since the process started (KiB on Linux, B on macOS)
            import resource

            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            v = r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0
        return v

    def current_mb(self) -> float | None:
        return self._status_mb("VmRSS")

    @property
    def scope(self) -> str:
        return "per-call peak RSS (VmHWM reset before each call)" if self.resettable else "process peak RSS"


# ---- the interleaved timer --------------------------------------------------------------------
#: () -> (reset the peak, read the peak in MB, read the current level in MB)
MemoryHooks = Callable[[], tuple[Callable[[], None], Callable[[], float | None], Callable[[], float | None]]]


@dataclass
class VariantTimes:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    #: largest (peak during a call - resident before it): what the call itself added
    peak_mem_delta_mb: float | None = None
    gpu_ms: list[float] = field(default_factory=list)


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    runs: int,
    warmup: int = 1,
    *,
    memory: MemoryHooks | None = None,
    gpu_timer: Callable[[Callable[[], Any]], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, VariantTimes]:
    """Time each variant `runs` times, round-robin, reversing the order every other round.

    `memory()` returns (reset, read_peak_mb, read_current_mb) hooks; `gpu_timer(fn)` runs fn and
    returns device ms.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    names = list(fns)
    out = {n: VariantTimes() for n in names}
    reset, read, current = memory() if memory is not None else (_noop, _none, _none)
    for w in range(warmup):
        for n in names:
            if progress:
                progress(f"warm-up {w + 1}/{warmup}: {n}")
            fns[n]()
    for r in range(runs):
        for n in names if r % 2 == 0 else names[::-1]:
            if progress:
                progress(f"run {r + 1}/{runs}: {n}")
            reset()
            before = current()
            c0, t0 = time.process_time(), time.perf_counter()
            if gpu_timer is not None:
                out[n].gpu_ms.append(gpu_timer(fns[n]))
            else:
                fns[n]()
            t1, c1 = time.perf_counter(), time.process_time()
            out[n].wall_ms.append((t1 - t0) * 1000.0)
            out[n].cpu_ms.append((c1 - c0) * 1000.0)
            peak = read()
            if peak is not None:
                out[n].peak_mem_mb = max(peak, out[n].peak_mem_mb or 0.0)
                if before is not None:
                    out[n].peak_mem_delta_mb = max(peak - before, out[n].peak_mem_delta_mb or 0.0)
    return out


def _noop() -> None:
    return None


def _none() -> float | None:
    return None


def variant_report(v: VariantTimes, batch: int, **extra: Any) -> dict[str, Any]:
    rep: dict[str, Any] = dict(extra)
    rep.update(latency_stats(v.wall_ms, batch))
    rep["peak_mem_mb"] = v.peak_mem_mb
    rep["peak_mem_delta_mb"] = v.peak_mem_delta_mb
    rep["cpu_median_ms"] = float(statistics.median(v.cpu_ms))
    if v.gpu_ms:
        g = latency_stats(v.gpu_ms, batch)
        rep["gpu_median_ms"], rep["gpu_mean_ms"], rep["gpu_p99_ms"] = g["median_ms"], g["mean_ms"], g["p99_ms"]
    rep["wall_ms"] = [round(x, 3) for x in v.wall_ms]
    rep["cpu_ms"] = [round(x, 3) for x in v.cpu_ms]
    return rep


def variant_name(keep: float) -> str:
    return "dense" if keep >= 1.0 else f"keep={keep:g}"


def assemble_report(
    kind: str,
    times: dict[str, VariantTimes],
    keeps: dict[str, float | None],
    main: str,
    batch: int,
    settings: dict[str, Any],
    model: dict[str, Any] | None = None,
    macs: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One report: the served variant's stats at top level, every variant under `variants`,
    pruned/dense ratios when a dense variant was timed, and the keep sweep when there was one."""
    variants = {
        n: variant_report(t, batch, keep=keeps.get(n), **({"macs": macs[n]} if macs and n in macs else {}))
        for n, t in times.items()
    }
    rep: dict[str, Any] = {"kind": kind, "variant": main, "keep": keeps.get(main)}
    rep.update({k: variants[main][k] for k in REPORT_KEYS})
    dense = next((n for n, k in keeps.items() if k is not None and k >= 1.0 and n in times), None)
    if dense is not None and dense != main:
        r = ratio_stats(times[main].wall_ms, times[dense].wall_ms)
        rep["dense_median_ms"] = variants[dense]["median_ms"]
        rep["dense_peak_mem_mb"] = variants[dense]["peak_mem_mb"]
        rep["pruned_over_dense"] = r["ratio_of_medians"]
        rep["pruned_over_dense_paired"] = r["median_paired_ratio"]
        rep["pruned_over_dense_cpu_time"] = ratio_stats(times[main].cpu_ms, times[dense].cpu_ms)["ratio_of_medians"]
    sweep = sorted(((k, n) for n, k in keeps.items() if k is not None and n in times), reverse=True)
    if len(sweep) > 2 and dense is not None:
        d = variants[dense]["median_ms"]
        rep["keep_sweep"] = [
            {
                "keep": k,
                "median_ms": variants[n]["median_ms"],
                "latency_ratio": variants[n]["median_ms"] / d,
                "latency_ratio_paired": ratio_stats(times[n].wall_ms, times[dense].wall_ms)["median_paired_ratio"],
                "macs_ratio": (macs[n] / macs[dense]) if macs and n in macs and dense in macs else None,
            }
            for k, n in sweep
        ]
    rep["variants"] = variants
    rep["settings"] = settings
    if model is not None:
        rep["model"] = model
    rep["machine"] = machine_info()
    rep["command"] = command_line()
    return rep


# ---- machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, library versions, GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    with contextlib.suppress(ImportError):
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {
                "name": p.name,
                "compute_capability": f"{p.major}.{p.minor}",
                "memory_mb": p.total_memory // 2**20,
                "cuda": torch.version.cuda,
            }
        else:
            info["gpu"] = None
    with contextlib.suppress(ImportError):
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    return info


def command_line() -> str:
    """The exact command that produced a report (argv, shell-quoted)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("xpr", "__main__.py")):
        argv[0] = "xpr"
    return shlex.join(argv)


# ---- inputs ----------------------------------------------------------------------------------
def example_views(shape: Sequence[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 views of `shape` [B, 1, H, W]: a smooth breast-like blob plus noise.

    Timing does not depend on the pixel values except through which windows are kept; smooth
    content with a bright region avoids the exact score ties of pure noise.
    """
    rng = np.random.default_rng(seed)
    b, c, h, w = (int(s) for s in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(2):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.0, 0.3) * w
        blob = np.exp(-(((yy - cy) / (0.35 * h)) ** 2 + ((xx - cx) / (0.6 * w)) ** 2))
        img = blob[None, None] * 2.0 - 1.0 + 0.1 * rng.standard_normal((b, c, h, w), dtype=np.float32)
        out.append(np.ascontiguousarray(img, dtype=np.float32))
    return out[0], out[1]


# ---- eager ---------------------------------------------------------------------------------
def _torch_dtype(name: str) -> Any:
    import torch

    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise BenchError(f"dtype {name!r}: choose fp32, fp16 or bf16")
    return table[name]


def _model_summary(model: Any) -> dict[str, Any]:
    cfg = model.cfg
    return {"config": cfg.name, "img_size": list(cfg.img_size), "keep_ratios": list(model.keep_ratios)}


def _macs_for_keep(cfg: Any, keep: float) -> float:
    from .model.summary import macs

    return float(macs(cfg.with_prune_rates(1.0 - keep), pruned=True))


def bench_eager(
    model: Any,
    *,
    runs: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    batch: int = 1,
    dense: bool = False,
    keep_sweep: Sequence[float] | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    mode: str = "eager",
    inputs: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time an XPruning model in PyTorch: its own keep ratio, plus dense (keep 1.0) and a sweep.

    All variants share the weights; `set_keep` switches K between calls (restored afterwards).
    `mode`: "eager", "compile" (torch.compile, one compiled graph per keep ratio) or "cuda-graph"
    (capture per keep ratio, replay; CUDA only). Half precision runs under autocast, so LayerNorm,
    softmax and the window scores stay in FP32 as in the FP16 export.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if mode not in ("eager", "compile", "cuda-graph"):
        raise BenchError(f"mode {mode!r}: choose eager, compile or cuda-graph")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("CUDA requested but torch sees no GPU")
    if mode == "cuda-graph" and dev.type != "cuda":
        raise BenchError("cuda-graph mode needs --device cuda")
    tdtype = _torch_dtype(dtype)
    model = model.eval().to(dev)
    own = model.keep_ratios
    main_keep = own[0] if len(set(own)) == 1 else None
    keeps: dict[str, list[float]] = {"pruned": list(own)}
    if dense:
        keeps["dense"] = [1.0] * len(own)
    for k in keep_sweep or ():
        name = variant_name(float(k))
        if name == "dense" or [float(k)] * len(own) != own:
            keeps.setdefault(name, [float(k)] * len(own))
    if inputs is None:
        inputs = example_views((batch, model.cfg.in_chans, *model.cfg.img_size))
    cc = torch.from_numpy(inputs[0]).to(dev)
    mlo = torch.from_numpy(inputs[1]).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def autocast() -> Any:  # fresh per use; its weight-cast cache must be off while a CUDA graph is captured
        if tdtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=tdtype, cache_enabled=mode != "cuda-graph")

    def make(keep: list[float]) -> Callable[[], Any]:
        if mode == "compile":
            model.set_keep(keep)
            compiled = torch.compile(model, dynamic=False)

            def run_c() -> Any:
                model.set_keep(keep)
                with torch.inference_mode(), autocast():
                    out = compiled(cc, mlo)
                sync()
                return out

            return run_c
        if mode == "cuda-graph":
            model.set_keep(keep)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s), torch.inference_mode(), autocast():
                for _ in range(2):
                    model(cc, mlo)  # warm the allocator and kernels before capture
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode(), autocast():
                model(cc, mlo)

            def run_g() -> None:
                graph.replay()
                sync()

            return run_g

        def run() -> Any:
            model.set_keep(keep)
            with torch.inference_mode(), autocast():
                out = model(cc, mlo)
            sync()
            return out

        return run

    try:
        fns = {n: make(k) for n, k in keeps.items()}
        memory, gpu_timer = _torch_memory_hooks(dev), (_cuda_event_timer if dev.type == "cuda" else None)
        times = time_interleaved(fns, runs, warmup, memory=memory, gpu_timer=gpu_timer, progress=progress)
    finally:
        model.set_keep(own)
    uniform = {n: (k[0] if len(set(k)) == 1 else None) for n, k in keeps.items()}
    uniform["pruned"] = main_keep
    macs = {n: _macs_for_keep(model.cfg, k) for n, k in uniform.items() if k is not None}
    settings = {
        "runs": runs,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "device": str(dev),
        "dtype": dtype,
        "mode": mode,
        "memory": PeakRSS().scope if dev.type == "cpu" else "torch.cuda.max_memory_allocated per call",
    }
    return assemble_report("eager", times, uniform, "pruned", batch, settings, _model_summary(model), macs)


def _torch_memory_hooks(dev: Any) -> MemoryHooks:
    import torch

    def hooks() -> tuple[Callable[[], None], Callable[[], float | None], Callable[[], float | None]]:
        if dev.type == "cuda":
            return (
                lambda: torch.cuda.reset_peak_memory_stats(dev),
                lambda: torch.cuda.max_memory_allocated(dev) / 2**20,
                lambda: torch.cuda.memory_allocated(dev) / 2**20,
            )
        return rss_hooks()

    return hooks


def _cuda_event_timer(fn: Callable[[], Any]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


# ---- ONNX Runtime --------------------------------------------------------------------------
def resolve_onnx(path: str | Path, precision: str | None = None) -> tuple[Path, Path | None, dict[str, Any] | None]:
    """(graph file, bundle folder or None, manifest or None) for a bundle folder, manifest or .onnx."""
    p = Path(path)
    if not p.exists():
        raise BenchError(f"{p}: no such file or folder")
    bundle = p if p.is_dir() else p.parent
    manifest = None
    if (bundle / "manifest.json").is_file():
        try:
            manifest = json.loads((bundle / "manifest.json").read_text())
        except ValueError as exc:
            raise BenchError(f"{bundle / 'manifest.json'}: unreadable ({exc})") from None
    if p.is_dir() or p.name == "manifest.json":
        if manifest is None:
            raise BenchError(f"{p}: no manifest.json (give an export bundle or an .onnx file)")
        from .triton import onnx_file

        return onnx_file(bundle, manifest, precision), bundle, manifest
    if p.suffix != ".onnx":
        raise BenchError(f"{p}: not an .onnx file or export bundle")
    return p, (bundle if manifest is not None else None), manifest


def ort_session_options(threads: int | None = None, low_memory: bool = True, profile_prefix: str | None = None) -> Any:
    """CPU session options used by the bench (and recommended for CPU serving).

    `low_memory` turns off ONNX Runtime's memory-pattern planner: at 2688x896 it reserves one
    block for the whole plan on the second run and the peak RSS nearly doubles, for no speed-up
    measurable here.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if low_memory:
        so.enable_mem_pattern = False
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def _providers(requested: Sequence[str] | None) -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in have]
        if missing:
            raise BackendUnavailable(f"ONNX Runtime providers {missing} not available (have {have})")
        return list(requested)
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]


def export_variant_graphs(
    bundle_manifest: dict[str, Any],
    keeps: Sequence[float],
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[float, Path]:
    """The same weights as a bundle, exported at other keep ratios (dense = 1.0) for comparison.

    ONNX graphs have K baked in, so a dense or keep-sweep comparison needs one graph per ratio;
    the weights come from the bundle's source checkpoint (or its recorded random seed).
    """
    from .export.onnx import export_onnx
    from .validate import model_from_manifest

    model = model_from_manifest(bundle_manifest)
    batch = int(bundle_manifest.get("batch", 1))
    paths = {}
    for k in keeps:
        if progress:
            progress(f"exporting keep {k:g} (same weights)")
        model.set_keep(float(k))
        p = out_dir / f"keep{k:g}.onnx"
        export_onnx(model, p, batch=batch)
        paths[float(k)] = p
    return paths


def bench_onnx(
    path: str | Path,
    *,
    runs: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    dense: bool = False,
    keep_sweep: Sequence[float] | None = None,
    dense_path: str | Path | None = None,
    sweep_paths: dict[float, Path] | None = None,
    providers: Sequence[str] | None = None,
    precision: str | None = None,
    low_memory: bool = True,
    profile_dir: str | Path | None = None,
    inputs: tuple[np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time an ONNX graph (bundle or file) in ONNX Runtime; with `dense`/`keep_sweep`, the same
    weights at other keep ratios run interleaved in the same process (graphs exported on the fly
    from the bundle's source unless given as `dense_path` / `sweep_paths`)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
    graph, bundle, manifest = resolve_onnx(path, precision)
    own_keep = _bundle_keep(manifest)
    want: list[float] = sorted({1.0} if dense else set()) + [float(k) for k in keep_sweep or ()]
    want = [k for k in dict.fromkeys(want) if own_keep is None or abs(k - own_keep) > 1e-9]
    given: dict[float, Path] = dict(sweep_paths or {})
    if dense_path is not None:
        given[1.0] = Path(dense_path)
    with contextlib.ExitStack() as stack:
        missing = [k for k in want if k not in given]
        if missing:
            if manifest is None:
                raise BenchError(
                    f"{graph}: --dense / --keep-sweep on a bare .onnx needs the export bundle (its manifest "
                    "names the weights) or --dense-onnx"
                )
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xpr-bench-")))
            given.update(export_variant_graphs(manifest, missing, tmp, progress))
        provs = _providers(providers)
        sessions: dict[str, Any] = {}
        keeps: dict[str, float | None] = {"pruned": own_keep}
        files: dict[str, str] = {"pruned": str(graph)}

        def session(p: Path, name: str) -> Any:
            prefix = str(Path(profile_dir) / f"ort_{name}") if profile_dir else None
            if profile_dir:
                Path(profile_dir).mkdir(parents=True, exist_ok=True)
            try:
                return ort.InferenceSession(str(p), ort_session_options(threads, low_memory, prefix), providers=provs)
            except Exception as exc:  # ORT raises its own exception types
                raise BenchError(f"{p}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None

        sessions["pruned"] = session(graph, "pruned")
        for k in want:
            n = variant_name(k)
            sessions[n], keeps[n], files[n] = session(given[k], n), k, str(given[k])
        first = sessions["pruned"].get_inputs()
        shape = [int(d) for d in first[0].shape]
        if inputs is None:
            inputs = example_views(shape)
        feed = {first[0].name: inputs[0], first[1].name: inputs[1]} if len(first) > 1 else {first[0].name: inputs[0]}
        out_names = {n: [o.name for o in s.get_outputs() if not o.name.startswith("sel_")] for n, s in sessions.items()}
        fns: dict[str, Callable[[], Any]] = {
            n: functools.partial(s.run, out_names[n], feed) for n, s in sessions.items()
        }
        memory = rss_hooks if "CUDAExecutionProvider" not in provs else None
        times = time_interleaved(fns, runs, warmup, memory=memory, progress=progress)
        profiles = {n: s.end_profiling() for n, s in sessions.items()} if profile_dir else None
    macs = None
    cfg = _bundle_config(manifest)
    if cfg is not None:
        macs = {n: _macs_for_keep(cfg, k) for n, k in keeps.items() if k is not None}
    settings: dict[str, Any] = {
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "batch": shape[0],
        "providers": provs,
        "precision": precision or (manifest or {}).get("precision"),
        "low_memory": low_memory,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "files": files,
        "memory": PeakRSS().scope if "CUDAExecutionProvider" not in provs else "not measured (GPU provider)",
    }
    if profiles:
        settings["profiles"] = profiles
    model: dict[str, Any] = {"graph": str(graph), "bundle": str(bundle) if bundle else None}
    if cfg is not None:
        model.update({"config": cfg.name, "img_size": list(cfg.img_size)})
    rep = assemble_report("onnx", times, keeps, "pruned", shape[0], settings, model, macs)
    if profiles:
        rep["profile_summary"] = {n: summarize_ort_profile(p) for n, p in profiles.items()}
    return rep


def rss_hooks() -> tuple[Callable[[], None], Callable[[], float | None], Callable[[], float | None]]:
    rss = PeakRSS()
    return rss.reset, rss.peak_mb, rss.current_mb


def _bundle_keep(manifest: dict[str, Any] | None) -> float | None:
    if not manifest or "model_config" not in manifest:
        return None
    rates = manifest["model_config"].get("prune_rates") or []
    return 1.0 - float(rates[0]) if rates and len(set(rates)) == 1 else None


def _bundle_config(manifest: dict[str, Any] | None) -> Any:
    if not manifest or "model_config" not in manifest:
        return None
    from .config import ModelConfig

    try:
        return ModelConfig.from_dict(manifest["model_config"])
    except (TypeError, ValueError):
        return None


def summarize_ort_profile(profile_json: str | Path, top: int = 12) -> dict[str, Any]:
    """Kernel time per op type (ms per run, share) from an ONNX Runtime profile, biggest first."""
    events = json.loads(Path(profile_json).read_text())
    runs = sum(1 for e in events if e.get("name") == "model_run") or 1
    per_op: dict[str, float] = {}
    count: dict[str, int] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = str(e.get("args", {}).get("op_name", "?"))
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0)) / 1000.0
            count[op] = count.get(op, 0) + 1
    total = sum(per_op.values()) or 1.0
    rows = sorted(per_op.items(), key=lambda kv: -kv[1])
    return {
        "runs_profiled": runs,
        "kernel_ms_per_run": total / runs,
        "ops": [
            {"op": op, "ms_per_run": ms / runs, "share": ms / total, "nodes": count[op] // runs}
            for op, ms in rows[:top]
        ],
    }


# ---- engines ---------------------------------------------------------------------------------
def bench_engine(
    path: str | Path, *, runs: int = 20, warmup: int = 3, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Time a TensorRT / TensorRT-RTX engine: host wall time and GPU compute time (CUDA events).

    Without an NVIDIA GPU or the backend the report says `skipped` with the reason, never fails.
    """
    p = Path(path)
    if p.is_dir():  # a bundle: its first engine
        man = json.loads((p / "manifest.json").read_text()) if (p / "manifest.json").is_file() else {}
        engines = man.get("engines") or []
        if not engines:
            reason = man.get("engine_skipped") or "the bundle lists no engine"
            return {
                "kind": "engine",
                "skipped": True,
                "reason": f"{p}: {reason}",
                "machine": machine_info(),
                "command": command_line(),
            }
        p = p / engines[0]["path"]
    try:
        from .engine.runtime import load_engine

        runner = load_engine(p)
    except BackendUnavailable as exc:
        return {
            "kind": "engine",
            "skipped": True,
            "reason": str(exc),
            "machine": machine_info(),
            "command": command_line(),
        }
    import torch

    eng, ctx = runner.engine, runner.context
    dt = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32}
    shapes = {n: tuple(int(d) for d in eng.get_tensor_shape(n)) for n in runner.input_names + runner.output_names}
    views = example_views(shapes[runner.input_names[0]])
    torch.cuda.reset_peak_memory_stats()
    bufs: dict[str, torch.Tensor] = {}
    for i, n in enumerate(runner.input_names):
        bufs[n] = torch.from_numpy(views[min(i, 1)]).to("cuda", dt[eng.get_tensor_dtype(n).name])
    for n in runner.output_names:
        bufs[n] = torch.empty(shapes[n], dtype=dt[eng.get_tensor_dtype(n).name], device="cuda")
    for n, b in bufs.items():
        ctx.set_tensor_address(n, b.data_ptr())
    stream = torch.cuda.Stream()
    host_cc = torch.from_numpy(views[0]).pin_memory()
    host_mlo = torch.from_numpy(views[1]).pin_memory()

    def compute() -> None:
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise XprError(f"{p}: engine execution failed")

    def end_to_end() -> None:  # host -> device copies, compute, prob back to the host
        with torch.cuda.stream(stream):
            bufs[runner.input_names[0]].copy_(host_cc, non_blocking=True)
            if len(runner.input_names) > 1:
                bufs[runner.input_names[1]].copy_(host_mlo, non_blocking=True)
            compute()
            out = bufs.get("prob", bufs[runner.output_names[0]]).to("cpu", non_blocking=True)
        stream.synchronize()
        del out

    def gpu_timer(fn: Callable[[], Any]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(stream):
            start.record(stream)
            compute()
            end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))

    times = time_interleaved({"engine": end_to_end}, runs, warmup, progress=progress)
    gpu = time_interleaved({"engine": end_to_end}, runs, 0, gpu_timer=gpu_timer)["engine"].gpu_ms
    times["engine"].gpu_ms = gpu
    act = int(getattr(eng, "device_memory_size_v2", 0) or getattr(eng, "device_memory_size", 0) or 0)
    times["engine"].peak_mem_mb = (act + torch.cuda.max_memory_allocated()) / 2**20
    settings = {
        "runs": runs,
        "warmup": warmup,
        "backend": runner.entry.get("backend"),
        "version": runner.entry.get("version"),
        "engine": str(p),
        "memory": "engine activation memory + I/O buffers (torch allocator peak)",
        "timing": "wall: host->device copy + execute + prob back; gpu: CUDA events around execute only",
    }
    rep = assemble_report("engine", times, {"engine": None}, "engine", shapes[runner.input_names[0]][0], settings)
    rep["gpu_median_ms"] = rep["variants"]["engine"].get("gpu_median_ms")
    rep["host_overhead_median_ms"] = rep["median_ms"] - (rep["gpu_median_ms"] or 0.0)
    return rep


# ---- keep-sweep plot ---------------------------------------------------------------------------
def plot_keep_sweep(report: dict[str, Any], png: str | Path, title: str | None = None) -> Path:
    """Latency (relative to dense) against keep ratio, next to the multiply-add ratio (`xpr info`)."""
    import matplotlib

    from .io import write_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report.get("keep_sweep")
    if not sweep:
        raise BenchError("the report has no keep sweep (run with --keep-sweep and a dense point, keep 1.0)")
    ks = [s["keep"] for s in sweep]
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ax.plot(ks, [s["latency_ratio"] for s in sweep], "o-", label=f"latency / dense ({report['kind']})")
    if all(s.get("macs_ratio") is not None for s in sweep):
        ax.plot(ks, [s["macs_ratio"] for s in sweep], "s--", label="multiply-adds / dense")
    ax.plot([min(ks), 1.0], [min(ks), 1.0], ":", color="grey", label="proportional to keep")
    ax.set_xlabel("keep ratio (1 - r), all stages")
    ax.set_ylabel("relative to dense (keep 1.0)")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"{(report.get('model') or {}).get('config', '')} {report['kind']}: keep sweep", fontsize=10)
    fig.tight_layout()
    return write_figure(fig, png)


# ---- isolated runs -----------------------------------------------------------------------------
def run_isolated(args: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """`xpr bench ARGS --json TMP` in a fresh process: a clean peak-memory figure for one backend."""
    with tempfile.TemporaryDirectory(prefix="xpr-bench-") as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "xpr_deploy.cli", "bench", *args, "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode or not out.is_file():
            raise BenchError(f"isolated bench failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
        rep: dict[str, Any] = json.loads(out.read_text())
        rep["isolated_command"] = shlex.join(["xpr", "bench", *args])
        return rep


@contextlib.contextmanager
def env_threads(threads: int | None) -> Iterator[None]:
    """OMP/MKL thread variables for child processes (the parent's torch already chose its own)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    old = {k: os.environ.get(k) for k in keys}
    if threads:
        for k in keys:
            os.environ[k] = str(threads)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def print_summary(rep: dict[str, Any], write: Callable[[str], None] = print) -> None:
    """A few plain lines for the terminal."""
    if rep.get("skipped"):
        write(f"{rep['kind']}: skipped — {rep['reason']}")
        return
    mem = rep.get("peak_mem_mb")
    write(
        f"{rep['kind']} ({rep['variant']}): median {rep['median_ms']:.1f} ms, p90 {rep['p90_ms']:.1f}, "
        f"p99 {rep['p99_ms']:.1f}, min {rep['min_ms']:.1f}, mean {rep['mean_ms']:.1f} ms; "
        f"{rep['throughput_per_s']:.3g} breasts/s; peak mem {mem:.0f} MB"
        if mem is not None
        else f"{rep['kind']}: median {rep['median_ms']:.1f} ms"
    )
    if "gpu_median_ms" in rep and rep["gpu_median_ms"] is not None:
        write(f"  GPU compute {rep['gpu_median_ms']:.2f} ms, host overhead {rep['host_overhead_median_ms']:.2f} ms")
    if "pruned_over_dense" in rep:
        write(
            f"  dense median {rep['dense_median_ms']:.1f} ms; pruned/dense {rep['pruned_over_dense']:.3f} "
            f"(paired {rep['pruned_over_dense_paired']:.3f}, CPU time {rep['pruned_over_dense_cpu_time']:.3f})"
        )
    for s in rep.get("keep_sweep") or []:
        mr = f", MACs {s['macs_ratio']:.3f}" if s.get("macs_ratio") is not None else ""
        write(f"  keep {s['keep']:<5g} median {s['median_ms']:9.1f} ms  latency/dense {s['latency_ratio']:.3f}{mr}")


# ---- xpr demo --------------------------------------------------------------------------------
def demo_step(ctx: Any) -> dict[str, Any]:
    """`xpr demo` step: a short bench of the demo model, pruned against dense, eager and ONNX Runtime.

    Tiny config on a shared CPU: the figures show the report and the ratio machinery, not speed.
    """
    from .io import write_json
    from .train.checkpoint import load_checkpoint

    out = Path(ctx.out) / "bench"
    model, _ = load_checkpoint(str(ctx.artifacts["checkpoint"]))
    reports = {"eager": bench_eager(model, runs=3, warmup=1, threads=2, dense=True)}
    bundle = ctx.artifacts.get("bundle")
    if bundle is not None:
        path = Path(getattr(bundle, "path", bundle))
        reports["onnx"] = bench_onnx(path, runs=3, warmup=1, threads=2, dense=True, precision="fp32")
    for name, rep in reports.items():
        write_json(out / f"{name}.json", rep)
        ctx.log(f"  {name}: median {rep['median_ms']:.1f} ms, pruned/dense {rep['pruned_over_dense']:.2f}")
    ctx.artifacts["bench"] = out
    return {
        name: {k: rep.get(k) for k in ("median_ms", "p99_ms", "peak_mem_mb", "dense_median_ms", "pruned_over_dense")}
        for name, rep in reports.items()
    } | {"reports": str(out)}
