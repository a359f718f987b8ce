"""`xpr bench --engine BUNDLE`: the bundle's TensorRT / TensorRT-RTX engine through `runners.TrtRunner`
(device buffers allocated once): host wall time per call (inputs in, execute, outputs back) and GPU
compute time apart (CUDA events around execute only).

Without an NVIDIA GPU or the backend the report says `skipped` with the reason, never fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable
from ..runners import make_runner
from .inputs import example_views
from .machine import command_line, machine_info
from .onnx import open_bundle
from .report import assemble_report
from .timer import time_interleaved


def _skipped(reason: str) -> dict[str, Any]:
    return {"kind": "engine", "skipped": True, "reason": reason, "machine": machine_info(), "command": command_line()}


def bench_engine(
    path: str | Path, *, runs: int = 20, warmup: int = 3, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    source = open_bundle(path)
    view = source.bundle
    assert view is not None
    if not view.engines:
        return _skipped(f"{view.root}: {view.manifest.get('engine_skipped') or 'the bundle lists no engine'}")
    runner: Any = make_runner(source, "engine")
    try:
        runner.activate()
    except BackendUnavailable as exc:
        return _skipped(str(exc))
    import torch

    try:
        shape = tuple(runner.buffers[source.io.cc].shape)
        cc, mlo = example_views(shape)
        feed = {source.io.cc: cc, source.io.mlo: mlo}
        torch.cuda.reset_peak_memory_stats()

        def gpu_timer(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(runner.stream):
                start.record(runner.stream)
                runner.execute()
                end.record(runner.stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        times = time_interleaved({"engine": lambda: runner.infer(feed, check_inputs=False)}, runs, warmup,
                                 progress=progress)  # fmt: skip
        times["engine"].gpu_ms = time_interleaved({"engine": lambda: None}, runs, 0, gpu_timer=gpu_timer)[
            "engine"
        ].gpu_ms
        eng = runner.engine
        act = int(getattr(eng, "device_memory_size_v2", 0) or getattr(eng, "device_memory_size", 0) or 0)
        times["engine"].peak_mem_mb = (act + torch.cuda.max_memory_allocated()) / 2**20
        description = runner.describe()
    finally:
        runner.deactivate()
    settings = {
        "runs": runs,
        "warmup": warmup,
        "runner": description,
        "engine": str(runner.ref.path),
        "bundle_sha256": view.digest,
        "memory": "engine activation memory + I/O buffers (torch allocator peak)",
        "timing": "wall: host->device copies + execute + every output back; gpu: CUDA events around execute only",
    }
    rep = assemble_report("engine", times, {"engine": None}, "engine", shape[0], settings)
    rep["gpu_median_ms"] = rep["variants"]["engine"].get("gpu_median_ms")
    rep["host_overhead_median_ms"] = rep["median_ms"] - (rep["gpu_median_ms"] or 0.0)
    return rep
