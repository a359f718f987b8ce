"""`xpr serve`: write the Triton repository for a bundle and run a real `tritonserver` on it."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import triton_options as T
from .common import JsonFlag, _print_json, console, err_console, say

if TYPE_CHECKING:
    from ..serve import ServerInstall, TritonServer

app = typer.Typer()


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder")],
    repo: Annotated[Path | None, typer.Option("--repo", help="model repository (default: a temporary folder)")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP port on 127.0.0.1 (default 8000)")] = 8000,
    grpc_port: Annotated[int | None, typer.Option("--grpc-port", help="gRPC port on 127.0.0.1 (default 8001)")] = 8001,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="metrics port (default 8002)")] = 8002,
    max_batch: T.MaxBatch = None,
    instances: T.Instances = 1,
    python_backend: T.PythonBackend = "onnx",
    kind: T.Kind = "cpu",
    dynamic_batching: T.DynamicBatching = True,
    queue_delay_us: T.QueueDelayUs = 0,
    threads: T.Threads = None,
    operating_point: T.OperatingPoint = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait until the server is ready")] = 120.0,
    as_json: JsonFlag = False,
) -> None:
    """Serve BUNDLE with Triton Inference Server on 127.0.0.1 until Ctrl-C (the python-backend model; the
    platform models are written too, for NVIDIA's containers, but only the backends this server has load)."""
    from ..serve import TritonServer, find_server
    from ..triton import PythonModelOptions, write_repository

    install = find_server()  # no server: one line before anything is written
    py = PythonModelOptions(
        backend=python_backend, kind=kind, dynamic_batching=dynamic_batching, queue_delay_us=queue_delay_us,
        threads=threads,
    )  # fmt: skip
    temporary = repo is None
    root = repo or Path(tempfile.mkdtemp(prefix="xpr-triton-repo-"))
    server: TritonServer | None = None
    clean = False  # stopped on request (Ctrl-C, SIGTERM): nothing of this run is needed afterwards
    try:
        res = write_repository(
            bundle, root, max_batch=max_batch, instances=instances, python=py, operating_point=operating_point
        )
        have = set(install.backends())
        served = [m.name for m in res.models if m.platform == "python" and "python" in have]
        skipped = [m.name for m in res.models if m.name not in served]
        args: list[str] = ["--model-control-mode", "explicit", *(a for n in served for a in ("--load-model", n))]
        server = TritonServer(
            root, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, install=install,
            extra_args=tuple(args),
        )  # fmt: skip
        server.start(timeout)
        _announce(server, install, root, served, skipped, as_json)
        while server.running:
            time.sleep(0.5)
        rc = server.stop()
        say(err_console, f"tritonserver exited on its own (status {rc}; log {server.log_path})", "[red]error:[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli.signals raises it): main says which, exit 130/143
        clean = True
        raise
    finally:
        if server is not None:
            server.stop()
            if clean:  # after a failure the log stays: the error line names it
                server.discard_log()
        if temporary:  # the repository is a copy of the bundle (tens of MB): never left in /tmp
            shutil.rmtree(root, ignore_errors=True)


def _announce(
    server: TritonServer, install: ServerInstall, root: Path, served: list[str], skipped: list[str], as_json: bool
) -> None:
    """Where the server listens and what it loaded (JSON or lines)."""
    info = {"repository": str(root), "server": str(install.binary), "origin": install.origin,
            "models": served, "not_loaded": skipped, "log": str(server.log_path), **server.endpoints()}  # fmt: skip
    if as_json:
        _print_json(info)
        return
    say(console, f"{', '.join(served)} from {root} ({install.origin})", "[green]ready[/]")
    for k in ("http", "grpc", "metrics"):
        say(console, f"  {k:8s}{info[k]}")
    if skipped:
        say(err_console, f"written, not loaded (this server has no backend for them): {', '.join(skipped)}")
    say(console, "Ctrl-C stops the server")
