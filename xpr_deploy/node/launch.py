"""How `xpr listen` and its test destination are started as subprocesses on 127.0.0.1: the one copy of
the command lines the tests (`tests/peers.py`) and the load benchmark (`bench/listen_load.py`) run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the folder that holds the `xpr_deploy` package this process imported
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def listen_command(
    bundle: Path, spool: Path, port: int, http_port: int, *args: str, bind: str = "127.0.0.1"
) -> list[str]:
    """`xpr listen` of this interpreter and this package: DICOM on `port`, /health and /metrics on `http_port`."""
    return [
        sys.executable, "-m", "xpr_deploy.cli", "listen", str(bundle), "--bind", bind, "--port", str(port),
        "--http-port", str(http_port), "--spool", str(spool), *args,
    ]  # fmt: skip


def listen_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of that subprocess: this package first on the path, one OpenMP thread unless set."""
    return {
        **os.environ,
        "PYTHONPATH": str(PACKAGE_ROOT),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        **(extra or {}),
    }


def storescp_command(storescp: str, out: Path, port: int, aet: str = "DEST", *, verbose: bool = False) -> list[str]:
    """DCMTK's storescp as a destination that keeps every object it receives as its own file (`-uf`),
    so an object sent twice shows up twice."""
    return [storescp, "-aet", aet, "-od", str(out), "-uf", *(["-v"] if verbose else []), str(port)]
