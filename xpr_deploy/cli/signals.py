"""SIGTERM handled like Ctrl-C: the same cleanup (temporaries removed), one line, exit 128 + signal.

The handler raises KeyboardInterrupt, so every `finally` and `except KeyboardInterrupt` that cleans
up after Ctrl-C runs for `kill`, a job scheduler's stop or `docker stop` too. typer turns the
interrupt into an exit status of 130 without a word: `caught` tells `main` which signal it was.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: the signal that interrupted this command (None: none did)
caught: int | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global caught
    caught = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> None:
    """SIGINT and SIGTERM raise in the main thread (a no-op elsewhere: signals go to the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def message(signum: int) -> tuple[str, int]:
    """(the one line to print, the exit status) for a command stopped by `signum`."""
    name = signal.Signals(signum).name
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    return f"{what} ({name}): stopped, temporary files removed", 128 + signum
