"""Latency statistics and pruned/dense ratios.

Pure functions over lists of timings, with no timing of their own: both the ratio of medians and
the median of the per-round ratios are reported, the second being robust to a slow drift of a
shared machine between rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


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
