"""Hostile and broken DICOMweb servers (issue 21, class 4): every one is a single line, exit 4, no
traceback, within the total deadline and with bounded memory.

Each server is a real HTTP server on 127.0.0.1 (stdlib `http.server` in a thread, free port, stopped
by the test) playing one role: drip-feeding, streaming forever, a gzip bomb, a huge Content-Length,
a part that is not DICOM, QIDO-RS JSON of the wrong shape, an HTTP 500 whose reason is rich markup,
UIDs that are paths, a reset connection, a STOW-RS rejection. `xpr` runs in a subprocess, so the exit
code, stderr, wall time and peak memory (`ru_maxrss` from `wait4`) are the real ones.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"
MG = "1.2.840.10008.5.1.4.1.1.1.2"

Handler = Callable[[BaseHTTPRequestHandler], None]


class Peer:
    """A DICOMweb server on a free loopback port; `route(method, regex, handler)` gives it a role.
    Unrouted requests get 404; every request is recorded as (method, path)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.seen: list[tuple[str, str]] = []
        self.stop = threading.Event()
        peer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _any(self) -> None:
                peer.seen.append((self.command, self.path))
                for method, rx, fn in peer.routes:
                    if method == self.command and rx.search(self.path):
                        try:
                            fn(self)
                        except OSError:  # the client went away (as it should from a hostile peer)
                            self.close_connection = True
                        return
                self.send_error(404)

            do_GET = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def route(self, method: str, pattern: str, fn: Handler) -> Peer:
        self.routes.append((method, re.compile(pattern), fn))
        return self

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


# ---- the roles ----------------------------------------------------------------------------------


def answer(h: BaseHTTPRequestHandler, body: bytes, ctype: str, status: int = 200, reason: str | None = None) -> None:
    h.send_response(status, reason)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def json_answer(obj: object, status: int = 200) -> Handler:
    return lambda h: answer(h, json.dumps(obj).encode(), "application/dicom+json", status)


