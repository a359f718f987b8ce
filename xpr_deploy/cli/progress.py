"""Progress of a long file-by-file job on stderr: a rich bar on a terminal, plain lines in a log.

A live bar written to a file or a CI log is a wall of control codes, so off a terminal the same
events become one line every `every_s` seconds (and a last one), readable with `tail -f`.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class FileProgress:
    """Callable with events that have `done`, `total`, `prepared`, `reused`, `rejected`, `failed`, `seconds`."""

    def __init__(self, console: Console, label: str, every_s: float = 10.0, enabled: bool = True) -> None:
        self.console, self.label, self.every_s, self.enabled = console, label, every_s, enabled
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self._last_done = -1

    def __enter__(self) -> FileProgress:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.2f} images/s, {task.fields[bad]} rejected/failed"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, ev: Any) -> None:
        if not self.enabled:
            return
        rate = ev.prepared / ev.seconds if ev.seconds > 0 else 0.0
        bad = ev.rejected + ev.failed
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.label, total=ev.total, rate=rate, bad=bad)
            self._bar.update(self._task, completed=ev.done, rate=rate, bad=bad)
            return
        now = time.monotonic()
        last = ev.done == ev.total
        if ev.done == self._last_done or (not last and now - self._last_line < self.every_s):
            return
        self._last_line, self._last_done = now, ev.done
        self.console.print(
            f"{self.label}: {ev.done}/{ev.total} files ({ev.prepared} prepared, {ev.reused} reused, "
            f"{bad} rejected/failed), {rate:.2f} images/s, {ev.seconds:.0f} s",
            highlight=False,
            soft_wrap=True,
        )
