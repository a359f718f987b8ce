"""What every `xpr` command shares: the consoles, the common option types, JSON output, option parsing,
and `safe`, the one way untrusted text (file paths, header values, a server's message) reaches rich."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import XprError
from ..runners.factory import BACKENDS


class _Console(Console):
    """rich's Console whose failure to write stdout (a full disk, a closed pipe) is StdoutError: one line, exit 2."""

    def print(self, *objects: Any, **kw: Any) -> None:
        try:
            super().print(*objects, **kw)
        except OSError as exc:
            if self.stderr:
                raise
            raise stdout_failed(exc) from None


def safe(text: object) -> str:
    """Untrusted text for a rich print: control characters written as escapes (a newline or an ANSI
    sequence in a file name cannot split or repaint the one-line message) and rich markup escaped
    (`[/red]` in a server's reason or `[/b]` in a study path prints as itself, never as a style)."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return escape(s)


def say(con: Console, text: object, prefix: str = "") -> None:
    """One line: our own markup `prefix` (e.g. "[yellow]skipped[/]"), then untrusted `text`, never wrapped."""
    con.print(f"{prefix} {safe(text)}" if prefix else safe(text), highlight=False, soft_wrap=True)


class StdoutError(XprError):
    """Standard output cannot take the result (a full disk, a closed pipe)."""


def stdout_failed(exc: OSError) -> StdoutError:
    """The one-line error for a failed write to stdout; stdout is pointed at /dev/null, so the
    interpreter's own flush at exit cannot fail again with a traceback."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return StdoutError(f"stdout: cannot write the output ({exc.strerror or type(exc).__name__})")


#: no `:name:` emoji codes: a file called `:cd:.dcm` prints as itself
console = _Console(emoji=False)
err_console = _Console(stderr=True, emoji=False)

#: the model presets (`config.PRESETS`; a test keeps the two equal): a choice, so a wrong one is a usage error
Preset = Literal["paper", "tiny"]
ConfigOpt = Annotated[Preset, typer.Option("--config", "-c", help="model preset: paper (2688x896) or tiny (448x224)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of tables")]
#: the runner of `xpr predict` and `xpr listen`: a name from the backend registry (runners/factory.py)
RunnerBackendOpt = Annotated[
    str | None, typer.Option("--backend", "-b", help=f"runner: {' | '.join(BACKENDS)} (default: the model's)")
]


def _print_json(obj: object) -> None:
    """One JSON object on stdout, flushed now: a full disk is StdoutError (exit 2), not a traceback at exit."""
    try:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
        sys.stdout.flush()
    except OSError as exc:
        raise stdout_failed(exc) from None


def _parse_size(text: str) -> tuple[int, int]:
    from ..errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r}: expected ROWSxCOLS, e.g. 1024x512") from None
    return h, w
