"""Benchmarks (SPEC §7): eager PyTorch, ONNX Runtime and TensorRT engines, pruned against dense.

One concern per module; why each is built the way it is sits in its own docstring:
- `timer`: the interleaved timer (variants of one comparison alternate round by round in one
  process; wall and process CPU time);
- `memory`: per-call peak memory (resettable peak RSS on Linux, torch's allocator on a GPU);
- `stats`: latency statistics and pruned/dense ratios;
- `report`: the report structure, the terminal summary, the keep-sweep plot, ORT profiles;
- `machine`: what the numbers were measured on and the command that produced them;
- `inputs`: synthetic input views;
- `batch`: per-breast time at several batch sizes (ONNX Runtime), for a server's batch choice;
- `eager`, `onnx`, `engine`: thin adapters over the runner layer (`xpr_deploy.runners`), so a
  benchmark times exactly the configuration predict serves and validate certifies;
- `isolated`: one bench in a fresh process (clean peak memory);
- `request`: one `xpr bench` run as a typed, checked `BenchRequest`, and `run_bench` that runs it.

The names below are the public API (`from xpr_deploy import bench as B`).
"""

from __future__ import annotations

from .batch import bench_batches, parse_batches, print_batches
from .eager import bench_eager
from .engine import bench_engine
from .errors import BenchError
from .inputs import example_views
from .isolated import run_isolated
from .machine import command_line, env_threads, machine_info
from .memory import MemoryHooks, PeakRSS, rss_hooks
from .onnx import bench_onnx, export_variant_graphs, open_bundle
from .report import (
    REPORT_KEYS,
    KernelTime,
    assemble_report,
    ort_kernel_times,
    plot_keep_sweep,
    print_summary,
    summarize_ort_profile,
    variant_name,
    variant_report,
)
from .request import BenchRequest, bench_request, parse_keep_sweep, run_bench
from .stats import latency_stats, percentile, ratio_stats
from .timer import VariantTimes, time_interleaved

__all__ = [
    "REPORT_KEYS",
    "BenchError",
    "BenchRequest",
    "KernelTime",
    "MemoryHooks",
    "PeakRSS",
    "VariantTimes",
    "assemble_report",
    "bench_batches",
    "bench_eager",
    "bench_engine",
    "bench_onnx",
    "bench_request",
    "command_line",
    "env_threads",
    "example_views",
    "export_variant_graphs",
    "latency_stats",
    "machine_info",
    "open_bundle",
    "ort_kernel_times",
    "parse_batches",
    "parse_keep_sweep",
    "percentile",
    "plot_keep_sweep",
    "print_batches",
    "print_summary",
    "ratio_stats",
    "rss_hooks",
    "run_bench",
    "run_isolated",
    "summarize_ort_profile",
    "time_interleaved",
    "variant_name",
    "variant_report",
]
