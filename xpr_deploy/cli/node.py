"""`xpr listen`: the DICOM node (Storage SCP -> spool -> queue -> inference -> results by C-STORE / STOW-RS)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import RunnerBackendOpt
from .data import PreferOpt, StrictSelectionOpt

app = typer.Typer()

TritonOpt = Annotated[
    str | None,
    typer.Option(
        "--triton",
        help="run the model on this Triton server (http://HOST:PORT or grpc://HOST:PORT) serving `xpr triton`'s "
        "repository of the same bundle",
    ),
]
TritonModelOpt = Annotated[
    str | None,
    typer.Option("--triton-model", help="the model's name on the Triton server (default: the bundle's, found there)"),
]
SrOpt = Annotated[str, typer.Option("--sr", help="the result SR (tid1500; the kinds are listed in the README)")]
SegOpt = Annotated[str, typer.Option("--seg", help="heatmap Segmentations: binary (OHIF) | fractional | both")]


#: `xpr listen`'s options too long to declare in its signature
ListenAllowOpt = Annotated[
    list[str] | None,
    typer.Option("--allow", help="caller allowed to send, AE or AE@HOST (repeatable; default: the --send-to peer)"),
]
ListenSpoolOpt = Annotated[Path, typer.Option("--spool", help="spool folder (instances, results, queue)")]
ListenQuietSecondsOpt = Annotated[
    float, typer.Option("--quiet-seconds", help="a study is complete after this long without a new instance")
]
ListenOtherClassesOpt = Annotated[
    Literal["ignore", "refuse"],
    typer.Option(
        "--other-classes", help="other storage classes: ignore (acknowledged, not kept) or refuse (at negotiation)"
    ),
]
ListenTlsCaOpt = Annotated[Path | None, typer.Option("--tls-ca", help="TLS: callers need a certificate from this CA")]
ListenSendTlsOpt = Annotated[
    bool, typer.Option("--send-tls", help="C-STORE to --send-to over TLS (peer verified by the system's CAs)")
]
ListenSendTlsCaOpt = Annotated[
    Path | None,
    typer.Option("--send-tls-ca", help="C-STORE over TLS; --send-to's certificate must verify with this CA"),
]
ListenSendTlsCertOpt = Annotated[
    Path | None, typer.Option("--send-tls-cert", help="TLS: this node's client certificate for --send-to (PEM)")
]
ListenStowCaOpt = Annotated[
    Path | None, typer.Option("--stow-ca", help="an https --stow server's certificate must verify with this CA")
]


@app.command()
def listen(
    bundle: Annotated[Path, typer.Argument(help="export bundle folder (verified before listening)")],
    ae_title: Annotated[str, typer.Option("--ae-title", help="this node's AE title")] = "XPR",
    port: Annotated[int, typer.Option("--port", help="DICOM port")] = 11112,
    bind: Annotated[str, typer.Option("--bind", help="address for DICOM and HTTP")] = "0.0.0.0",
    send_to: Annotated[str | None, typer.Option("--send-to", help="results by C-STORE to AE@HOST:PORT")] = None,
    stow: Annotated[str | None, typer.Option("--stow", help="results by STOW-RS to this DICOMweb URL")] = None,
    allow: ListenAllowOpt = None,
    spool: ListenSpoolOpt = Path("xpr-spool"),
    quiet_seconds: ListenQuietSecondsOpt = 10.0,
    http_port: Annotated[int | None, typer.Option("--http-port", help="serve /health and /metrics here")] = None,
    other_classes: ListenOtherClassesOpt = "ignore",
    max_instance_mb: Annotated[float, typer.Option("--max-instance-mb", help="refuse bigger instances")] = 512.0,
    min_free_mb: Annotated[float, typer.Option("--min-free-mb", help="refuse when the spool has less free")] = 256.0,
    backend: RunnerBackendOpt = None,
    retry_cap: Annotated[float, typer.Option("--retry-max-seconds", help="longest wait between two sends")] = 300.0,
    retain_hours: Annotated[float, typer.Option("--retain-hours", help="keep sent studies' files this long")] = 24.0,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="TLS: server certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS: its private key (PEM)")] = None,
    tls_ca: ListenTlsCaOpt = None,
    send_tls: ListenSendTlsOpt = False,
    send_tls_ca: ListenSendTlsCaOpt = None,
    send_tls_cert: ListenSendTlsCertOpt = None,
    send_tls_key: Annotated[Path | None, typer.Option("--send-tls-key", help="TLS: its private key (PEM)")] = None,
    stow_ca: ListenStowCaOpt = None,
    triton: TritonOpt = None,
    triton_model: TritonModelOpt = None,
    prefer: PreferOpt = "acquired",
    strict: StrictSelectionOpt = False,
    sr: SrOpt = "tid1500",
    seg: SegOpt = "binary",
) -> None:
    """Receive mammography studies by C-STORE, predict each after a quiet period, send the SR and heatmap
    Segmentations back by C-STORE (--send-to) and/or STOW-RS (--stow), until Ctrl-C or SIGTERM."""
    from ..node import Node, NodeOptions, parse_caller, parse_peer
    from ..node.service import MIB, incoming_tls, outgoing_tls

    tls = incoming_tls(tls_cert, tls_key, tls_ca)
    send = outgoing_tls(send_tls, send_tls_ca, send_tls_cert, send_tls_key)
    _log_to_stderr()
    opts = NodeOptions(
        bundle=bundle, spool=spool, ae_title=ae_title, bind=bind, port=port,
        send_to=parse_peer(send_to) if send_to else None, stow=stow, allow=tuple(parse_caller(a) for a in allow or ()),
        quiet_seconds=quiet_seconds, http_port=http_port, others=other_classes,
        max_instance_bytes=int(max_instance_mb * MIB), min_free_bytes=int(min_free_mb * MIB), backend=backend,
        retry_cap=retry_cap, retain_hours=retain_hours, tls=tls, send_tls=send, stow_ca=stow_ca, triton=triton,
        triton_model=triton_model, prefer=prefer, strict=strict, sr=sr, seg=seg,
    )  # fmt: skip
    Node(opts).run()


def _log_to_stderr() -> None:
    """The node's log (logger `xpr.listen`) on stderr, one timestamped line per event."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s xpr listen: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("xpr.listen")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
