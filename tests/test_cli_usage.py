"""Usage errors of the CLI (issue 15, class 6) through the real entry point in this process
(test_export_support.xpr_main: an exception it lets out fails the test): typer's usage line, a `Try
... --help` hint and one `Error:` line on stderr, exit 2, never a traceback. Plus paths that do not
exist (the library's one-line errors, not usage errors), and `xpr --version` / `--help` in a process
of its own (`python -m xpr_deploy.cli`: the module entry point and what it prints at start-up)."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from test_export_support import xpr_here

from xpr_deploy.version import __version__


def _xpr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xpr_deploy.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_usage_error(res: subprocess.CompletedProcess[str], command: str, says: str) -> None:
    """Exit 2, `Usage: ... <command> [OPTIONS]...`, the help hint, exactly one `Error:` line saying `says`."""
    err = res.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, err)
    assert "Traceback" not in err and res.stdout == "", err
    assert lines[0].startswith("Usage: ") and f"{command} [OPTIONS]".strip() in lines[0], err
    assert lines[1].startswith("Try '") and lines[1].endswith("--help' for help."), err
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(lines) == 3 and errors == [lines[2]] and says in lines[2], err


# (argv, the command the usage line is for, what the Error: line says)
USAGE_ERRORS: dict[str, tuple[list[str], str, str]] = {
    "unknown command": (["frobnicate"], "", "No such command 'frobnicate'"),
    "no argument (predict)": (["predict"], "predict", "Missing argument 'model'"),
    "no argument (serve)": (["serve"], "serve", "Missing argument 'bundle'"),
    "no argument (nested data check)": (["data", "check"], "data check", "Missing argument 'data'"),
    "not an integer": (["train", "D", "--out", "R", "--epochs", "abc"], "train", "Invalid value for '--epochs'"),
    "not a number": (["eval", "C", "D", "--threshold", "x"], "eval", "Invalid value for '--threshold'"),
    "unknown option": (["verify", "B", "--bogus"], "verify", "No such option: --bogus"),
    "unknown root option": (["-x"], "", "No such option: -x"),
    "old option (export --backend)": (["export", "-c", "tiny", "--backend", "rtx"], "export", "No such option"),
    "bad choice": (["info", "--config", "huge"], "info", "'huge' is not one of 'paper', 'tiny'"),
    "bad choice (short flag)": (["export", "-c", "big"], "export", "'big' is not one of 'paper', 'tiny'"),
    "missing option value": (["predict", "M", "--backend"], "predict", "Option '--backend' requires an argument"),
    "missing option value (nested)": (["data", "check", "D", "--format"], "data check", "'--format' requires"),
    "missing required option": (["train", "D"], "train", "Missing option '--out'"),
    "flag given a value": (["verify", "B", "--json=yes"], "verify", "Option '--json' does not take a value"),
}


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_usage_error(
    case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, command, says = USAGE_ERRORS[case]
    res = xpr_here(capfd, monkeypatch, *argv, cwd=tmp_path)
    assert_usage_error(res, command, says)
    assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_version() -> None:
    res = _xpr("--version")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout == f"xpr {__version__}\n"
    helped = _xpr("--help")
    assert helped.returncode == 0 and "--version" in helped.stdout


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["verify", "/nonexistent/b"], 3, "/nonexistent/b: no such bundle"),
        (["predict", "/nonexistent/m", "/nonexistent/s"], 2, "/nonexistent/m: no such model"),
        (["data", "check", "/nonexistent/d"], 2, "/nonexistent/d: not found"),
    ],
)
def test_path_that_does_not_exist_is_one_line(
    argv: list[str],
    code: int,
    says: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    res = xpr_here(capfd, monkeypatch, *argv, cwd=tmp_path)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {says}"), res.stderr
    assert "Traceback" not in res.stderr


def test_preset_choice_is_the_config_table() -> None:
    from xpr_deploy.cli.common import Preset
    from xpr_deploy.config import PRESETS

    assert set(typing.get_args(Preset)) == set(PRESETS)
