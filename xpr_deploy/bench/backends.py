"""The backends timed by `xpr bench`: eager PyTorch, ONNX Runtime and TensorRT engines, pruned
against dense, plus isolated runs in a fresh process and the `xpr demo` bench step.

Each builds its variants' callables, hands them to the interleaved timer and assembles the report.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, XprError
from .errors import BenchError
from .inputs import example_views
from .machine import command_line, machine_info
from .memory import PeakRSS, _torch_memory_hooks, rss_hooks
from .report import assemble_report, summarize_ort_profile, variant_name
from .timer import _cuda_event_timer, time_interleaved


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
    from ..model.summary import macs

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
        from ..triton import onnx_file

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
    from ..export.onnx import export_onnx
    from ..validate import model_from_manifest

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


def _bundle_keep(manifest: dict[str, Any] | None) -> float | None:
    if not manifest or "model_config" not in manifest:
        return None
    rates = manifest["model_config"].get("prune_rates") or []
    return 1.0 - float(rates[0]) if rates and len(set(rates)) == 1 else None


def _bundle_config(manifest: dict[str, Any] | None) -> Any:
    if not manifest or "model_config" not in manifest:
        return None
    from ..config import ModelConfig

    try:
        return ModelConfig.from_dict(manifest["model_config"])
    except (TypeError, ValueError):
        return None


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
        from ..engine.runtime import load_engine

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


# ---- xpr demo --------------------------------------------------------------------------------
def demo_step(ctx: Any) -> dict[str, Any]:
    """`xpr demo` step: a short bench of the demo model, pruned against dense, eager and ONNX Runtime.

    Tiny config on a shared CPU: the figures show the report and the ratio machinery, not speed.
    """
    from ..io import write_json
    from ..train.checkpoint import load_checkpoint

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
