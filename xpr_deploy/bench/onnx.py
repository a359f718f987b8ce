"""`xpr bench --onnx BUNDLE`: the bundle's graph in ONNX Runtime through `runners.OnnxRuntimeRunner`
(the session settings predict serves with, threads and profiling as asked); with `dense` / a keep
sweep, the same weights at other keep ratios run interleaved in the same process.

ONNX graphs have K baked in, so a dense or keep-sweep comparison needs one graph per ratio: they are
exported on the fly from the bundle's source weights (or given, e.g. `--dense-onnx`).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PredictError
from ..runners import BACKENDS, ModelSource, backend_spec, make_runner, open_source, source_model
from ..runners.onnxrt import OnnxRuntimeRunner, OrtSettings
from .eager import macs_for_keep
from .errors import BenchError
from .inputs import example_views
from .memory import PeakRSS, rss_hooks
from .report import assemble_report, summarize_ort_profile, variant_name
from .timer import time_interleaved


def open_bundle(path: str | Path) -> ModelSource:
    """The verified bundle behind `--onnx` (a bundle folder, its manifest, or a graph inside it)."""
    p = Path(path)
    if not p.exists():
        raise BenchError(f"{p}: no such file or folder")
    try:
        src = open_source(p)
    except PredictError as exc:
        raise BenchError(f"{p}: not an export bundle ({exc})") from None
    if src.bundle is None:
        raise BenchError(f"{p}: --onnx takes an export bundle (this is a checkpoint: use --eager)")
    return src


def export_variant_graphs(
    source: ModelSource, keeps: Sequence[float], out_dir: Path, progress: Callable[[str], None] | None = None
) -> dict[float, Path]:
    """The bundle's weights exported at other keep ratios (dense = 1.0), for comparison only."""
    from ..export.onnx import export_onnx

    model = source_model(source)
    assert source.bundle is not None
    paths = {}
    for k in keeps:
        if progress:
            progress(f"exporting keep {k:g} (same weights)")
        model.set_keep(float(k))
        p = out_dir / f"keep{k:g}.onnx"
        export_onnx(model, p, batch=source.bundle.batch)
        paths[float(k)] = p
    return paths


def ort_backends() -> list[str]:
    """The registered backends `xpr bench --onnx` can time (those that run an ONNX Runtime session)."""
    return [n for n, s in BACKENDS.items() if s.ort]


def backend_ratios(times: dict[str, Any], main: str, other: str, files: dict[str, str]) -> dict[str, Any]:
    """`main` against `other` from one interleaved run: time (ratio of medians and median of paired
    ratios, wall and CPU), peak memory of each, graph size of each (weights included)."""
    from .stats import ratio_stats

    r = ratio_stats(times[main].wall_ms, times[other].wall_ms)
    size = {n: graph_bytes(Path(files[n])) for n in (main, other)}
    return {
        "time_ratio": r["ratio_of_medians"], "time_ratio_paired": r["median_paired_ratio"],
        "cpu_time_ratio": ratio_stats(times[main].cpu_ms, times[other].cpu_ms)["ratio_of_medians"],
        "peak_mem_mb": {main: times[main].peak_mem_mb, other: times[other].peak_mem_mb},
        "peak_mem_delta_mb": {main: times[main].peak_mem_delta_mb, other: times[other].peak_mem_delta_mb},
        "graph_mb": {n: round(b / 2**20, 2) for n, b in size.items()},
    }  # fmt: skip


def graph_bytes(graph: Path) -> int:
    """A graph's size on disk with its external weights file, if any."""
    data = graph.with_name(graph.name + ".data")
    return graph.stat().st_size + (data.stat().st_size if data.exists() else 0)


def bundle_keep(source: ModelSource) -> float | None:
    rates = list(source.cfg.prune_rates)
    return 1.0 - float(rates[0]) if rates and len(set(rates)) == 1 else None


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
    backend: str = "onnx",
    against: Sequence[str] = (),
) -> dict[str, Any]:
    """Time a bundle's graph (`precision`, else the one pointed at, else the served one) with the
    registered ONNX Runtime `backend`; each of `against` (other registered ONNX Runtime backends, or
    `onnx:fp32`-style backend:precision pairs) runs the same bundle interleaved with it, and the
    report gives each one's time, peak memory and graph size over the main one's."""
    source = open_bundle(path)
    check_ort_backends(backend, against)
    own_keep = bundle_keep(source)
    want = variant_keeps(own_keep, dense, keep_sweep)
    given: dict[float, Path] = dict(sweep_paths or {})
    if dense_path is not None:
        given[1.0] = Path(dense_path)
    settings_for = functools.partial(
        ort_settings, providers=providers, threads=threads, low_memory=low_memory, profile_dir=profile_dir
    )
    with contextlib.ExitStack() as stack:
        missing = [k for k in want if k not in given]
        if missing:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xpr-bench-")))
            given.update(export_variant_graphs(source, missing, tmp, progress))
        runners, keeps, files = open_runners(source, backend, precision, against, {k: given[k] for k in want},
                                             settings_for)  # fmt: skip
        for r in runners.values():
            stack.enter_context(r)
        first = runners["pruned"]
        times, profiles, shape, on_cpu = time_runners(runners, source.io, inputs, runs, warmup, progress,
                                                      profile=bool(profile_dir))  # fmt: skip
        description = first.describe()
    settings = run_settings(first, description, files, profiles, runs=runs, warmup=warmup, threads=threads,
                            batch=shape[0], low_memory=low_memory, on_cpu=on_cpu)  # fmt: skip
    macs = {n: macs_for_keep(source.cfg, k) for n, k in keeps.items() if k is not None}
    rep = assemble_report(
        "onnx", times, keeps, "pruned", shape[0], settings, model_entry(source, files["pruned"]), macs
    )
    if against:
        rep["backend"] = backend
        rep["against"] = {a: backend_ratios(times, "pruned", a, files) for a in against}
    if profiles:
        rep["profile_summary"] = {n: summarize_ort_profile(p) for n, p in profiles.items()}
    return rep


