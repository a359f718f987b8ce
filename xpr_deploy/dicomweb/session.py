"""A `requests.Session` for untrusted HTTP peers: a total deadline and a size cap on every answer.

requests bounds each socket read, not a request: a server that sends one byte a second never times
out, and a body (or a gzip bomb) is read whole into memory. Here every request ends by a monotonic
deadline: a watchdog timer shuts the connection's socket down when it passes, which wakes a read
blocked on a dripping server wherever it is (status line, headers, body). The body is read in
chunks as urllib3 decodes it (it decompresses at most a chunk at a time), so a Content-Length over
the cap is refused before reading and decoded bytes stop at the cap. Callers (dicomweb-client) get
the body already read (`response.content`) and parse it as usual. `deadline(seconds)` lets a caller
put several requests (a transaction with its retries) under one deadline.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: bytes read (after decoding) per step: also the most one step can decompress
CHUNK = 1 << 16
#: an answer parsed into Python objects (JSON: a search result, a STOW-RS status) grows ~25 times in
#: memory, so it gets a smaller cap than image data: a study's QIDO-RS answer is some 100 KB
MAX_DOCUMENT_BYTES = 4 << 20


class LimitExceeded(requests.exceptions.RequestException):
    """An answer broke a limit of the session (its message says which)."""


class DeadlineExceeded(LimitExceeded):
    """No complete answer within the deadline."""


class ResponseTooLarge(LimitExceeded):
    """The answer is larger than the cap (declared, or counted after decompression)."""


def mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


class Deadline:
    """A point in monotonic time; when it passes, the watched connections' sockets are shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self.broken: LimitExceeded | None = None  # a limit broken here: retries under it fail at once
        self._lock = threading.Lock()
        self._conns: weakref.WeakSet[HTTPConnection] = weakref.WeakSet()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self) -> None:
        if self.broken is not None:
            raise type(self.broken)(str(self.broken))
        if self.expired or time.monotonic() >= self.end:
            raise DeadlineExceeded(f"no complete answer within {self.seconds:g} s")

    def watch(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conns.add(conn)
            expired = self.expired
        if expired:
            _shutdown(conn)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True  # before the shutdown: a read woken by it sees the deadline passed
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)


def _shutdown(conn: HTTPConnection) -> None:
    # http.client drops conn.sock once it has read the headers of an answer that ends the connection,
    # while the body is still read from it: the socket kept at connect time is the one to shut
    sock = conn.sock or getattr(conn, "watched_sock", None)
    if sock is not None:
        try:  # the plain socket's shutdown, also for TLS: it wakes a blocked recv in another thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Every request of this thread inside the block ends by `seconds` from now (an outer block wins)."""
    outer: Deadline | None = getattr(_local, "deadline", None)
    if outer is not None:
        yield outer
        return
    dl = Deadline(seconds)
    _local.deadline = dl
    dl._timer.start()
    try:
        yield dl
    finally:
        dl._timer.cancel()
        _local.deadline = None


def _watch(conn: HTTPConnection) -> None:
    dl: Deadline | None = getattr(_local, "deadline", None)
    if dl is not None:
        dl.watch(conn)


class _WatchedHTTPConnection(HTTPConnection):
    watched_sock: socket.socket | None = None

    def connect(self) -> None:
        _watch(self)
        super().connect()
        self.watched_sock = self.sock

    def request(self, *args: Any, **kwargs: Any) -> None:  # every use, also of a kept-alive connection
        _watch(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    watched_sock: socket.socket | None = None

    def connect(self) -> None:
        _watch(self)
        super().connect()
        self.watched_sock = self.sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class CappedAdapter(HTTPAdapter):
    """Sends through watched connections and reads each answer's body under the cap and deadline."""

    def __init__(self, max_bytes: int, max_document_bytes: int = MAX_DOCUMENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_document_bytes = min(max_bytes, max_document_bytes)
        super().__init__(max_retries=0)

    def cap_for(self, request: requests.PreparedRequest) -> int:
        """Image data comes to a GET that does not ask for JSON; anything else is a document."""
        wants_json = "json" in str(request.headers.get("Accept", "")).lower()
        return self.max_bytes if request.method == "GET" and not wants_json else self.max_document_bytes

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> poolmanager.PoolManager:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if manager.pool_classes_by_scheme is poolmanager.pool_classes_by_scheme:  # not SOCKS (own pools)
            manager.pool_classes_by_scheme = _POOLS
        return manager

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        dl: Deadline | None = getattr(_local, "deadline", None)
        if dl is None:
            raise RuntimeError("CappedAdapter.send outside a deadline() block (use CappedSession)")
        dl.check()
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        left = max(dl.remaining(), 0.01)  # 0 would make the socket non-blocking
        bounded = (min(connect or left, left), min(read or left, left))
        try:
            resp = super().send(request, stream=True, timeout=bounded, verify=verify, cert=cert, proxies=proxies)
        except requests.RequestException:
            dl.check()  # the watchdog's shutdown shows as a broken connection: say what it was
            raise
        try:
            resp._content = _read_body(resp, self.cap_for(request), dl)
        except LimitExceeded as exc:
            resp.close()
            dl.broken = exc
            raise
        except BaseException:
            resp.close()
            raise
        return resp


def _read_body(resp: requests.Response, cap: int, dl: Deadline) -> bytes:
    declared = resp.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > cap:
        raise ResponseTooLarge(f"the answer declares {int(declared)} bytes, over the {mib(cap)} cap")
    body = io.BytesIO()  # grows in place and hands its buffer over: about the body's size, not twice
    try:
        for chunk in resp.iter_content(CHUNK):
            if body.tell() + len(chunk) > cap:
                raise ResponseTooLarge(f"the answer is over the {mib(cap)} cap (counted after decompression)")
            body.write(chunk)
            dl.check()
    except requests.RequestException as exc:
        body.close()  # the traceback keeps this frame: free the buffer now
        if not isinstance(exc, LimitExceeded):
            dl.check()
        raise
    dl.check()  # a body cut short by the watchdog can look complete (no length, connection closed)
    return body.getvalue()


class CappedSession(requests.Session):
    """A session whose every request (redirects included) ends within `timeout` seconds, and whose
    answers hold at most `max_bytes` bytes before and after decompression."""

    def __init__(self, *, timeout: float, max_bytes: int) -> None:
        super().__init__()
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_redirects = 5
        self.ca: str | None = None  # a CA file (PEM) that https servers' certificates must verify against
        adapter = CappedAdapter(max_bytes)
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self.ca is not None:  # the CA asked for wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
            kwargs["verify"] = self.ca
        with deadline(self.timeout):
            return super().send(request, **kwargs)
