"""Real DICOM peers for tests, on 127.0.0.1 and free ports, stopped by the test that starts them:
Orthanc (REST, DIMSE and, when the plugin is installed, DICOMweb), DCMTK's storescu / storescp,
and `xpr listen` itself as a subprocess. In CI a missing peer fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from xpr_deploy.node.launch import listen_command, listen_env, storescp_command
from xpr_deploy.viewer import ORTHANC_PLUGIN as DICOMWEB_PLUGIN
from xpr_deploy.viewer import Orthanc as ViewerOrthanc

REPO = Path(__file__).resolve().parents[1]
ORTHANC = shutil.which("Orthanc")
STORESCU = shutil.which("storescu")
STORESCP = shutil.which("storescp")


def need(tool: str | None, what: str) -> str:
    """The tool's path; else a skip (a failure in CI, where every peer must be installed)."""
    if tool is None:
        msg = f"{what} is not installed (scripts/system_deps.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"{what} within {timeout:g} s\n{tail}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return int(proc.returncode)


class Orthanc(ViewerOrthanc):
    """A real Orthanc (xpr view's, `xpr_deploy.viewer.Orthanc`) with DIMSE on: REST on `base`, DICOMweb on
    `dicomweb`, C-STORE on `dicom_port` as `aet`; `modalities`: {name: (AE, port)} it may send to."""

    def __init__(self, root: Path, modalities: dict[str, tuple[str, int]] | None = None, aet: str = "ORTHANC") -> None:
        need(ORTHANC, "Orthanc")
        need(str(DICOMWEB_PLUGIN) if DICOMWEB_PLUGIN.is_file() else None, "Orthanc's DICOMweb plugin")
        self.aet, self.dicom_port = aet, free_port()
        dimse = {
            "Name": "xpr-test", "DicomServerEnabled": True, "DicomAet": aet, "DicomPort": self.dicom_port,
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "DicomScuTimeout": 30, "StableAge": 3600,
            "DicomModalities": {k: [ae, "127.0.0.1", p] for k, (ae, p) in (modalities or {}).items()},
        }  # fmt: skip
        super().__init__(root, config=dimse)

    def upload(self, path: str | Path) -> dict[str, Any]:  # type: ignore[override]
        """Store one file; Orthanc's answer (ID, ParentStudy, ...)."""
        import requests

        r = requests.post(f"{self.base}/instances", data=Path(path).read_bytes(), timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def send_to(self, modality: str, resource: str, timeout: float = 120) -> Any:
        """POST /modalities/{modality}/store: Orthanc's own SCU sends `resource` by C-STORE."""
        import requests

        body = {"Resources": [resource], "Synchronous": True, "Timeout": 60}
        return requests.post(f"{self.base}/modalities/{modality}/store", json=body, timeout=timeout)

    def study_id(self, study_uid: str) -> str | None:
        import requests

        r = requests.post(f"{self.base}/tools/lookup", data=study_uid, timeout=30)
        r.raise_for_status()
        hits = [h["ID"] for h in r.json() if h.get("Type") == "Study"]
        return hits[0] if hits else None

    def instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study, with its tags (`MainDicomTags`) and its series' modality."""
        import requests

        sid = self.study_id(study_uid)
        if sid is None:
            return []
        out = []
        for series in requests.get(f"{self.base}/studies/{sid}/series", timeout=30).json():
            for inst in requests.get(f"{self.base}/series/{series['ID']}/instances", timeout=30).json():
                inst["Modality"] = series["MainDicomTags"].get("Modality")
                out.append(inst)
        return out

    def file(self, instance_id: str, dest: Path) -> Path:
        import requests

        r = requests.get(f"{self.base}/instances/{instance_id}/file", timeout=30)
        r.raise_for_status()
        dest.write_bytes(r.content)
        return dest


class StoreSCP:
    """DCMTK's storescp as a destination: every object it receives becomes its own file (`-uf`), so an
    object sent twice shows up twice."""

    def __init__(self, root: Path, aet: str = "DEST", port: int | None = None) -> None:
        exe = need(STORESCP, "DCMTK storescp")
        self.aet, self.port = aet, port or free_port()
        self.out = root / "received"
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "storescp.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            storescp_command(exe, self.out, self.port, aet, verbose=True), stdout=self._log, stderr=self._log
        )
        _wait(lambda: _listening(self.port), 15, "storescp did not start", self.log_path)

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file() and not p.name.startswith("."))

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def storescu(
    files: Sequence[Path], port: int, *, aet: str = "STORESCU", aec: str = "XPR", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """DCMTK's storescu, one association per transfer syntax among `files` (it proposes one kind each)."""
    import pydicom

    exe = need(STORESCU, "DCMTK storescu")
    flag = {
        "1.2.840.10008.1.2.4.90": "-xv",
        "1.2.840.10008.1.2.4.91": "-xw",
        "1.2.840.10008.1.2.5": "-xr",
        "1.2.840.10008.1.2.4.70": "-xs",
        "1.2.840.10008.1.2.4.80": "-xt",
        "1.2.840.10008.1.2.4.81": "-xu",
        "1.2.840.10008.1.2.1.99": "-xd",
    }
    groups: dict[str, list[str]] = {}
    for f in files:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(flag.get(ts, "-x="), []).append(str(f))
    out, err, rc = [], [], 0
    for opt, paths in sorted(groups.items()):
        r = subprocess.run(
            [exe, opt, "-R", "-v", "-aet", aet, "-aec", aec, "127.0.0.1", str(port), *paths],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        out.append(r.stdout)
        err.append(r.stderr)
        rc = rc or r.returncode
    return subprocess.CompletedProcess(["storescu"], rc, "".join(out), "".join(err))


class Listen:
    """`xpr listen` as a subprocess (this worktree's package), its log in `log_path`."""

    def __init__(
        self,
        root: Path,
        bundle: Path,
        *args: str,
        port: int | None = None,
        http_port: int | None = None,
        env: dict[str, str] | None = None,
        name: str = "listen",
        spool: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.spool = spool or root / "spool"
        self.log_path = root / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        cmd = listen_command(bundle, self.spool, self.port, self.http_port, *args)
        self._start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=listen_env(env), cwd=root)
        _wait(
            lambda: "listening as" in self.log() or self.proc.poll() is not None,
            90,
            "xpr listen did not start",
            self.log_path,
        )
        if self.proc.poll() is not None:
            pytest.fail(f"xpr listen exited {self.proc.returncode}: {self.log()}")

    def log(self) -> str:
        """This run's log (a restart appends to the same file)."""
        return self.log_path.read_text(errors="replace")[self._start :]

    def wait_for(self, text: str, timeout: float = 120, count: int = 1) -> str:
        _wait(
            lambda: self.log().count(text) >= count or self.proc.poll() is not None,
            timeout,
            f"{text!r} not in the xpr listen log",
            self.log_path,
        )
        if self.log().count(text) < count:
            pytest.fail(f"xpr listen exited {self.proc.returncode} before {text!r}:\n{self.log()[-3000:]}")
        return self.log()

    def answer(self, files: Sequence[Path], study_uid: str, **storescu_options: Any) -> str:
        """Send `files` with storescu (which must succeed) and wait for the study's log line; that line."""
        r = storescu(files, self.port, **storescu_options)
        assert r.returncode == 0, r.stderr
        return self.wait_for(f"study {study_uid}:").splitlines()[-1]

    def get(self, path: str) -> Any:
        import requests

        return requests.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=10)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=15)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        rc = _stop(self.proc, sig)
        self._log.close()
        return rc


