"""SIGTERM handled like Ctrl-C: the same cleanup (temporaries removed), one line, exit 128 + signal.

The handler raises KeyboardInterrupt, so every `finally` and `except KeyboardInterrupt` that cleans
up after Ctrl-C runs for `kill`, a job scheduler's stop or `docker stop` too. typer turns the
interrupt into an exit status of 130 without a word: `caught` tells `main` which signal it was.

A signal can land while Python runs a `__del__` or a weakref callback (the garbage collector, or
importlib's module locks), where an exception cannot propagate: Python prints "Exception ignored
in ..." with a traceback and goes on as if nothing had been asked. The unraisable hook catches that
case and sends the signal again from a helper thread, so it is raised a moment later in the main
flow, where the cleanup runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

#: the signal that interrupted this command (None: none did)
caught: int | None = None

#: seconds before a swallowed signal is sent again (long enough for the callback to return)
REDELIVER_AFTER_S = 0.01

_previous_unraisable_hook = sys.__unraisablehook__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global caught
    caught = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _redeliver_swallowed(unraisable: Any) -> None:
    """The signal's exception was dropped in a callback: send the signal again, print nothing."""
    if caught is None or not isinstance(unraisable.exc_value, KeyboardInterrupt):
        _previous_unraisable_hook(unraisable)
        return
    timer = threading.Timer(REDELIVER_AFTER_S, os.kill, (os.getpid(), caught))
    timer.daemon = True
    with contextlib.suppress(RuntimeError):  # no new threads at interpreter shutdown: it is ending anyway
        timer.start()


def install() -> None:
    """SIGINT and SIGTERM raise in the main thread (a no-op elsewhere: signals go to the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        if sys.unraisablehook is not _redeliver_swallowed:
            global _previous_unraisable_hook
            _previous_unraisable_hook = sys.unraisablehook
            sys.unraisablehook = _redeliver_swallowed


def message(signum: int) -> tuple[str, int]:
    """(the one line to print, the exit status) for a command stopped by `signum`."""
    name = signal.Signals(signum).name
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    return f"{what} ({name}): stopped, temporary files removed", 128 + signum
