"""`xpr bench --onnx BUNDLE --batch 1,2,4`: time per breast at several batch sizes, so a server can
pick its batch (Triton's max_batch_size and the dynamic batcher's preferred sizes).

A dynamic-batch bundle (`xpr export --max-batch N`) runs every size through one session, as the
server runs it; a static bundle gets its graph exported again at each other batch from the same
weights (one session per size). The sizes are timed interleaved (`timer`), so the ratios come from
the same minutes of machine time; the figure is per breast: call time / batch, against batch 1.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..runners import make_runner, source_model
from ..runners.onnxrt import OnnxRuntimeRunner, OrtSettings
from .errors import BenchError
from .inputs import example_views
from .machine import command_line, machine_info
from .memory import PeakRSS, rss_hooks
from .onnx import open_bundle
from .report import variant_report
from .stats import ratio_stats
from .timer import time_interleaved


def parse_batches(text: str) -> list[int]:
    """`1,2,4` -> [1, 2, 4] (positive, distinct, ascending)."""
    try:
        sizes = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        raise BenchError(f"--batch {text!r}: give comma-separated batch sizes such as 1,2,4") from None
    if not sizes or sizes[0] < 1:
        raise BenchError(f"--batch {text!r}: batch sizes must be positive integers")
    return sizes


def bench_batches(
    path: str | Path,
    batches: Sequence[int] = (1, 2, 4),
    *,
    runs: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    reference: str | Path | None = None,
    graphs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per-breast latency and throughput per batch size; `reference` (another bundle, e.g. the static
    batch-1 export) is timed in the same rounds at its own batch, to show what a dynamic axis costs.
    `graphs_dir` (static bundles): `batch<N>.onnx` there is used as the batch-N graph, and a graph
    exported here is kept there (paper-size exports take minutes)."""
    sizes = sorted({int(b) for b in batches})
    if not sizes or sizes[0] < 1:
        raise BenchError(f"batch sizes {list(batches)}: need positive integers")
    source = open_bundle(path)
    view = source.bundle
    assert view is not None
    if view.dynamic_batch and sizes[-1] > int(view.max_batch or 0):
        raise BenchError(f"{view.root}: batch {sizes[-1]} is over the bundle's max_batch {view.max_batch}")
    settings = OrtSettings(providers=tuple(providers or ()), threads=threads)
    ref_source = open_bundle(reference) if reference is not None else None
    with contextlib.ExitStack() as stack:
        runners: dict[str, OnnxRuntimeRunner] = {}
        graphs: dict[str, str] = {}
        if view.dynamic_batch:
            r: Any = make_runner(source, "onnx", ort=settings, name="dynamic")
            stack.enter_context(r)
            runners = {f"batch={b}": r for b in sizes}
            graphs = {f"batch={b}": str(r.graph) for b in sizes}
        else:
            keep = Path(graphs_dir) if graphs_dir is not None else None
            tmp: Path | None = keep
            for b in sizes:
                if b == view.batch:
                    graph = view.graph()
                elif keep is not None and (keep / f"batch{b}.onnx").is_file():
                    graph = keep / f"batch{b}.onnx"
                else:
                    from ..export.onnx import export_onnx

                    tmp = tmp or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xpr-batch-")))
                    tmp.mkdir(parents=True, exist_ok=True)
                    if progress:
                        progress(f"exporting the graph at batch {b} (same weights)")
                    graph = tmp / f"batch{b}.onnx"
                    export_onnx(source_model(source), graph, batch=b)
                runners[f"batch={b}"] = stack.enter_context(
                    OnnxRuntimeRunner(graph, settings, io=source.io, name=f"batch={b}")
                )
                graphs[f"batch={b}"] = str(graph)
        cc, mlo = example_views((sizes[-1], source.cfg.in_chans, *source.cfg.img_size))
        fns: dict[str, Callable[[], Any]] = {
            f"batch={b}": functools.partial(
                runners[f"batch={b}"].infer, {source.io.cc: cc[:b], source.io.mlo: mlo[:b]}, check_inputs=False
            )
            for b in sizes
        }
        batch_of = {f"batch={b}": b for b in sizes}
        if ref_source is not None:
            assert ref_source.bundle is not None
            rb = ref_source.bundle.batch
            ref: Any = make_runner(ref_source, "onnx", ort=settings, name="reference")
            stack.enter_context(ref)
            fns["reference"] = functools.partial(
                ref.infer, {ref_source.io.cc: cc[:rb], ref_source.io.mlo: mlo[:rb]}, check_inputs=False
            )
            batch_of["reference"] = rb
            graphs["reference"] = str(ref.graph)
        first = next(iter(runners.values()))
        on_cpu = "CUDAExecutionProvider" not in first.settings.providers
        times = time_interleaved(fns, runs, warmup, memory=rss_hooks if on_cpu else None, progress=progress)
        description = first.describe()
    return batch_report(times, batch_of, view, graphs, description, runs, warmup, threads, on_cpu)