def model_entry(source: ModelSource, graph: str) -> dict[str, Any]:
    """The report's `model`: which bundle (and its digest) and which graph of it was timed."""
    view = source.bundle
    assert view is not None
    return {
        "graph": graph, "bundle": str(view.root), "bundle_sha256": view.digest,
        "config": source.cfg.name, "img_size": list(source.cfg.img_size),
    }  # fmt: skip


def run_settings(
    first: OnnxRuntimeRunner,
    description: dict[str, Any],
    files: dict[str, str],
    profiles: dict[str, str] | None,
    *,
    runs: int,
    warmup: int,
    threads: int | None,
    batch: int,
    low_memory: bool,
    on_cpu: bool,
) -> dict[str, Any]:
    """The report's `settings`: how the main runner's session ran, so that a result can be reproduced."""
    settings: dict[str, Any] = {
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "batch": batch,
        "providers": list(first.settings.providers),
        "precision": description["precision"],
        "low_memory": low_memory,
        "buffer_reuse": first.settings.buffer_reuse,
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "runner": description,
        "files": files,
        "memory": PeakRSS().scope if on_cpu else "not measured (GPU provider)",
    }
    if profiles:
        settings["profiles"] = profiles
    return settings


def time_runners(
    runners: dict[str, OnnxRuntimeRunner],
    io: Any,
    inputs: tuple[np.ndarray, np.ndarray] | None,
    runs: int,
    warmup: int,
    progress: Callable[[str], None] | None,
    *,
    profile: bool,
) -> tuple[dict[str, Any], dict[str, str] | None, list[int], bool]:
    """Time the opened runners interleaved on one pair of views (`inputs`, else example views of the
    graph's input shape): (times, profile file per runner or None, input shape, peak memory measured:
    on CPU only)."""
    first = runners["pruned"]
    shape = [int(d) for d in first.sess.get_inputs()[0].shape]
    if inputs is None:
        inputs = example_views(shape)
    feed = {io.cc: inputs[0], io.mlo: inputs[1]}
    fns: dict[str, Callable[[], Any]] = {
        n: functools.partial(r.infer, feed, check_inputs=False) for n, r in runners.items()
    }
    on_cpu = "CUDAExecutionProvider" not in first.settings.providers
    times = time_interleaved(fns, runs, warmup, memory=rss_hooks if on_cpu else None, progress=progress)
    profiles = {n: r.sess.end_profiling() for n, r in runners.items()} if profile else None
    return times, profiles, shape, on_cpu


def check_ort_backends(backend: str, against: Sequence[str]) -> None:
    """Refuse, before any session opens, a backend (main or compared) that is not an ONNX Runtime one."""
    for name in (backend, *(a.split(":")[0] for a in against)):
        if not backend_spec(name).ort:
            raise BenchError(f"--backend {name}: not an ONNX Runtime backend (choose {', '.join(ort_backends())})")


def variant_keeps(own_keep: float | None, dense: bool, keep_sweep: Sequence[float] | None) -> list[float]:
    """The keep ratios to time beside the bundle's own (dense = 1.0 first), without repeats or the
    bundle's own ratio (already timed as "pruned")."""
    want: list[float] = ([1.0] if dense else []) + [float(k) for k in keep_sweep or ()]
    return [k for k in dict.fromkeys(want) if own_keep is None or abs(k - own_keep) > 1e-9]


def ort_settings(
    name: str,
    *,
    providers: Sequence[str] | None,
    threads: int | None,
    low_memory: bool,
    profile_dir: str | Path | None,
) -> OrtSettings:
    """One variant's session settings: the same for all, but each profiles into its own file."""
    prefix = None
    if profile_dir:
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        prefix = str(Path(profile_dir) / f"ort_{name}")
    return OrtSettings(providers=tuple(providers or ()), threads=threads, low_memory=low_memory, profile_prefix=prefix)


def open_runners(
    source: ModelSource,
    backend: str,
    precision: str | None,
    against: Sequence[str],
    variant_graphs: dict[float, Path],
    settings_for: Callable[[str], OrtSettings],
) -> tuple[dict[str, OnnxRuntimeRunner], dict[str, float | None], dict[str, str]]:
    """The runners timed together, by report name: "pruned" (the bundle through `backend`), each of
    `against`, then each keep-ratio variant; with each one's keep ratio and graph file. Not yet
    entered (the caller's exit stack closes them)."""
    own_keep = bundle_keep(source)
    runners: dict[str, OnnxRuntimeRunner] = {
        "pruned": make_runner(source, backend, precision=precision, ort=settings_for("pruned"), name="pruned")  # type: ignore[dict-item]
    }
    keeps: dict[str, float | None] = {"pruned": own_keep}
    files: dict[str, str] = {"pruned": str(runners["pruned"].graph)}
    for a in against:
        b, _, prec = a.partition(":")
        runners[a] = make_runner(source, b, precision=prec or None, ort=settings_for(a.replace(":", "-")), name=a)  # type: ignore[assignment]
        keeps[a], files[a] = own_keep, str(runners[a].graph)
    for k, graph in variant_graphs.items():
        n = variant_name(k)
        runners[n] = OnnxRuntimeRunner(graph, settings_for(n), io=source.io, name=n)
        keeps[n], files[n] = k, str(graph)
    return runners, keeps, files
