"""Results out: C-STORE to a DICOM peer and/or STOW-RS to a DICOMweb server, with backoff.

A destination gets the objects it has not acknowledged yet; each acknowledgement is recorded
(`on_ack`) before the next object goes, so a crash re-sends at most the one object that was on the
wire. Its SOP Instance UID is derived from the sources and the model (`dicom_out.derived_uid`): the
re-sent object is the same object, which a PACS stores once.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PeerError
from .peer import Peer

log = logging.getLogger("xpr.listen")

#: a C-STORE status in these ranges means the object is stored (PS3.4 B.2.3: success and warnings)
_STORED = {0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007}


class SendError(PeerError):
    """A destination did not store the results; `permanent`: it refused them (retrying will not help)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ResultFile:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def read_result(path: Path) -> ResultFile:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ResultFile(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before try `attempt + 1`: base, 2 base, 4 base, ... capped."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


@dataclass(frozen=True)
class SendTls:
    """TLS on the association to the destination: its certificate must verify against `ca` (None: the
    system's CAs) and name the host called; `cert`/`key`: this node's client certificate, for peers
    that require one."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--send-tls-cert and --send-tls-key go together")
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert is not None and self.key is not None:
                ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(p) for p in (self.ca, self.cert, self.key) if p is not None)
            raise ConfigError(f"--send-tls-* ({files}): {exc}") from None
        return ctx


def _tls_problem(ctx: ssl.SSLContext, peer: Peer, timeout: float) -> str | None:
    """Why a TLS handshake with `peer` fails (pynetdicom only logs it), or None when it succeeds."""
    try:
        with (
            socket.create_connection((peer.host, peer.port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=peer.host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"TLS handshake failed: certificate verify failed: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"


class DimseDestination:
    """C-STORE to `peer`, as `ae_title` (over TLS with `tls`)."""

    def __init__(self, ae_title: str, peer: Peer, timeout: float = 30.0, *, tls: SendTls | None = None) -> None:
        self.ae_title, self.peer, self.timeout = ae_title, peer, timeout
        self.ssl_context = tls.context() if tls is not None else None  # bad files: refused at start
        self.name = f"dimse{'+tls' if tls is not None else ''}:{peer}"

    def send(self, files: Sequence[ResultFile], on_ack: Callable[[str], None]) -> None:
        from pynetdicom import AE

        if not files:
            return
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        for sop_class, ts in sorted({(f.sop_class, f.transfer_syntax) for f in files}):
            ae.add_requested_context(sop_class, ts)
        p = self.peer
        tls_args = (self.ssl_context, p.host) if self.ssl_context is not None else None
        assoc = ae.associate(p.host, p.port, ae_title=p.ae_title, tls_args=tls_args)
        if assoc.is_rejected:
            raise SendError(f"{p}: association rejected")
        if not assoc.is_established:
            why = _tls_problem(self.ssl_context, p, self.timeout) if self.ssl_context is not None else None
            raise SendError(f"{p}: no association ({why or 'peer down or not answering'})")
        try:
            for f in files:
                try:
                    status = _status(assoc.send_c_store(f.path))
                except ValueError as exc:  # pynetdicom: no accepted presentation context for this class/syntax
                    raise SendError(f"{p}: cannot send {f.sop_instance}: {exc}", permanent=True) from None
                if status is None:
                    raise SendError(f"{p}: no answer to C-STORE of {f.sop_instance} (connection lost or timed out)")
                if status not in _STORED:
                    raise SendError(
                        f"{p}: C-STORE of {f.sop_instance} refused (status 0x{status:04X})",
                        permanent=status >= 0xA800 or status in (0x0122, 0x0124),
                    )
                on_ack(f.sop_instance)
        finally:
            if assoc.is_established:
                assoc.release()


def _status(rsp: Any) -> int | None:
    value = rsp.get("Status") if rsp is not None else None
    return int(value) if value is not None else None


class StowDestination:
    """STOW-RS of the study's results in one request (`dicomweb.Pacs.store`)."""

    def __init__(self, url: str, *, ca: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.ca = ca  # verifies an https server's certificate (None: the system's CAs)
        if ca is not None and not ca.is_file():  # refused at start, not at the first send
            raise ConfigError(f"--stow-ca {ca}: no such CA file (PEM)")
        self.name = f"stow:{self.url}"

    def send(self, files: Sequence[ResultFile], on_ack: Callable[[str], None]) -> None:
        import pydicom

        from ..dicomweb import DicomWebError, Pacs

        if not files:
            return
        try:
            Pacs(self.url, ca=self.ca).store([pydicom.dcmread(f.path) for f in files])
        except DicomWebError as exc:
            raise SendError(str(exc), permanent="rejected" in str(exc)) from None
        for f in files:
            on_ack(f.sop_instance)


Destination = DimseDestination | StowDestination
