"""`xpr serve`: write the Triton repository for a bundle and run a real `tritonserver` on it."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from .common import JsonFlag, _print_json, console, err_console

app = typer.Typer()


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder")],
    repo: Annotated[Path | None, typer.Option("--repo", help="model repository (default: a temporary folder)")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP port on 127.0.0.1 (default 8000)")] = 8000,
    grpc_port: Annotated[int | None, typer.Option("--grpc-port", help="gRPC port on 127.0.0.1 (default 8001)")] = 8001,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="metrics port (default 8002)")] = 8002,
    max_batch: Annotated[int | None, typer.Option("--max-batch", help="max_batch_size (dynamic bundles)")] = None,
    instances: Annotated[int, typer.Option("--instances", help="python model instances")] = 1,
    python_backend: Annotated[str, typer.Option("--python-backend", help="onnx | engine")] = "onnx",
    kind: Annotated[str, typer.Option("--kind", help="instance_group kind: cpu | gpu | auto")] = "cpu",
    dynamic_batching: Annotated[bool, typer.Option("--dynamic-batching/--no-dynamic-batching")] = True,
    threads: Annotated[int | None, typer.Option("--threads", help="ONNX Runtime threads per instance")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait until the server is ready")] = 120.0,
    as_json: JsonFlag = False,
) -> None:
    """Serve BUNDLE with Triton Inference Server on 127.0.0.1 until Ctrl-C (the python-backend model; the
    platform models are written too, for NVIDIA's containers, but only the backends this server has load)."""
    from ..serve import TritonServer, find_server
    from ..triton import PythonModelOptions, write_repository

    install = find_server()  # no server: one line before anything is written
    root = repo or Path(tempfile.mkdtemp(prefix="xpr-triton-repo-"))
    py = PythonModelOptions(
        backend=python_backend, kind=kind, instances=instances, dynamic_batching=dynamic_batching, threads=threads
    )
    res = write_repository(bundle, root, max_batch=max_batch, python=py)
    have = set(install.backends())
    served = [m.name for m in res.models if m.platform == "python" and "python" in have]
    skipped = [m.name for m in res.models if m.name not in served]
    args: list[str] = ["--model-control-mode", "explicit", *(a for n in served for a in ("--load-model", n))]
    server = TritonServer(
        root, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, install=install,
        extra_args=tuple(args),
    )  # fmt: skip
    server.start(timeout)
    info = {"repository": str(root), "server": str(install.binary), "origin": install.origin,
            "models": served, "not_loaded": skipped, "log": str(server.log_path), **server.endpoints()}  # fmt: skip
    if as_json:
        _print_json(info)
    else:
        console.print(f"[green]ready[/] {', '.join(served)} from {root} ({install.origin})", highlight=False)
        for k in ("http", "grpc", "metrics"):
            console.print(f"  {k:8s}{info[k]}", highlight=False)
        if skipped:
            err_console.print(
                f"[dim]written, not loaded (this server has no backend for them): {', '.join(skipped)}[/]"
            )
        console.print("Ctrl-C stops the server", highlight=False)
    stop = {"now": False}

    def _stop(signum: int, _frame: object) -> None:
        stop["now"] = True

    old = signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"] and server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        died = not server.running
        rc = server.stop()
    if died:
        err_console.print(f"[red]error:[/] tritonserver exited on its own (status {rc}; log {server.log_path})")
        raise typer.Exit(1)
    err_console.print(f"stopped (tritonserver exit status {rc})")
