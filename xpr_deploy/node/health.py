"""`/health` (JSON) and `/metrics` (Prometheus text format 0.0.4) on a small stdlib HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "xpr_listen_"


def prometheus(
    counters: dict[tuple[str, str], float], gauges: dict[tuple[str, str], float], label: str = "reason"
) -> str:
    """The text exposition: one `# TYPE` per family, `name{label="value"} number` per sample."""
    lines: list[str] = []
    for kind, samples in (("counter", counters), ("gauge", gauges)):
        families: dict[str, list[tuple[str, float]]] = {}
        for (name, lab), value in sorted(samples.items()):
            families.setdefault(name, []).append((lab, value))
        for name, items in families.items():
            lines.append(f"# TYPE {PREFIX}{name} {kind}")
            for lab, value in items:
                key = name.split("{")[0]
                labels = f'{{{_label_name(key, label)}="{_escape(lab)}"}}' if lab else ""
                lines.append(f"{PREFIX}{name}{labels} {value:g}")
    return "\n".join(lines) + "\n"


def _label_name(name: str, default: str) -> str:
    return {"studies": "state", "results_sent_total": "destination", "send_failures_total": "destination"}.get(
        name, default
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HealthServer:
    """Serves `health()` (a dict; `"status": "ok"` gives 200, anything else 503) and `metrics()` (text)."""

    def __init__(self, bind: tuple[str, int], health: Callable[[], dict[str, Any]], metrics: Callable[[], str]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/health":
                    body = owner.health()
                    self._send(
                        200 if body.get("status") == "ok" else 503, "application/json", json.dumps(body).encode()
                    )
                elif path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", owner.metrics().encode())
                else:
                    self._send(404, "text/plain", b"not found: /health or /metrics\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds: not worth a log line each

        self.health, self.metrics = health, metrics
        self._httpd = ThreadingHTTPServer(bind, Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="xpr-listen-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
