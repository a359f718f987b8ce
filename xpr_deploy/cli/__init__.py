"""The `xpr` command line: one short function per command over the library.

The root `app` merges one Typer sub-app per group of commands (info, data, training, deploy); heavy
libraries (torch, onnx, ...) are imported inside the commands, so `xpr --help` starts fast.
"""

from __future__ import annotations

import sys

import typer

# typer 0.29 ships its own click as typer._click: its exceptions are not the `click` package's
from typer._click import exceptions as click_exceptions

from ..errors import XprError
from ..version import __version__
from . import data, deploy, info, node, serve, signals, training, view
from .common import StdoutError, err_console, say, stdout_failed

app = typer.Typer(
    name="xpr",
    help="X-Pruning: dual-view mammography classifier, from DICOM to TensorRT engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _sub in (info.app, data.app, training.app, deploy.app, serve.app, node.app, view.app):
    app.add_typer(_sub)  # no name: the sub-app's commands (and `data`) become top-level commands


def _version(value: bool) -> None:
    if value:
        print(f"xpr {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the toolkit version and exit"
    ),
) -> None:
    """X-Pruning: dual-view mammography classifier, from DICOM to TensorRT engine."""


def _show_usage_error(exc: click_exceptions.UsageError, args: list[str]) -> None:
    """typer's usual `Usage:` + `Try ... --help` + `Error:` lines; click raises some usage errors
    (an option missing its value) without a context, so the command is found again from `args`."""
    if exc.ctx is None:
        from typer._click.shell_completion import _resolve_context

        try:
            exc.ctx = _resolve_context(typer.main.get_command(app), {}, _prog_name(), args)
        except Exception:  # the usage line is a courtesy: the error line alone still says it all
            exc.ctx = None
    exc.show()


def _prog_name() -> str:
    from typer._click.utils import _detect_program_name

    return _detect_program_name()


def _stdout_broken() -> OSError | None:
    """The error a flush of stdout gives now (None: it takes the output)."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        return exc
    except ValueError:  # closed
        return None
    return None


def main() -> None:
    """Entry point: expected failures print one line and exit non-zero, without a traceback."""
    signals.install()
    try:
        rc = app(standalone_mode=False)
        if (broken := _stdout_broken()) is not None:  # here, not in the interpreter's flush at exit
            raise stdout_failed(broken)
    except XprError as exc:
        say(err_console, exc, "[red]error:[/]")
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        _show_usage_error(exc, sys.argv[1:])
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        rc = 130
    except OSError as exc:  # a file the library did not expect to fail (e.g. another user's): name it
        if exc.filename is None:
            if _stdout_broken() is None:
                raise
            say(err_console, stdout_failed(exc), "[red]error:[/]")  # a rich print to a full stdout
            sys.exit(StdoutError.exit_code)
        say(err_console, f"{exc.filename}: {exc.strerror or exc}", "[red]error:[/]")
        sys.exit(2)
    if signals.caught is not None and rc == 130:  # typer makes the interrupt a silent 130
        line, rc = signals.message(signals.caught)
        err_console.print(f"[red]error:[/] {line}", highlight=False)
    sys.exit(rc if isinstance(rc, int) else 0)


__all__ = ["app", "main"]
