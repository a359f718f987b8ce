"""A real `tritonserver` on 127.0.0.1: start it on a model repository, wait until it is ready,
stop it. Every failure is one ServeError line naming the cause: no server, a port in use, a model
that does not load (the server's own message), a server that died or never became ready."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from .env import ServeError, ServerInstall, backends_dir, find_server

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = HOST) -> list[int]:
    """`n` distinct ports free now (all held open while choosing, so none is picked twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


_LOAD_FAIL = re.compile(r"failed to load '([^']+)'[^:]*:\s*(.*)")


def failure_from_log(text: str) -> str | None:
    """The server's own reason for failing, from its log: a model that did not load, else its last error."""
    for line in text.splitlines():
        m = _LOAD_FAIL.search(line)
        if m:
            why = m.group(2).replace("\\n", "\n").strip().splitlines()[0].rstrip('";')
            return f"model {m.group(1)!r} failed to load: {why[:400]}"
    for line in reversed(text.splitlines()):
        s = line.strip()
        if s.startswith("E") and "]" in s:
            return s.split("]", 1)[1].strip()[:400]
        if "error:" in s.lower():
            return s[:400]
    return None


class TritonServer:
    """One `tritonserver` process serving `repo` on 127.0.0.1 (ports: given, or free ones)."""

    def __init__(
        self,
        repo: str | Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        install: ServerInstall | None = None,
        log_path: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.repo = Path(repo)
        self.install = install or find_server()
        spare = free_ports(3)
        self.http_port = http_port or spare[0]
        self.grpc_port = grpc_port or spare[1]
        self.metrics_port = metrics_port or spare[2]
        #: a log this object made (a temporary file) is removed by `discard_log`; a given one is the caller's
        self.owns_log = not log_path
        if log_path:
            self.log_path = Path(log_path)
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ---- facts -------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def endpoints(self) -> dict[str, str]:
        return {
            "http": f"http://{self.http_url}",
            "grpc": f"grpc://{self.grpc_url}",
            "metrics": f"http://{HOST}:{self.metrics_port}/metrics",
        }

    def command(self) -> list[str]:
        return [
            str(self.install.binary), "--model-repository", str(self.repo.resolve()),
            "--backend-directory", str(backends_dir(self.install)),
            "--http-address", HOST, "--http-port", str(self.http_port),
            "--grpc-address", HOST, "--grpc-port", str(self.grpc_port),
            "--metrics-address", HOST, "--metrics-port", str(self.metrics_port),
            "--allow-metrics", "true", "--allow-gpu-metrics", "false", "--allow-cpu-metrics", "true",
            "--exit-on-error", "true", "--strict-readiness", "true", "--log-verbose", "0", "--exit-timeout-secs", "5",
            *self.extra_args,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = self.install.env()
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ---- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> TritonServer:
        if not self.repo.is_dir():
            self.discard_log()  # the message does not point at it
            raise ServeError(f"{self.repo}: no such model repository")
        for what, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            if port_in_use(port):
                self.discard_log()
                raise ServeError(f"{HOST}:{port} ({what} port) is in use: give another with --{what.lower()}-port")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env(), start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise ServeError(f"{self.install.binary}: cannot start ({exc.strerror or exc})") from None
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                why = failure_from_log(self.log_text()) or f"exit status {rc}"
                raise ServeError(
                    f"tritonserver on {self.repo} stopped before it was ready: {why} (log {self.log_path})"
                )
            if self.ready():
                return
            time.sleep(0.25)
        reason = failure_from_log(self.log_text())
        raise ServeError(
            f"tritonserver on {self.repo} not ready after {timeout:.0f} s"
            + (f": {reason}" if reason else "")
            + f" (log {self.log_path})"
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (Triton unloads its models and exits), SIGKILL after `timeout`; the exit status."""
        proc, self.proc = self.proc, None
        rc = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            rc = proc.returncode
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # stub processes left in the group
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def discard_log(self) -> None:
        """Remove the log if this object made it (after a clean stop: nothing in it is needed; after a
        failure the log is kept, since the error line names it)."""
        if self.owns_log and self._log is None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (what a crash looks like to clients)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stop()

    def __enter__(self) -> TritonServer:
        return self.start() if self.proc is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if et is None or issubclass(et, KeyboardInterrupt):
            self.discard_log()
