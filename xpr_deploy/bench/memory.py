"""Peak-memory measurement, per variant and per timed call.

On Linux the process's resident-set high-water mark is reset (`/proc/self/clear_refs`, "5")
before each call and read after, so the figure belongs to that phase and not to model loading
or another variant. On a GPU it is torch's allocator peak (eager) or the engine's activation
memory plus its I/O buffers (see `backends.bench_engine`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


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


#: () -> (reset the peak, read the peak in MB, read the current level in MB)
MemoryHooks = Callable[[], tuple[Callable[[], None], Callable[[], float | None], Callable[[], float | None]]]


def rss_hooks() -> tuple[Callable[[], None], Callable[[], float | None], Callable[[], float | None]]:
    rss = PeakRSS()
    return rss.reset, rss.peak_mb, rss.current_mb


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
