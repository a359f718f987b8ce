"""`xpr listen`: the DICOM node (Storage SCP -> spool -> queue -> inference -> results by C-STORE / STOW-RS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

app = typer.Typer()


@app.command()
def listen(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder (verified before listening)")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="this node's AE title")] = "XPR",
    port: Annotated[int, typer.Option("--port", help="DICOM port")] = 11112,
    bind: Annotated[str, typer.Option("--bind", help="address for DICOM and HTTP")] = "0.0.0.0",
    send_to: Annotated[str | None, typer.Option("--send-to", help="results by C-STORE to AE@HOST:PORT")] = None,
    stow: Annotated[str | None, typer.Option("--stow", help="results by STOW-RS to this DICOMweb URL")] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="caller allowed to send, AE or AE@HOST (repeatable; default: the --send-to peer)"),
    ] = None,
    spool: Annotated[Path, typer.Option("--spool", help="spool folder (instances, results, queue)")] = Path(
        "xpr-spool"
    ),
    quiet_seconds: Annotated[
        float, typer.Option("--quiet-seconds", help="a study is complete after this long without a new instance")
    ] = 10.0,
    http_port: Annotated[int | None, typer.Option("--http-port", help="serve /health and /metrics here")] = None,
    other_classes: Annotated[
        Literal["ignore", "refuse"],
        typer.Option(
            "--other-classes", help="other storage classes: ignore (acknowledged, not kept) or refuse (at negotiation)"
        ),
    ] = "ignore",
    max_instance_mb: Annotated[float, typer.Option("--max-instance-mb", help="refuse bigger instances")] = 512.0,
    min_free_mb: Annotated[float, typer.Option("--min-free-mb", help="refuse when the spool has less free")] = 256.0,
    backend: Annotated[str | None, typer.Option("--backend", help="runner backend (default: the bundle's)")] = None,
    retry_cap: Annotated[float, typer.Option("--retry-max-seconds", help="longest wait between two sends")] = 300.0,
    retain_hours: Annotated[float, typer.Option("--retain-hours", help="keep sent studies' files this long")] = 24.0,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS: server certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS: its private key (PEM)")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="TLS: callers need a certificate from this CA")
    ] = None,
) -> None:
    """Receive mammography studies by C-STORE, predict each after a quiet period, send the SR and heatmap
    Segmentations back by C-STORE (--send-to) and/or STOW-RS (--stow), until Ctrl-C or SIGTERM."""
    import logging

    from ..node import Node, NodeError, NodeOptions, parse_caller, parse_peer
    from ..node.service import MIB, Tls

    if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
        raise NodeError("TLS needs --tls-cert and --tls-key (and --tls-ca only with them)")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s xpr listen: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("xpr.listen")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    opts = NodeOptions(
        bundle=bundle,
        spool=spool,
        ae_title=ae_title,
        bind=bind,
        port=port,
        send_to=parse_peer(send_to) if send_to else None,
        stow=stow,
        allow=tuple(parse_caller(a) for a in allow or ()),
        quiet_seconds=quiet_seconds,
        http_port=http_port,
        others=other_classes,
        max_instance_bytes=int(max_instance_mb * MIB),
        min_free_bytes=int(min_free_mb * MIB),
        backend=backend,
        retry_cap=retry_cap,
        retain_hours=retain_hours,
        tls=Tls(tls_cert, tls_key, tls_ca) if tls_cert is not None and tls_key is not None else None,
    )
    Node(opts).run()
