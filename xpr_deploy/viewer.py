"""A real viewer for xpr's results without a PACS: OHIF's prebuilt app, Orthanc, one loopback origin.

- **OHIF** (`@ohif/app` 3.13.2, the npm registry's prebuilt app: `package/dist`, static files) is
  fetched once with `npm pack` into a cache (`XPR_OHIF_CACHE`, default `~/.cache/xpr/ohif`).
- **Orthanc** (Debian `orthanc` + `orthanc-dicomweb`) runs on a free loopback port with its storage
  in a temporary folder; studies and results are uploaded over its REST API.
- **One origin** (`ViewerServer`, a threaded HTTP server on 127.0.0.1): OHIF's files, an
  `app-config.js` pointing its DICOMweb data source at `/dicom-web`, and `/dicom-web/...` proxied to
  Orthanc (or to any DICOMweb server: `xpr view --dicomweb URL`). Same origin because Orthanc sends
  no CORS headers; the browser's Host header is kept for Orthanc so that the bulk-data URLs in its
  metadata point back through the proxy.

Used by `xpr view` (`cli/view.py`) and by the browser test (`tests/test_viewer.py`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import mimetypes
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .errors import PeerError, XprError

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_ORTHANC = "apt-get install orthanc orthanc-dicomweb"
INSTALL_NPM = "apt-get install npm"


class ViewerError(XprError):
    """The viewer cannot start: a missing dependency (one line saying what to install) or a peer error."""


class ViewerPeerError(ViewerError, PeerError):
    """Orthanc or the DICOMweb server refused or failed (exit code 4, like every DICOMweb error)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- OHIF: fetched once with npm -------------------------------------------------------------------


def ohif_cache() -> Path:
    return Path(os.environ.get("XPR_OHIF_CACHE") or Path.home() / ".cache" / "xpr" / "ohif")