def multipart(*parts: bytes) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = b"".join(b"--" + b.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    return body + b"--" + b.encode() + b"--\r\n", f'multipart/related; type="application/dicom"; boundary={b}'


def wado(*parts: bytes) -> Handler:
    body, ctype = multipart(*parts)
    return lambda h: answer(h, body, ctype)


def mg_item(sop: object = SOP, series: object = SERIES, sop_class: object = MG) -> dict[str, object]:
    return {
        "0020000D": {"vr": "UI", "Value": [STUDY]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00080016": {"vr": "UI", "Value": [sop_class]},
        "00080060": {"vr": "CS", "Value": ["MG"]},
    }


def study_found(p: Peer) -> Peer:
    return p.route("GET", r"/studies\?", json_answer([{"0020000D": {"vr": "UI", "Value": [STUDY]}}]))


def one_mg_instance(p: Peer) -> Peer:
    return study_found(p).route("GET", rf"/studies/{STUDY}/instances(\?|$)", json_answer([mg_item()]))


def drip_body(p: Peer) -> Handler:
    """Headers at once, then one byte every 0.2 s, forever (each read gets its byte in time)."""

    def fn(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/dicom+json")
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        while not p.stop.is_set():
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.2)

    return fn


def drip_headers(p: Peer) -> Handler:
    """The status line, then a header that never ends, one byte every 0.2 s."""

    def fn(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not p.stop.is_set():
            h.wfile.write(b"a")
            h.wfile.flush()
            time.sleep(0.2)

    return fn


def endless(p: Peer) -> Handler:
    """A multipart answer that never ends, as fast as the client reads."""

    def fn(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=b')
        h.end_headers()
        h.wfile.write(b"--b\r\nContent-Type: application/dicom\r\n\r\n")
        block = b"\0" * (1 << 16)
        while not p.stop.is_set():
            h.wfile.write(block)

    return fn


#: 16 MiB of zeros as one gzip member (~16 KB); 200 members concatenated: 3.2 MB sent, 3.1 GiB decoded
_MEMBER = gzip.compress(b"\0" * (16 << 20), compresslevel=9)


def gzip_bomb(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    wado = "/instances/" in h.path
    h.send_header("Content-Type", 'multipart/related; type="application/dicom"' if wado else "application/dicom+json")
    h.send_header("Content-Encoding", "gzip")
    h.send_header("Content-Length", str(len(_MEMBER) * 200))
    h.end_headers()
    for _ in range(200):
        h.wfile.write(_MEMBER)


def huge_length(p: Peer) -> Handler:
    def fn(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/dicom+json")
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        p.stop.wait(30)

    return fn


def reset(h: BaseHTTPRequestHandler) -> None:
    """Read the request, then close with a TCP RST (SO_LINGER 0) instead of answering."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


def reset_mid_body(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/dicom+json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.write(b'[{"0020000D": ')
    h.wfile.flush()
    time.sleep(0.1)
    reset(h)


# ---- running xpr ------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float
    maxrss_mb: float

    @property
    def line(self) -> str:
        """The one stderr line; fails unless there is exactly one and no traceback."""
        lines = self.err.strip().splitlines()
        assert "Traceback" not in self.err and len(lines) == 1, self.err
        return lines[0]


#: runs ARGV as a grandchild and writes its peak RSS (KiB) to the fd in argv[1]. Measured from a direct child of
#: pytest, ru_maxrss would start at pytest's own peak (Linux keeps it across vfork + exec).
_PEAK = """import os, resource, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status = os.waitpid(pid, 0)
os.write(int(sys.argv[1]), str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def xpr(*args: str, limit: float = 60.0) -> Run:
    """`python -m xpr_deploy.cli ARGS` in a subprocess, with its peak RSS (killed after `limit` s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    r_peak, w_peak = os.pipe()
    cmd = [sys.executable, "-c", _PEAK, str(w_peak), "-m", "xpr_deploy.cli", *args]
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, pass_fds=(w_peak,),
                                start_new_session=True)  # fmt: skip
        os.close(w_peak)
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            pytest.fail(f"xpr {' '.join(args)} still running after {limit:g} s")
        peak = os.read(r_peak, 64)
    finally:
        os.close(r_peak)
    return Run(proc.returncode, out.decode(), err.decode(), time.monotonic() - t0, int(peak or 0) / 1024)


def fails(peer_url: str, *extra: str, limit: float = 60.0, study: str = STUDY) -> Run:
    """`xpr predict` against the peer: exit 4, one line naming the server, no traceback."""
    r = xpr("predict", str(ROOT / "no-model-needed"), "--dicomweb", peer_url, "--study", study, *extra, limit=limit)
    assert r.code == 4, (r.code, r.err)
    assert peer_url in r.line
    return r


def refused(peer_url: str, call: Callable[[Any], object] = lambda pacs: pacs.mg_instances(STUDY), **kw: Any) -> str:
    """The library's refusal in-process (faster than a CLI run): one line naming the server, exit 4."""
    from xpr_deploy.dicomweb import DicomWebError, Pacs

    with pytest.raises(DicomWebError) as e:
        call(Pacs(peer_url, **kw))
    msg = str(e.value)
    assert e.value.exit_code == 4 and msg.startswith(f"{peer_url}: ") and "\n" not in msg, msg
    return msg


# ---- deadline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [drip_body, drip_headers], ids=["body", "headers"])
def test_a_server_that_drips_forever_is_cut_at_the_total_deadline(peer: Peer, role: Callable[[Peer], Handler]) -> None:
    peer.route("GET", r"/studies\?", role(peer))
    r = fails(peer.url, "--timeout", "2", limit=40)
    assert "QIDO-RS search for the study failed: no complete answer within 2 s" in r.line
    assert r.seconds < 2 + 12  # the deadline, plus Python's start on a busy machine


def test_the_deadline_covers_a_wado_retrieve_too(peer: Peer) -> None:
    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", drip_body(peer))
    r = fails(peer.url, "--timeout", "2", limit=40)
    assert f"WADO-RS retrieve of instance {SOP} failed: no complete answer within 2 s" in r.line
    assert r.seconds < 2 + 12


#: `xpr predict --dicomweb` failing at its first request peaks at ~95 MB; generous for other machines
BASELINE_MB = 200

# ---- size caps --------------------------------------------------------------------------------


def test_an_endless_stream_stops_at_the_cap(peer: Peer) -> None:
    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", endless(peer))
    r = fails(peer.url, "--max-response-mb", "16", limit=60)
    assert "over the 16 MiB cap" in r.line
    assert r.maxrss_mb < BASELINE_MB + 16 + 100, r.maxrss_mb


def test_a_gzip_bomb_stops_at_the_cap_after_decompression(peer: Peer) -> None:
    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", gzip_bomb)
    r = fails(peer.url, "--max-response-mb", "16", limit=60)
    assert "over the 16 MiB cap (counted after decompression)" in r.line
    assert r.maxrss_mb < BASELINE_MB + 16 + 100, r.maxrss_mb
    assert [p for _, p in peer.seen].count(f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}") == 1


def test_a_json_answer_has_a_smaller_cap(peer: Peer) -> None:
    """A QIDO-RS answer becomes Python objects (~25 times its size): 4 MiB at most, bomb or not."""
    peer.route("GET", r"/studies\?", gzip_bomb)
    r = fails(peer.url, limit=60)
    assert (
        "QIDO-RS search for the study failed: the answer is over the 4 MiB cap (counted after decompression)" in r.line
    )
    assert r.maxrss_mb < BASELINE_MB + 4 + 100, r.maxrss_mb
    assert len(peer.seen) == 1  # a broken limit is not retried


def test_a_gzip_bomb_under_the_default_cap_stays_bounded(peer: Peer) -> None:
    """3 GiB decompressed against the default 256 MiB cap: refused, peak memory the cap over the
    baseline (~100 MB): not the 2.5 GB and more of old."""
    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", gzip_bomb)
    r = fails(peer.url, limit=90)
    assert "over the 256 MiB cap" in r.line
    assert r.maxrss_mb < BASELINE_MB + 256 + 150, r.maxrss_mb


def test_a_huge_content_length_is_refused_before_reading(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", huge_length(peer))
    r = fails(peer.url, limit=40)
    assert "declares 1000000000000 bytes, over the 4 MiB cap" in r.line
    assert r.seconds < 30  # not the 60 s deadline: refused from the header


# ---- malformed answers -------------------------------------------------------------------------

NOT_DICOM = b"this is not a DICOM file"
BROKEN_DICOM = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"garbage"


@pytest.mark.parametrize(
    ("part", "expect"),
    [(NOT_DICOM, "the answer is not a DICOM file"), (BROKEN_DICOM, "malformed answer")],
    ids=["not-dicom", "broken-meta"],
)
def test_a_wado_part_that_is_not_dicom(peer: Peer, tmp_path: Path, part: bytes, expect: str) -> None:
    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", wado(part))
    msg = refused(peer.url, lambda pacs: pacs.fetch_mg(STUDY, tmp_path))
    assert f"WADO-RS retrieve of instance {SOP} failed: {expect}" in msg
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_a_wado_part_that_is_not_dicom_from_the_cli(peer: Peer) -> None:
    """Sent bare (not multipart, which dicomweb-client warns about) after a QIDO-RS answer with a
    `Warning` header (which it logs): still one line, the library's warnings and logs stay quiet."""

    def warned(h: BaseHTTPRequestHandler) -> None:
        body = json.dumps([mg_item()]).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/dicom+json")
        h.send_header("Warning", '299 pacs "[/red] results truncated"')
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    study_found(peer).route("GET", rf"/studies/{STUDY}/instances(\?|$)", warned)
    peer.route("GET", rf"/instances/{SOP}$", lambda h: answer(h, NOT_DICOM, "application/dicom"))
    assert f"WADO-RS retrieve of instance {SOP} failed: the answer is not a DICOM file" in fails(peer.url).line


@pytest.mark.parametrize(
    ("ctype", "body", "expect"),
    [
        ("text/html", b"<html>login</html>", 'malformed answer (Unexpected media type: "text/html"'),
        (None, b"x", "malformed answer (no content-type)"),
    ],
    ids=["html", "no-content-type"],
)
def test_a_wado_answer_of_the_wrong_content_type(peer: Peer, ctype: str | None, body: bytes, expect: str) -> None:
    def fn(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    one_mg_instance(peer).route("GET", rf"/instances/{SOP}$", fn)
    assert expect.lower() in refused(peer.url, lambda pacs: pacs.fetch_mg(STUDY, Path("/nonexistent"))).lower()


@pytest.mark.parametrize(
    ("studies", "expect"),
    [
        ("a string", "malformed answer (a str, not a list of DICOM JSON objects)"),
        ([1, 2], "malformed answer (a list with non-objects, not a list of DICOM JSON objects)"),
        (42, "malformed answer (a int, not a list"),
        ([["nested"]], "malformed answer (a list with non-objects"),
    ],
    ids=["string", "numbers", "number", "list-of-lists"],
)
def test_qido_study_answers_of_the_wrong_shape(peer: Peer, studies: object, expect: str) -> None:
    peer.route("GET", r"/studies\?", json_answer(studies))
    assert f"QIDO-RS search for the study: {expect}" in refused(peer.url)


def test_a_qido_answer_of_the_wrong_shape_from_the_cli(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", json_answer({"0020000D": {"vr": "UI", "Value": [STUDY]}}))
    peer.route("GET", rf"/studies/{STUDY}/instances", json_answer("a string"))
    assert "QIDO-RS search for instances: malformed answer (a str, not a list" in fails(peer.url).line


@pytest.mark.parametrize(
    ("instances", "expect"),
    [
        ({**mg_item(), "00080018": "x"}, "SOPInstanceUID missing"),  # an object, not a list: the client wraps it
        ([mg_item(sop=12345)], "SOPInstanceUID 12345 is not a UID"),
        ([mg_item(sop=["1.2"])], "SOPInstanceUID ['1.2'] is not a UID"),
        ([mg_item(series=None)], "SeriesInstanceUID missing"),
        ([{**mg_item(), "0020000E": "not an object"}], "SeriesInstanceUID missing"),
        ([{**mg_item(), "00080018": {"vr": "UI", "Value": "1.2.3"}}], "SOPInstanceUID missing"),
        ([mg_item(sop="1." * 40 + "1")], "is not a UID"),
        ("[", None),
        ([{"00080016": {"Value": [None]}, "00080060": {"Value": [{"a": 1}]}}], "no MG instances (1 other"),
    ],
    ids=["object", "number", "list", "missing", "not-object", "value-not-list", "too-long", "not-json", "no-mg"],
)
def test_qido_instance_answers_of_the_wrong_types(peer: Peer, instances: object, expect: str | None) -> None:
    study_found(peer)
    if instances == "[":
        peer.route("GET", rf"/studies/{STUDY}/instances", lambda h: answer(h, b"[", "application/dicom+json"))
        expect = "malformed answer (not JSON"
    else:
        peer.route("GET", rf"/studies/{STUDY}/instances", json_answer(instances))
    assert expect in refused(peer.url)
    assert not any("/instances/" in path for _, path in peer.seen)  # nothing retrieved after a bad answer


def test_deeply_nested_json_is_one_line(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", lambda h: answer(h, b"[" * 200_000 + b"]" * 200_000, "application/dicom+json"))
    assert "QIDO-RS search for the study failed" in refused(peer.url)


def test_http_500_with_markup_in_the_reason_is_printed_as_it_is(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", lambda h: answer(h, b"oops", "text/plain", 500, "Boom [/red] [bold]x[/]"))
    line = fails(peer.url).line
    assert line.endswith("QIDO-RS search for the study failed: HTTP 500 Boom [/red] [bold]x[/] (oops)"), line


# ---- UIDs that are paths ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../x", "/etc/passwd", "1.2/../../../x", "..", "1.2.3\n4"])
def test_path_uids_from_qido_are_refused_before_anything_is_fetched(peer: Peer, tmp_path: Path, bad: str) -> None:
    study_found(peer).route("GET", rf"/studies/{STUDY}/instances", json_answer([mg_item(sop=bad)]))
    inbox = tmp_path / "a" / "b"
    inbox.mkdir(parents=True)
    msg = refused(peer.url, lambda pacs: pacs.fetch_mg(STUDY, inbox))
    assert f"SOPInstanceUID {bad!r} is not a UID" in msg, msg
    assert not any("/instances/" in path for _, path in peer.seen)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_path_uid_from_qido_in_the_cli(peer: Peer) -> None:
    study_found(peer).route("GET", rf"/studies/{STUDY}/instances", json_answer([mg_item(series="../../x")]))
    assert "malformed answer (SeriesInstanceUID '../../x' is not a UID)" in fails(peer.url).line


def test_a_path_given_as_the_study_is_bad_usage() -> None:
    r = xpr("predict", "m", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "../../x")
    assert r.code == 2 and "not a StudyInstanceUID" in r.line


@pytest.mark.parametrize(
    ("opt", "value"), [("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "1e9"), ("--max-response-mb", "0")]
)
def test_limits_out_of_range_are_bad_usage(opt: str, value: str) -> None:
    from xpr_deploy.dicomweb import predict_dicomweb
    from xpr_deploy.errors import ConfigError

    kw = {"timeout": float(value)} if opt == "--timeout" else {"max_bytes": int(float(value) * (1 << 20))}
    with pytest.raises(ConfigError, match=f"^{opt} "):
        predict_dicomweb("m", "http://127.0.0.1:9/dicom-web", STUDY, **kw)  # type: ignore[arg-type]


def test_fetched_files_are_named_by_safe_uids(peer: Peer, synth_vindr: Path, tmp_path: Path) -> None:
    """A UID of digits and dots that is not canonical (leading zeros) is fetched, under a hashed name
    inside the folder, and read by the project's reader."""
    from xpr_deploy.data.dicom import read_image
    from xpr_deploy.dicomweb import Pacs
    from xpr_deploy.io import uid_name

    odd = "1.02.0003"
    f = sorted((synth_vindr / "images").rglob("*.dicom"))[0]
    study_found(peer).route("GET", rf"/studies/{STUDY}/instances", json_answer([mg_item(sop=odd)]))
    peer.route("GET", rf"/instances/{odd}$", wado(f.read_bytes()))
    dest = tmp_path / "inbox"
    dest.mkdir()
    paths = Pacs(peer.url).fetch_mg(STUDY, dest)
    assert paths == [dest / f"{uid_name(odd)}.dcm"] and uid_name(odd) != odd
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [paths[0].name]
    assert read_image(paths[0]).SOPInstanceUID == pydicom.dcmread(f).SOPInstanceUID


# ---- connections ------------------------------------------------------------------------------


def test_connection_reset_before_the_answer(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", reset)
    line = refused(peer.url)
    assert "reset the connection" in line or "closed the connection without an answer" in line, line


def test_connection_reset_in_the_middle_of_the_answer(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", reset_mid_body)
    line = refused(peer.url)
    assert "QIDO-RS search for the study failed: the answer broke off" in line, line


def test_an_answer_that_is_not_http(peer: Peer) -> None:
    peer.route("GET", r"/studies\?", lambda h: (h.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n"), h.wfile.flush()))
    assert "QIDO-RS search for the study failed: malformed HTTP answer" in refused(peer.url)


def test_headers_without_end_are_cut(peer: Peer) -> None:
    """More header bytes than http.client takes in a line: refused at once, not read forever."""

    def fn(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        while not peer.stop.is_set():
            h.wfile.write(b"a" * 65536)

    peer.route("GET", r"/studies\?", fn)
    assert "QIDO-RS search for the study failed: malformed HTTP answer" in refused(peer.url)


def test_tls_to_a_plain_http_server_is_a_tls_error(peer: Peer) -> None:
    url = peer.url.replace("http://", "https://")
    assert "failed: TLS error" in refused(url)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (cert, key)."""
    if shutil.which("openssl") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    args = ["-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    args += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")]
    subprocess.run(["openssl", "req", *args], check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def test_an_untrusted_certificate_is_a_tls_error(cert: tuple[Path, Path]) -> None:
    p = Peer(tls=cert)
    try:
        assert "failed: TLS error" in refused(p.url) and "CERTIFICATE_VERIFY_FAILED" in refused(p.url)
    finally:
        p.close()


def test_the_deadline_holds_over_tls(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog shuts a TLS socket down too: a trusted server dripping over TLS is cut."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert[0]))
    p = Peer(tls=cert)
    try:
        p.route("GET", r"/studies\?", drip_body(p))
        t0 = time.monotonic()
        assert refused(p.url, timeout=1.5).endswith(
            "QIDO-RS search for the study failed: no complete answer within 1.5 s"
        )
        assert time.monotonic() - t0 < 5
        p.routes.clear()
        from xpr_deploy.dicomweb import Pacs

        assert Pacs(one_mg_instance(p).url).mg_instances(STUDY) == [(SERIES, SOP)]  # and a good answer is read
    finally:
        p.close()


def test_a_tls_handshake_dripped_forever_is_cut_at_the_deadline() -> None:
    """A server that answers the ClientHello with a record header announcing 16 KB, then sends one
    byte every 0.2 s: each read of the handshake is in time, the whole never ends. (Python bounds a
    whole handshake by the socket's timeout, which the session keeps within the deadline.)"""
    stop = threading.Event()

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"\x16\x03\x03\x40\x00")
            while not stop.is_set():
                try:
                    conn.sendall(b"\x00")
                except OSError:
                    return
                time.sleep(0.2)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        t = threading.Thread(target=serve, args=(listener,), daemon=True)
        t.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
        t0 = time.monotonic()
        try:
            msg = refused(url, timeout=1.5)
        finally:
            stop.set()
        assert msg.endswith("QIDO-RS search for the study failed: no complete answer within 1.5 s"), msg
        assert time.monotonic() - t0 < 5
        t.join(5)


def test_server_down_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "cannot connect (server down or wrong address)" in fails(f"http://127.0.0.1:{port}/dicom-web").line


# ---- STOW-RS ----------------------------------------------------------------------------------


def _sr_like() -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = STUDY, SERIES, SOP
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, SOP
    return ds


FAILED = {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [0xA700]},
                                             "00081155": {"vr": "UI", "Value": [SOP]}}]}}  # fmt: skip


@pytest.mark.parametrize(
    ("status", "ctype", "body", "expect"),
    [
        (409, "application/dicom+json", json.dumps(FAILED).encode(), "HTTP 409 Conflict (failure reason 0xA700)"),
        (400, "text/plain", b"\n  bad [/red] multipart\nsecond line", "HTTP 400 Bad Request (bad [/red] multipart)"),
        (500, "text/html", b"<h1>x</h1>", "HTTP 500 Internal Server Error"),
        (409, "application/dicom+json", b"[", "HTTP 409 Conflict"),
        (200, "application/dicom+json", json.dumps(FAILED).encode(), "rejected 1 of 1 objects (failure reason 0xA700)"),
        (200, "application/dicom+json", b'{"00081198": "x"}', "STOW-RS failed: malformed answer"),
    ],
    ids=["409-json", "400-text", "500-html", "409-bad-json", "200-failed", "200-bad-json"],
)
def test_stow_rejections_are_one_line(peer: Peer, status: int, ctype: str, body: bytes, expect: str) -> None:
    peer.route("POST", r"/studies", lambda h: (drain(h), answer(h, body, ctype, status)))
    msg = refused(peer.url, lambda pacs: pacs.store([_sr_like()]))
    assert msg.startswith(f"{peer.url}: STOW-RS") and expect in msg, msg


def test_a_stow_never_answered_ends_at_the_deadline(peer: Peer) -> None:
    peer.route("POST", r"/studies", lambda h: (drain(h), drip_body(peer)(h)))
    t0 = time.monotonic()
    msg = refused(peer.url, lambda pacs: pacs.store([_sr_like()]), timeout=1.5)
    assert msg.endswith("STOW-RS failed: no complete answer within 1.5 s") and time.monotonic() - t0 < 5, msg


def test_a_real_orthanc_refusal_is_one_line_and_the_accepted_part_is_stored(tmp_path: Path) -> None:
    """The STOW-RS rejection from a real server, not the fake above: Orthanc 1.10's DICOMweb plugin
    refuses an instance of another study than the one posted to (HTTP 409, FailedSOPSequence with
    reason 0x0110, and no Content-Type), stores the rest. `store` raises one line naming the server
    (exit 4), and Orthanc holds the accepted SR only. (A ReceivedInstanceFilter that drops an SOP
    class is no rejection there: Orthanc 1.10 answers it as stored.)"""
    import requests

    from xpr_deploy.viewer import Orthanc, ViewerError

    try:
        orthanc = Orthanc(tmp_path / "orthanc")
    except ViewerError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have Orthanc and its DICOMweb plugin: {exc}")
        pytest.skip(str(exc))
    try:
        ours, other = _sr_like(), _sr_like()
        other.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.78"
        msg = refused(orthanc.dicomweb, lambda pacs: pacs.store([ours, other]))
        # Orthanc answers without a Content-Type: the reason is read from its DICOM JSON all the same
        assert msg == f"{orthanc.dicomweb}: STOW-RS failed: HTTP 409 Conflict (failure reason 0x0110)", msg
        stored = requests.get(f"{orthanc.base}/instances?expand", timeout=30).json()
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in stored] == [SOP]
    finally:
        orthanc.stop()


def drain(h: BaseHTTPRequestHandler) -> None:
    """Read a request body, chunked or not (dicomweb-client sends a large STOW-RS chunked)."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16):
            h.rfile.read(size + 2)
        h.rfile.readline()
    else:
        h.rfile.read(int(h.headers.get("Content-Length") or 0))


def serve_study(p: Peer, folder: Path) -> str:
    """QIDO-RS and WADO-RS for the real DICOM files of one study folder; its StudyInstanceUID."""
    items, files = [], {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        files[str(ds.SOPInstanceUID)] = f.read_bytes()
        items.append({k: {"vr": "UI", "Value": [str(ds[k].value)]}
                      for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")})  # fmt: skip
        items[-1] = {f"{pydicom.datadict.tag_for_keyword(k):08X}": v for k, v in items[-1].items()}
    study = items[0]["0020000D"]["Value"][0]
    p.route("GET", r"/studies\?", json_answer([{"0020000D": {"vr": "UI", "Value": [study]}}]))
    p.route("GET", rf"/studies/{study}/instances(\?|$)", json_answer(items))
    p.route("GET", rf"/studies/{study}/series/[0-9.]+/instances(\?|$)", json_answer([]))  # results stored: none
    for sop, data in files.items():
        p.route("GET", rf"/instances/{sop}$", wado(data))
    return str(study)


@pytest.fixture(scope="module")
def model(untied_tiny_checkpoint: Callable[[dict, str], Path]) -> Path:
    return untied_tiny_checkpoint({}, "ckpt-dicomweb")


def test_a_stow_rejection_ends_the_cli_run_in_one_line(peer: Peer, model: Path, synth_vindr: Path) -> None:
    """The whole path: a real study pulled, predicted by a real model, and its results refused (409)."""
    study = serve_study(peer, sorted((synth_vindr / "images").iterdir())[0])
    body = json.dumps(FAILED).encode()
    peer.route("POST", rf"/studies/{study}$", lambda h: (drain(h), answer(h, body, "application/dicom+json", 409,
                                                                          "Conflict [/red]")))  # fmt: skip
    r = xpr("predict", str(model), "--dicomweb", peer.url, "--study", study, "--store", limit=300)
    assert r.code == 4, r.err
    assert r.line.endswith(f"{peer.url}: STOW-RS failed: HTTP 409 Conflict [/red] (failure reason 0xA700)"), r.line
    assert [m for m, _ in peer.seen].count("POST") == 1
