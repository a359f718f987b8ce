"""Who may call the node (`--allow AE[@HOST]`) and where results go (`--send-to AE@HOST:PORT`)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from ..errors import ConfigError


def _ae_title(text: str, what: str) -> str:
    """PS3.5 AE title: 1-16 characters of the default repertoire, no backslash, not all spaces."""
    ae = text.strip()
    if not ae or len(ae) > 16 or "\\" in ae or not ae.isascii() or not ae.isprintable():
        raise ConfigError(f"{what} {text!r}: an AE title is 1-16 printable ASCII characters, no backslash")
    return ae


def _host(text: str, what: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"{what}: {text!r} is not a host name or address")
    return text


def _addresses(host: str) -> frozenset[str]:
    """Every address `host` names (itself when it is an address; empty when it cannot be resolved)."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        return frozenset()


@dataclass(frozen=True)
class Peer:
    """A DICOM destination: AE title, host, port."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Caller:
    """An allowed caller: its AE title and, optionally, the host it must call from."""

    ae_title: str
    host: str | None = None

    def admits(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        return self.host is None or address in _addresses(self.host) or address == self.host

    def __str__(self) -> str:
        return self.ae_title + (f"@{self.host}" if self.host else "")


def parse_peer(text: str) -> Peer:
    """`AE@HOST:PORT` (IPv6: `AE@[::1]:PORT`)."""
    ae, at, rest = text.rpartition("@")
    host, colon, port = rest.rpartition(":")
    if not at or not colon:
        raise ConfigError(f"--send-to {text!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ConfigError(f"--send-to {text!r}: the port must be a number in 1..65535")
    return Peer(_ae_title(ae, "--send-to"), _host(host, f"--send-to {text!r}"), number)


def parse_caller(text: str) -> Caller:
    """`AE` or `AE@HOST`."""
    ae, at, host = text.partition("@")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Caller(_ae_title(ae, "--allow"), _host(host, f"--allow {text!r}") if at else None)