class TlsStoreSCP:
    """A pynetdicom Storage SCP over TLS (`cert`, `key`), in this process: every object it receives
    becomes its own file, so an object sent twice shows up twice."""

    def __init__(self, root: Path, cert: Path, key: Path, *, aet: str = "TLSDEST", port: int | None = None) -> None:
        import ssl

        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.aet, self.port = aet, port or free_port()
        self.out = root / "received"
        self.out.mkdir(parents=True, exist_ok=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ae = AE(ae_title=aet)
        ae.supported_contexts = AllStoragePresentationContexts
        self._n = 0

        def on_store(event: Any) -> int:
            self._n += 1
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds.save_as(self.out / f"{self._n:04d}.dcm", enforce_file_format=True)
            return 0x0000

        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)], ssl_context=ctx
        )

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        self.server.shutdown()


class TlsProxy:
    """A TLS front (Python's ssl, `cert` / `key`) on a free loopback port that forwards each connection
    to `backend_port` in plain TCP: https for a real Orthanc, whose Debian build crashes (SIGSEGV in
    civetweb) on its own `SslEnabled` https."""

    def __init__(self, backend_port: int, cert: Path, key: Path) -> None:
        import ssl
        import threading

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.backend = backend_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:  # closed by stop()
                return
            self._threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except OSError:  # a client that does not trust the certificate ends the handshake
            raw.close()
            return
        plain = socket.create_connection(("127.0.0.1", self.backend), timeout=60)
        self._threading.Thread(target=_pipe, args=(plain, tls), daemon=True).start()
        _pipe(tls, plain)

    def stop(self) -> None:
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
