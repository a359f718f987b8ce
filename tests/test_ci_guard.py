"""The CI guard (tests/conftest.py): where `CI` is set, a test skipped for a missing tool fails, with
one line naming the tool; elsewhere it stays a skip. Only "needs a GPU" may skip in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = "tests/test_data_synth_cli.py::test_synth_is_valid_dicom_per_dciodvfy"


def _run(ci: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # PATH holds the venv's tools only: dciodvfy (and apt-get, which the test would use to install it) are hidden
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(Path(sys.executable).parent), XPR_NO_APT="1", PYTHONPATH=str(REPO))
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", TARGET, "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_a_missing_tool_fails_in_ci_with_one_line_naming_it(tmp_path: Path) -> None:
    r = _run("true", tmp_path)
    assert r.returncode == 1, r.stdout[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("FAILED") and "CI: skipped" in ln]
    assert len(lines) == 1 and "dciodvfy" in lines[0], r.stdout[-2000:]


def test_the_same_tool_missing_outside_ci_is_a_skip(tmp_path: Path) -> None:
    r = _run(None, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 skipped" in r.stdout and "dciodvfy" in r.stdout, r.stdout[-2000:]