def ensure_ohif(cache: str | Path | None = None, timeout: float = 600.0) -> Path:
    """OHIF's `dist` folder (index.html, bundles, wasm codecs), fetched with `npm pack` when not cached."""
    import tarfile

    from .io import atomic_dir

    root = Path(cache) if cache is not None else ohif_cache()
    dest = root / OHIF_VERSION
    dist = dest / "package" / "dist"
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerError(f"npm not found: it fetches OHIF {OHIF_VERSION} once ({INSTALL_NPM}), or unpack "
                          f"`npm pack {OHIF_PACKAGE}@{OHIF_VERSION}` into {dest}")  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xpr-ohif-", dir=root) as tmp:
        try:
            r = subprocess.run([npm, "pack", f"{OHIF_PACKAGE}@{OHIF_VERSION}", "--silent"], cwd=tmp,
                               capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ViewerPeerError(f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION}: no answer in {timeout:.0f} s") from exc
        tgz = sorted(Path(tmp).glob("*.tgz"))
        if r.returncode != 0 or not tgz:
            last = (r.stderr.strip().splitlines() or ["no package file"])[-1]
            raise ViewerPeerError(f"npm pack {OHIF_PACKAGE}@{OHIF_VERSION} failed: {last}")
        with atomic_dir(dest) as work, tarfile.open(tgz[0]) as tar:
            tar.extractall(work, filter="data")
    if not (dist / "index.html").is_file():
        raise ViewerError(f"{dest}: {OHIF_PACKAGE}@{OHIF_VERSION} has no package/dist/index.html")
    return dist


APP_CONFIG = """window.config = {
  name: 'xpr',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {},
  maxNumberOfWebWorkers: 2,
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  showStudyList: true,
  investigationalUseDialog: { option: 'never' },
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: false,
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'xpr',
        name: 'xpr',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('xpr-viewer http error', error && error.status);
  },
};
"""


# ---- Orthanc ----------------------------------------------------------------------------------------


def find_orthanc() -> Path:
    exe = shutil.which("Orthanc")
    if exe is None or not ORTHANC_PLUGIN.is_file():
        raise ViewerError(f"Orthanc with its DICOMweb plugin is not installed ({INSTALL_ORTHANC})")
    return Path(exe)


class Orthanc:
    """A private Orthanc on a free loopback port (no DICOM port, no remote access), stopped by `stop`."""

    def __init__(self, root: str | Path, timeout: float = 30.0, config: Mapping[str, Any] | None = None) -> None:
        """`config`: further Orthanc settings over these (a test peer enables DIMSE, adds modalities)."""
        import requests

        exe = find_orthanc()
        self.root = Path(root)
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cfg = {
            "Name": "xpr-view", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpBindAddress": "127.0.0.1", "DicomServerEnabled": False,
            "Plugins": [str(ORTHANC_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            **(config or {}),
        }  # fmt: skip
        (self.root / "orthanc.json").write_text(json.dumps(cfg))
        self.log_path = self.root / "orthanc.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(exe), str(self.root / "orthanc.json")], stdout=self._log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.base}/dicom-web"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.base}/system", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no log"]
                raise ViewerPeerError(f"Orthanc did not start on port {self.port}: {tail[0]}")
            time.sleep(0.2)

    def upload(self, path: str | Path) -> str:
        """Store one DICOM file; its Orthanc instance id."""
        import requests

        try:
            r = requests.post(f"{self.base}/instances", data=Path(path).read_bytes(), timeout=60)
        except requests.RequestException as exc:
            raise ViewerPeerError(f"{path}: Orthanc did not take it: {exc}") from exc
        if not r.ok:
            raise ViewerPeerError(f"{path}: Orthanc refused it (HTTP {r.status_code})")
        return str(r.json().get("ID", ""))

    def studies(self) -> list[str]:
        """StudyInstanceUIDs stored."""
        import requests

        r = requests.get(f"{self.dicomweb}/studies", timeout=30)
        r.raise_for_status()
        return [str(s["0020000D"]["Value"][0]) for s in (r.json() if r.content else [])]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


# ---- the one origin: OHIF's files + app-config + DICOMweb proxy -------------------------------------

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length"}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: a viewer makes hundreds of requests

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path == "/dicom-web" or path.startswith("/dicom-web/"):
                self._proxy()
            elif path == "/app-config.js":
                self._send(200, self.server.app_config.encode(), "application/javascript")
            else:
                self._static(path)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away

    def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _static(self, path: str) -> None:
        from .io import child_path

        dist = self.server.dist
        rel = urllib.parse.unquote(path).lstrip("/")
        try:
            target = child_path(dist, *[p for p in rel.split("/") if p]) if rel else dist / "index.html"
        except XprError:
            self._send(404, b"not found", "text/plain")
            return
        if not target.is_file():
            if "." in rel.rsplit("/", 1)[-1]:  # a missing file, not an app route
                self._send(404, b"not found", "text/plain")
                return
            target = dist / "index.html"  # /viewer, /segmentation, ...: OHIF's router
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            ctype = "application/wasm"
        self._send(200, target.read_bytes(), ctype, {"Cache-Control": "no-cache"})

    def _proxy(self) -> None:
        up = self.server.upstream
        rest = self.path[len("/dicom-web") :]
        conn_cls = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(up.hostname or "127.0.0.1", up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        # Orthanc writes bulk-data URLs from the Host it is asked for: keep the browser's for it
        headers["Host"] = (self.headers.get("Host") if self.server.keep_host else up.netloc) or up.netloc
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        try:
            conn.request(self.command, up.path.rstrip("/") + rest, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._send(502, f"DICOMweb server {up.geturl()}: {exc}".encode(), "text/plain")
            return
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class ViewerServer(ThreadingHTTPServer):
    """OHIF + `/dicom-web` proxy on 127.0.0.1:`port` (0: a free one), served from a daemon thread."""

    daemon_threads = True

    def __init__(self, dist: str | Path, upstream: str, port: int = 0, keep_host: bool = True) -> None:
        self.dist = Path(dist)
        self.upstream = urllib.parse.urlsplit(upstream.rstrip("/"))
        if self.upstream.scheme not in ("http", "https") or not self.upstream.hostname:
            raise ViewerError(f"--dicomweb {upstream!r}: not an http(s) URL")
        self.keep_host = keep_host
        self.app_config = APP_CONFIG
        super().__init__(("127.0.0.1", port), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, name="xpr-viewer", daemon=True)

    def start(self) -> ViewerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# ---- xpr view ----------------------------------------------------------------------------------------


@dataclass
class ViewSession:
    """What `xpr view` started: the URL to open, what was uploaded, and how to stop it all."""

    url: str
    studies: list[str] = field(default_factory=list)  # StudyInstanceUIDs, with their viewer links
    uploaded: int = 0
    rejected: list[str] = field(default_factory=list)  # "path: reason" of files Orthanc refused
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def study_url(self, uid: str) -> str:
        return f"{self.url}/viewer?StudyInstanceUIDs={urllib.parse.quote(uid)}"

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "uploaded": self.uploaded, "rejected": self.rejected,
                "studies": {u: self.study_url(u) for u in self.studies}}  # fmt: skip

    def close(self) -> None:
        self._stack.close()


def _dicom_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            with contextlib.suppress(OSError), open(p, "rb") as f:
                head = f.read(132)
                if head[128:132] == b"DICM":
                    yield p


def start_view(
    studies: Sequence[str | Path] = (),
    *,
    bundle: str | Path | None = None,
    dicomweb: str | None = None,
    port: int = 0,
    operating_point: str | None = None,
    ohif_dir: str | Path | None = None,
) -> ViewSession:
    """Start OHIF on 127.0.0.1 over Orthanc holding `studies` (and, with `bundle`, xpr's results on
    them: SR + binary heatmap Segmentations), or over the DICOMweb server `dicomweb`. The caller
    closes the session (`close`): the server and Orthanc stop, the temporary storage goes."""
    if dicomweb is not None and (studies or bundle is not None):
        raise ViewerError("--dicomweb shows a server's studies: no STUDY folders or --bundle with it")
    if dicomweb is None and not studies:
        raise ViewerError("give STUDY folders (and --bundle to add xpr's results), or --dicomweb URL")
    missing = [str(s) for s in studies if not Path(s).is_dir()]
    if missing:
        raise ViewerError(f"{missing[0]}: no such folder")
    dist = ensure_ohif(ohif_dir)
    session = ViewSession(url="")
    stack = session._stack
    try:
        if dicomweb is not None:
            server = ViewerServer(dist, dicomweb, port=port, keep_host=False).start()
            stack.callback(server.stop)
            session.url = server.url
            return session
        find_orthanc()  # before any work: one line if it is missing
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xpr-view-")))
        files = [f for s in studies for f in _dicom_files(Path(s))]
        if bundle is not None:
            from .predict import predict

            out = work / "results"
            predict(bundle, list(studies), dicom_out=out, operating_point=operating_point, sr="tid1500", seg="binary")
            files += list(_dicom_files(out))
        orthanc = Orthanc(work / "orthanc")
        stack.callback(orthanc.stop)
        for f in files:
            try:
                orthanc.upload(f)
                session.uploaded += 1
            except ViewerPeerError as exc:
                session.rejected.append(str(exc))
        session.studies = orthanc.studies()
        server = ViewerServer(dist, orthanc.dicomweb, port=port, keep_host=True).start()
        stack.callback(server.stop)
        session.url = server.url
        return session
    except BaseException:
        stack.close()
        raise