def batch_report(
    times: dict[str, Any],
    batch_of: dict[str, int],
    view: Any,
    graphs: dict[str, str],
    description: dict[str, Any],
    runs: int,
    warmup: int,
    threads: int | None,
    on_cpu: bool,
) -> dict[str, Any]:
    """Per size: the call's statistics, per-breast median and throughput, per-breast ratio to batch 1."""
    base = next((n for n, b in batch_of.items() if b == 1 and n != "reference"), None)
    variants: dict[str, Any] = {}
    for n, t in times.items():
        b = batch_of[n]
        rep = variant_report(t, b)
        rep["batch"] = b
        rep["per_breast_median_ms"] = rep["median_ms"] / b
        rep["per_breast_cpu_median_ms"] = rep["cpu_median_ms"] / b
        if base is not None:
            per_breast = [w / b for w in t.wall_ms]
            r = ratio_stats(per_breast, times[base].wall_ms)
            rep["per_breast_over_batch1"] = r["ratio_of_medians"]
            rep["per_breast_over_batch1_paired"] = r["median_paired_ratio"]
        variants[n] = rep
    best = min((n for n in variants if n != "reference"), key=lambda n: variants[n]["per_breast_median_ms"])
    return {
        "kind": "onnx-batch",
        "bundle": str(view.root),
        "bundle_sha256": view.digest,
        "dynamic_batch": view.dynamic_batch,
        "max_batch": view.max_batch,
        "batches": [batch_of[n] for n in variants if n != "reference"],
        "best_per_breast": best,
        "per_breast_median_ms": {n: v["per_breast_median_ms"] for n, v in variants.items()},
        "per_breast_over_batch1": {n: v.get("per_breast_over_batch1") for n, v in variants.items()},
        "throughput_per_s": {n: v["throughput_per_s"] for n, v in variants.items()},
        "peak_mem_mb": {n: v["peak_mem_mb"] for n, v in variants.items()},
        "variants": variants,
        "settings": {
            "runs": runs,
            "warmup": warmup,
            "threads": threads,
            "runner": description,
            "graphs": graphs,
            "memory": PeakRSS().scope if on_cpu else "not measured (GPU provider)",
            "per_breast": "call wall time / batch; ratios against batch 1 from the same interleaved rounds",
        },
        "machine": machine_info(),
        "command": command_line(),
    }


def print_batches(rep: dict[str, Any], write: Callable[[str], None] = print) -> None:
    """One line per batch size."""
    for n, v in rep["variants"].items():
        ratio = v.get("per_breast_over_batch1")
        mem = v.get("peak_mem_mb")
        write(
            f"{n:10s} call median {v['median_ms']:9.1f} ms  per breast {v['per_breast_median_ms']:9.1f} ms"
            + (f"  per breast / batch 1 {ratio:.3f}" if ratio is not None else "")
            + f"  {v['throughput_per_s']:.3g} breasts/s"
            + (f"  peak {mem:.0f} MB" if mem is not None else "")
        )
    write(f"best per breast: {rep['best_per_breast']}")
