"""`xpr bench ARGS` in a fresh process: a clean peak-memory figure for one backend."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BenchError


def run_isolated(args: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xpr-bench-") as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "xpr_deploy.cli", "bench", *args, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode or not out.is_file():
            raise BenchError(f"isolated bench failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
        rep: dict[str, Any] = json.loads(out.read_text())
        rep["isolated_command"] = shlex.join(["xpr", "bench", *args])
        return rep
