"""The interleaved timer: every variant of one comparison is timed in one process, round-robin.

Shared CPUs are noisy, so every comparison (pruned vs dense, each keep ratio of a sweep) runs
its variants interleaved in one process, alternating the order round by round; a ratio comes
from one run, never from two runs made at different times.

Process CPU time is recorded next to wall time: on a shared machine it says how much of a slow
run was waiting for a core.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .memory import MemoryHooks


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


def _cuda_event_timer(fn: Callable[[], Any]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))
