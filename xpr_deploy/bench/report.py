"""Turning timings into reports: the JSON structure (served variant at top level, every variant,
pruned/dense ratios, keep sweep), the terminal summary, the keep-sweep plot and the ONNX Runtime
profile summary. Nothing here times anything."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .machine import command_line, machine_info
from .stats import latency_stats, ratio_stats
from .timer import VariantTimes

#: keys every report carries at its top level (the pruned / served variant), per issue 6
REPORT_KEYS = (
    "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "throughput_per_s", "peak_mem_mb", "peak_mem_delta_mb",
)  # fmt: skip


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
    for name, a in (rep.get("against") or {}).items():
        g = a["graph_mb"]
        write(
            f"  {rep.get('backend', 'onnx')} / {name}: time {a['time_ratio']:.3f} "
            f"(paired {a['time_ratio_paired']:.3f}, CPU time {a['cpu_time_ratio']:.3f}); "
            f"graph {' vs '.join(f'{v:.1f}' for v in g.values())} MB"
        )
    for s in rep.get("keep_sweep") or []:
        mr = f", MACs {s['macs_ratio']:.3f}" if s.get("macs_ratio") is not None else ""
        write(f"  keep {s['keep']:<5g} median {s['median_ms']:9.1f} ms  latency/dense {s['latency_ratio']:.3f}{mr}")


def plot_keep_sweep(report: dict[str, Any], png: str | Path, title: str | None = None) -> Path:
    """Latency (relative to dense) against keep ratio, next to the multiply-add ratio (`xpr info`)."""
    import matplotlib

    from ..io import write_figure

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


@dataclass(frozen=True)
class KernelTime:
    """One node's kernel time in an ONNX Runtime profile; `node` is the graph node it came from
    (a fused node "<node>/<Fusion>" keeps its original name)."""

    node: str
    op: str
    ms: float


def ort_kernel_times(profile_json: str | Path) -> tuple[int, list[KernelTime]]:
    """(profiled calls, every kernel event) of an ONNX Runtime profile (`SessionOptions.enable_profiling`)."""
    events = json.loads(Path(profile_json).read_text())
    calls = sum(1 for e in events if e.get("name") == "model_run") or 1
    kernels = [
        KernelTime(
            str(e["name"])[: -len("_kernel_time")].split("/")[0],
            str(e.get("args", {}).get("op_name", "?")),
            float(e.get("dur", 0)) / 1000.0,
        )
        for e in events
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
    ]
    return calls, kernels


def summarize_ort_profile(profile_json: str | Path, top: int = 12) -> dict[str, Any]:
    """Kernel time per op type (ms per run, share) from an ONNX Runtime profile, biggest first."""
    runs, kernels = ort_kernel_times(profile_json)
    per_op: dict[str, float] = {}
    count: dict[str, int] = {}
    for k in kernels:
        per_op[k.op] = per_op.get(k.op, 0.0) + k.ms
        count[k.op] = count.get(k.op, 0) + 1
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
