"""Benchmarks (SPEC §7): eager PyTorch, ONNX Runtime and TensorRT engines, pruned against dense.

One concern per module; why each is built the way it is sits in its own docstring:
- `timer`: the interleaved timer (variants of one comparison alternate round by round in one
  process; wall and process CPU time);
- `memory`: per-call peak memory (resettable peak RSS on Linux, torch's allocator on a GPU);
- `stats`: latency statistics and pruned/dense ratios;
- `report`: the report structure, the terminal summary, the keep-sweep plot, ORT profiles;
- `machine`: what the numbers were measured on and the command that produced them;
- `inputs`: synthetic input views;
- `backends`: eager, ONNX Runtime and engine benches, isolated runs, the `xpr demo` step.

The names below are the public API (`from xpr_deploy import bench as B`).
"""

from __future__ import annotations

from .backends import (
    bench_eager,
    bench_engine,
    bench_onnx,
    demo_step,
    export_variant_graphs,
    ort_session_options,
    resolve_onnx,
    run_isolated,
)
from .errors import BenchError
from .inputs import example_views
from .machine import command_line, env_threads, machine_info
from .memory import MemoryHooks, PeakRSS, rss_hooks
from .report import (
    REPORT_KEYS,
    assemble_report,
    plot_keep_sweep,
    print_summary,
    summarize_ort_profile,
    variant_name,
    variant_report,
)
from .stats import latency_stats, percentile, ratio_stats
from .timer import VariantTimes, time_interleaved

__all__ = [
    "REPORT_KEYS",
    "BenchError",
    "MemoryHooks",
    "PeakRSS",
    "VariantTimes",
    "assemble_report",
    "bench_eager",
    "bench_engine",
    "bench_onnx",
    "command_line",
    "demo_step",
    "env_threads",
    "example_views",
    "export_variant_graphs",
    "latency_stats",
    "machine_info",
    "ort_session_options",
    "percentile",
    "plot_keep_sweep",
    "print_summary",
    "ratio_stats",
    "resolve_onnx",
    "rss_hooks",
    "run_isolated",
    "summarize_ort_profile",
    "time_interleaved",
    "variant_name",
    "variant_report",
]
