"""The node's loop: the SCP fills the spool and the queue; this loop moves each study along
received -> complete -> predicted -> sent, one step at a time, and serves /health and /metrics.

Inference runs in the loop's thread (the main thread under `xpr listen`, so Ctrl-C and SIGTERM stop
it between two steps or inside one; nothing half-written survives, see `io.atomic_dir`). A study's
results are written into one folder swap, then `predicted` is committed; a crash in between
makes them again, the same objects (derived UIDs).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import XprError
from ..io import atomic_dir, folder_lock, uid_name
from ..runners.triton_client import TritonPeerError
from .health import HealthServer, prometheus
from .peer import Caller, Peer
from .queue import COMPLETE, PREDICTED, Queue, Study
from .scp import Counters, StorageSCP
from .sender import Destination, DimseDestination, SendError, SendTls, StowDestination, backoff, read_result
from .spool import Spool

log = logging.getLogger("xpr.listen")

MIB = 1 << 20


class NodeError(XprError):
    """The node cannot start: bad options, port in use, spool in use."""


@dataclass(frozen=True)
class Tls:
    """Server certificate and key; `ca`: callers must present a certificate it signed."""

    cert: Path
    key: Path
    ca: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
            if self.ca is not None:
                ctx.load_verify_locations(str(self.ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise NodeError(f"--tls-cert {self.cert} / --tls-key {self.key}: {exc}") from None
        return ctx


def incoming_tls(cert: Path | None, key: Path | None, ca: Path | None) -> Tls | None:
    """`xpr listen --tls-cert C --tls-key K [--tls-ca CA]`: the certificate and its key go together,
    a CA only with them (it asks callers for a certificate); None: plain DICOM."""
    if (cert is None) != (key is None) or (ca is not None and cert is None):
        raise NodeError("TLS needs --tls-cert and --tls-key (and --tls-ca only with them)")
    return Tls(cert, key, ca) if cert is not None and key is not None else None


def outgoing_tls(enabled: bool, ca: Path | None, cert: Path | None, key: Path | None) -> SendTls | None:
    """`xpr listen --send-tls [--send-tls-ca CA] [--send-tls-cert C --send-tls-key K]`: a CA or a
    client certificate implies TLS; the certificate and its key go together. None: plain C-STORE."""
    if (cert is None) != (key is None):
        raise NodeError("--send-tls-cert and --send-tls-key go together")
    return SendTls(ca, cert, key) if enabled or any(p is not None for p in (ca, cert)) else None


@dataclass(frozen=True)
class NodeOptions:
    bundle: Path
    spool: Path
    ae_title: str = "XPR"
    bind: str = "0.0.0.0"
    port: int = 11112
    send_to: Peer | None = None
    stow: str | None = None
    allow: tuple[Caller, ...] = ()  # empty: the --send-to peer only
    quiet_seconds: float = 10.0
    http_port: int | None = None
    others: str = "ignore"  # ignore | refuse: storage classes other than mammography / tomosynthesis
    max_instance_bytes: int = 512 * MIB
    min_free_bytes: int = 256 * MIB
    backend: str | None = None
    retry_base: float = 2.0
    retry_cap: float = 300.0
    max_attempts: int = 5  # refusals (not outages) before a study is marked failed
    retain_hours: float = 24.0
    tls: Tls | None = None
    poll_seconds: float = 0.2
    prefer: str = "acquired"  # acquired | synthesized 2D when a study holds both (data.selection)
    strict: bool = False  # every selection choice rejects the breast
    sr: str = "tid1500"  # dicom_out.SR_KINDS
    seg: str = "binary"  # dicom_out.SEG_KINDS
    triton: str | None = None  # inference on this Triton server (xpr triton's repository), not in-process
    triton_model: str | None = None  # its model name there (None: the bundle's, found on the server)
    send_tls: SendTls | None = None  # TLS on the C-STORE association to --send-to
    stow_ca: Path | None = None  # CA file that verifies the --stow server's https certificate

    def callers(self) -> tuple[Caller, ...]:
        if self.allow:
            return self.allow
        if self.send_to is not None:
            return (Caller(self.send_to.ae_title, self.send_to.host),)
        return ()

    def check(self) -> None:
        if self.send_to is None and not self.stow:
            raise NodeError("give --send-to AE@HOST:PORT and/or --stow URL: where the results go")
        if not self.callers():
            raise NodeError("no caller may send: give --allow AE[@HOST] (by default only the --send-to peer may)")
        if self.others not in ("refuse", "ignore"):
            raise NodeError(f"--other-classes {self.others!r}: refuse or ignore")
        if self.quiet_seconds < 0 or self.retry_base <= 0 or self.retry_cap <= 0:
            raise NodeError("--quiet-seconds must be >= 0 and the retry backoff positive")
        from ..data.selection import PREFER
        from ..dicom_out import SEG_KINDS, SR_KINDS

        if self.sr not in SR_KINDS:
            raise NodeError(f"--sr {self.sr!r}: choose one of {', '.join(SR_KINDS)}")
        if self.seg not in SEG_KINDS:
            raise NodeError(f"--seg {self.seg!r}: choose one of {', '.join(SEG_KINDS)}")
        if self.prefer not in PREFER:
            raise NodeError(f"--prefer {self.prefer!r}: choose one of {', '.join(PREFER)}")
        if self.triton is not None and self.backend not in (None, "triton"):
            raise NodeError(f"--triton runs the model on the server: it does not go with --backend {self.backend}")
        if self.send_tls is not None and self.send_to is None:
            raise NodeError("--send-tls-* options secure the --send-to association: give --send-to")
        if self.stow_ca is not None and not (self.stow or "").startswith("https://"):
            raise NodeError("--stow-ca verifies an https:// --stow server: give --stow https://...")


@dataclass
class _Stats:
    latency_sum: float = 0.0
    latency_count: int = 0
    infer_sum: float = 0.0
    started: float = field(default_factory=time.time)


class Node:
    """`Node(options).run()`: listen until `stop` is set (or Ctrl-C); `ready(node)` once listening."""

    def __init__(self, options: NodeOptions) -> None:
        options.check()
        self.opts = options
        self.counters = Counters()
        self.stats = _Stats()
        self.destinations: list[Destination] = []
        if options.send_to is not None:
            self.destinations.append(DimseDestination(options.ae_title, options.send_to, tls=options.send_tls))
        if options.stow:
            self.destinations.append(StowDestination(options.stow, ca=options.stow_ca))
        self.scp: StorageSCP | None = None
        self.http: HealthServer | None = None
        self.queue: Queue | None = None
        self.spool: Spool | None = None
        self._last_purge = 0.0
        self._wake = threading.Event()
        self.pipeline: Any = None  # the StudyPipeline, open while run() runs

    # ---- running ------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, ready: Callable[[Node], None] | None = None) -> None:
        from ..pipeline import StudyPipeline

        stop = stop or threading.Event()
        o = self.opts
        # the model is opened once (a bundle that fails verification is refused before listening) and
        # stays open across studies; each study's DICOM results go to its own folder swap (_predict)
        with (
            folder_lock(o.spool, "another xpr listen"),
            StudyPipeline(
                o.bundle,
                o.backend,
                dicom_out=o.spool / "results",
                prefer=o.prefer,
                strict=o.strict,
                sr=o.sr,
                seg=o.seg,
                triton=o.triton,
                triton_model=o.triton_model,
            ) as self.pipeline,  # fmt: skip
        ):
            self.model_digest = self.pipeline.source.digest
            self.spool = Spool(o.spool, max_instance_bytes=o.max_instance_bytes, min_free_bytes=o.min_free_bytes)
            self.queue = Queue(self.spool.root / "queue.sqlite")
            ssl_context = o.tls.context() if o.tls is not None else None
            self.scp = StorageSCP(
                o.ae_title,
                (o.bind, o.port),
                o.callers(),
                self.spool,
                self.queue,
                self.counters,
                others=o.others,
                ssl_context=ssl_context,
                on_instance=lambda _s: self._wake.set(),
            )
            try:
                try:
                    self.scp.start()
                except OSError as exc:
                    raise NodeError(f"cannot listen on {o.bind}:{o.port}: {exc.strerror or exc}") from None
                if o.http_port is not None:
                    try:
                        self.http = HealthServer((o.bind, o.http_port), self.health, self.metrics)
                    except OSError as exc:
                        raise NodeError(f"cannot serve HTTP on {o.bind}:{o.http_port}: {exc.strerror or exc}") from None
                    self.http.start()
                log.info(
                    "listening as %s on %s:%d (callers: %s; results to %s; spool %s; quiet period %g s)%s",
                    o.ae_title,
                    o.bind,
                    self.scp.port,
                    ", ".join(map(str, o.callers())),
                    ", ".join(d.name for d in self.destinations),
                    self.spool.root,
                    o.quiet_seconds,
                    f"; http://{o.bind}:{self.http.port}/metrics" if self.http else "",
                )
                if ready is not None:
                    ready(self)
                while not stop.is_set():
                    if not self.step():
                        self._wake.wait(o.poll_seconds)
                        self._wake.clear()
            finally:
                if self.http is not None:
                    self.http.stop()
                self.scp.stop()
                self.queue.close()

    def step(self) -> bool:
        """One unit of work (promote quiet studies, predict one, send one, purge); False when idle."""
        assert self.queue is not None
        now = time.time()
        self.queue.promote_quiet(self.opts.quiet_seconds, now)
        if now - self._last_purge > 60:
            self._purge(now)
        study = self.queue.next_in(PREDICTED, now)  # finish a study before starting the next one
        if study is not None:
            self._send(study)
            return True
        study = self.queue.next_in(COMPLETE, now)
        if study is not None:
            self._predict(study)
            return True
        return False

    # ---- inference ----------------------------------------------------------------------------
    def _infer_study(self, folder: Path, out: Path, name: str) -> Any:
        """THE call into the study pipeline: every instance of one study in, its DICOM results out."""
        assert self.pipeline is not None
        return self.pipeline.run_study(folder, name, dicom_out=out)

    def _predict(self, study: Study) -> None:
        assert self.spool is not None and self.queue is not None
        t0 = time.monotonic()
        try:
            with atomic_dir(self.spool.results_dir(study.uid)) as tmp:
                report = self._infer_study(self.spool.study_dir(study.uid), tmp, uid_name(study.uid))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one study's failure (its results cannot be written, ...) never stops the node
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, XprError) else str(exc)
            # an inference server that is down is an outage, like a destination's: retried, never given up
            outage = isinstance(exc, TritonPeerError)
            n = self.queue.defer(
                study,
                reason,
                backoff(study.attempts + 1, self.opts.retry_base, self.opts.retry_cap),
                fail=not outage and study.attempts + 1 >= self.opts.max_attempts,
            )
            log.warning("inference failed for study %s (attempt %d): %s", study.uid, n, reason)
            self.counters.add("inference_failures_total")
            return
        seconds = time.monotonic() - t0
        summary = {
            "breasts": [{"laterality": b.laterality, "prob": b.prob, "decision": b.decision} for b in report.breasts],
            "rejects": [f"{Path(r.get('path', '?')).name}: {r.get('reason', '?')}" for r in report.rejects],
            "not_used": [f"{n.get('sop_uid', '?')}: {n.get('reason', '?')}" for n in report.not_used],
            "objects": len(report.dicom),
            "infer_seconds": round(seconds, 3),
        }
        _fault("listen:predicted")
        if self.queue.mark_predicted(study, summary):
            self.counters.add("studies_predicted_total")
            self.stats.infer_sum += seconds

    # ---- sending ------------------------------------------------------------------------------
    def _send(self, study: Study) -> None:
        assert self.spool is not None and self.queue is not None
        files = [read_result(p) for p in self.spool.result_files(study.uid)]
        errors: list[SendError] = []
        status: list[str] = []
        for dest in self.destinations:
            done = self.queue.sent_sops(study.uid, dest.name)
            todo = [f for f in files if f.sop_instance not in done]
            acked: list[str] = []

            def on_ack(sop: str, dest: Destination = dest, acked: list[str] = acked) -> None:
                _fault("listen:on-wire")  # stored by the peer, not yet recorded: the one re-send a crash can cause
                self.queue.record_sent(study.uid, dest.name, sop)  # type: ignore[union-attr]
                acked.append(sop)
                _fault("listen:acked")
                self.counters.add("results_sent_total", dest.name)

            try:
                dest.send(todo, on_ack)
                status.append(f"{dest.name} stored {len(acked)}" + (f" ({len(done)} earlier)" if done else ""))
            except SendError as exc:
                errors.append(exc)
                self.counters.add("send_failures_total", dest.name)
        if errors:
            attempt = study.attempts + 1
            permanent = all(e.permanent for e in errors)
            give_up = permanent and attempt >= self.opts.max_attempts
            delay = backoff(attempt, self.opts.retry_base, self.opts.retry_cap)
            self.queue.defer(study, "; ".join(map(str, errors)), delay, fail=give_up)
            log.warning(
                "results of study %s not stored (attempt %d): %s; %s",
                study.uid,
                attempt,
                "; ".join(map(str, errors)),
                "giving up" if give_up else f"retrying in {delay:g} s",
            )
            return
        if self.queue.mark_sent(study):
            latency = time.time() - study.last_at
            self.stats.latency_sum += latency
            self.stats.latency_count += 1
            self.counters.add("studies_sent_total")
            log.info("%s", study_line(study, latency, status))

    def _purge(self, now: float) -> None:
        assert self.spool is not None and self.queue is not None
        self._last_purge = now
        for uid in self.queue.expired(now - self.opts.retain_hours * 3600):
            self.spool.remove_study(uid)
            self.queue.forget(uid)

    # ---- observability ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        q = self.queue.counts() if self.queue is not None else {}
        room = self.spool.has_room() if self.spool is not None else False
        return {
            "status": "ok" if room else "disk_full",
            "ae_title": self.opts.ae_title,
            "port": self.scp.port if self.scp is not None else None,
            "studies": q,
            "spool_free_bytes": self.spool.free_bytes() if self.spool is not None else None,
            "destinations": [d.name for d in self.destinations],
            "model_sha256": getattr(self, "model_digest", None),
            "uptime_seconds": round(time.time() - self.stats.started, 1),
        }

    def metrics(self) -> str:
        counters: dict[tuple[str, str], float] = {k: float(v) for k, v in self.counters.snapshot().items()}
        counters["study_latency_seconds_sum", ""] = self.stats.latency_sum
        counters["study_latency_seconds_count", ""] = float(self.stats.latency_count)
        counters["inference_seconds_sum", ""] = self.stats.infer_sum
        gauges: dict[tuple[str, str], float] = {}
        if self.queue is not None:
            for state, n in self.queue.counts().items():
                gauges["studies", state] = float(n)
        if self.spool is not None:
            gauges["spool_free_bytes", ""] = float(self.spool.free_bytes())
        gauges["up", ""] = 1.0
        return prometheus(counters, gauges)


def study_line(study: Study, latency: float, status: list[str]) -> str:
    """The one log line per study: UID, each breast's probability and decision, seconds, destinations."""
    s = study.summary or {}
    breasts = (
        ", ".join(f"{b['laterality']} {b['prob']:.3f} {b['decision']}" for b in s.get("breasts", []))
        or "no breast answered"
    )
    rejects = s.get("rejects", [])
    not_used = f"; not used: {'; '.join(rejects)}" if rejects else ""
    if s.get("not_used"):
        not_used += f"; {len(s['not_used'])} images left out by the selection ({'; '.join(s['not_used'])})"
    return (
        f"study {study.uid}: {breasts}{not_used}; {s.get('infer_seconds', 0):.1f} s inference, "
        f"{latency:.1f} s after the last instance; {', '.join(status)}"
    )


def _fault(point: str) -> None:
    from ..io import _fault as fault

    fault(point)
