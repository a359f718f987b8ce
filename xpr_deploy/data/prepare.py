"""`xpr data prepare` at dataset scale: fill the PreparedCache with a pool of worker processes.

A hand-made pool rather than `ProcessPoolExecutor`: the parent gives each worker one file at a
time, so when a worker dies (a decoder crash, the OOM killer) it knows which file that was,
reports it as failed and starts another worker, where the executor would break as a whole.
Workers come from a forkserver (a fresh process that imports this module once, then forks one
worker per request: no fork of a process whose torch/OpenMP threads may have started, and no
import per worker, which costs seconds on a busy machine). They run one BLAS/OpenMP thread each,
ignore SIGINT (the parent decides) and turn SIGTERM into an exception, so the entry being written
is removed, not left behind. Entries are renamed into place, so a killed run resumes: the next
run reuses every finished entry. The arrays do not depend on `workers`: every file goes through
`PreparedCache.ensure`, in this process when workers == 1.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ..errors import ConfigError, XprError
from ..io import OutputError, clean_stale
from .cache import PreparedCache
from .dicom import PreprocessSettings, check_file
from .errors import DataError, DicomError

#: thread-pool sizes read by OpenMP, OpenBLAS, MKL, ... when a worker loads them: one each
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
#: a run gives up when this many workers in a row die without finishing any file
MAX_CRASHES_IN_A_ROW = 4


class PrepareError(DataError):
    """The pool itself cannot run (its workers die before finishing any file)."""

    exit_code = 1


class PrepareInterrupted(DataError):
    """SIGINT or SIGTERM stopped the run; finished entries stay and the next run reuses them."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class PrepareReport:
    """What a run did: `prepared` now, `reused` from an earlier run, `rejected` (unusable files,
    with the reader's one-line reason) and `failed` (the worker died or hit an unexpected error;
    running again may succeed)."""

    cache: str
    settings: dict[str, Any]
    settings_hash: str
    workers: int
    total: int = 0
    prepared: int = 0
    reused: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: CPU time the workers spent on the files (divided by `seconds`: the cores the run really got)
    cpu_seconds: float = 0.0
    #: set by `prepare_dataset`: pairs indexed, pairs with both images in the cache, index rejects
    pairs: int | None = None
    pairs_ready: int | None = None
    index_rejects: list[dict[str, str]] = field(default_factory=list)
    index_seconds: float | None = None

    @property
    def done(self) -> int:
        """Files answered so far, whatever the answer."""
        return self.prepared + self.reused + len(self.rejected) + len(self.failed)

    @property
    def images_per_s(self) -> float:
        """Prepared images per second of pool time (reused entries cost almost nothing)."""
        return self.prepared / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache": self.cache,
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            "workers": self.workers,
            "pairs": self.pairs,
            "pairs_ready": self.pairs_ready,
            "total": self.total,
            "prepared": self.prepared,
            "reused": self.reused,
            "rejected": self.rejected,
            "failed": self.failed,
            "index_rejects": self.index_rejects,
            "index_seconds": None if self.index_seconds is None else round(self.index_seconds, 3),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "images_per_s": round(self.images_per_s, 3),
        }


@dataclass(frozen=True)
class PrepareProgress:
    """One progress event: counts so far and which file each worker (by pid) is on."""

    done: int
    total: int
    prepared: int
    reused: int
    rejected: int
    failed: int
    seconds: float
    in_flight: dict[int, str]


Progress = Callable[[PrepareProgress], None]
#: (file index, status, reason, CPU seconds the worker spent on it)
Record = Callable[[int, str, str, float], None]


def default_workers() -> int:
    """The cores this process may run on (its affinity mask, not the machine's core count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def prepare_one(cache: PreparedCache, path: Path, settings: PreprocessSettings) -> tuple[str, str]:
    """(status, reason) of one file; every failure becomes one line, nothing escapes."""
    try:
        check_file(path)  # before the cache hashes it: a FIFO would block, /dev/zero never end
        return ("prepared" if cache.ensure(path, settings) else "reused"), ""
    except OutputError as exc:  # the cache, not the file: the whole run stops (see prepare_files)
        return "unwritable", str(exc)
    except DicomError as exc:
        return "rejected", str(exc)
    except XprError as exc:
        return "failed", str(exc)
    except MemoryError:
        return "failed", f"{path}: out of memory"
    except Exception as exc:  # a reader bug must not cost the other files
        line = str(exc).splitlines()[0][:160] if str(exc) else ""
        return "failed", f"{path}: unexpected {type(exc).__name__}: {line}"


# --------------------------------------------------------------------------- worker process


def _sigterm_to_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _worker_main(conn: Connection, root: str, settings: PreprocessSettings) -> None:
    """Prepare the files the parent sends, one at a time, until None or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    with contextlib.suppress(ImportError):  # in case numpy's BLAS was loaded before THREAD_ENV was set
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    if "torch" in sys.modules:  # only if something imported it; preprocessing does not need it
        sys.modules["torch"].set_num_threads(1)
    cache = PreparedCache(root)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, path = task
        cpu = time.process_time()
        what, reason = prepare_one(cache, Path(path), settings)
        conn.send((index, what, reason, time.process_time() - cpu))


@dataclass
class _Worker:
    proc: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    task: tuple[int, str] | None = None


@contextlib.contextmanager
def _child_environment() -> Iterator[None]:
    """Children (and the forkserver, started by the first of them) inherit one thread per pool and an
    ignored SIGINT (the parent handles Ctrl-C)."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: "1" for k in THREAD_ENV})
    main = threading.current_thread() is threading.main_thread()
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, old_int)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Stop(BaseException):
    """Raised in the parent by its SIGTERM handler during a run."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Stop(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Pool:
    """Up to `n` workers, one file each at a time; a dead worker's file is reported failed."""

    def __init__(self, n: int, root: Path, settings: PreprocessSettings) -> None:
        self.n, self.root, self.settings = n, str(root), settings
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload([__name__])
        self.workers: list[_Worker] = []
        self.crashes_in_a_row = 0

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        with _child_environment():
            proc = self.ctx.Process(
                target=_worker_main, args=(child, self.root, self.settings), name="xpr-prepare", daemon=True
            )
            proc.start()
        child.close()
        self.workers.append(_Worker(proc, parent))

    def run(self, paths: Sequence[Path], record: Record, tick: Callable[[], None]) -> None:
        pending = deque((i, str(p)) for i, p in enumerate(paths))
        while pending or any(w.task for w in self.workers):
            while len(self.workers) < min(self.n, len(pending) + sum(1 for w in self.workers if w.task)):
                self.start()
            for w in self.workers:
                if w.task is None and pending:
                    w.task = pending.popleft()
                    w.conn.send(w.task)
            tick()
            ready = set(wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout=1.0))
            for w in list(self.workers):
                if w.conn in ready or w.conn.poll():
                    try:
                        index, status, reason, cpu = w.conn.recv()
                    except (EOFError, OSError):
                        self._died(w, record)
                        continue
                    w.task = None
                    self.crashes_in_a_row = 0
                    record(index, status, reason, cpu)
                elif w.proc.sentinel in ready:
                    self._died(w, record)

    def _died(self, w: _Worker, record: Record) -> None:
        w.proc.join(5)
        w.conn.close()
        self.workers.remove(w)
        how = _describe_exit(w.proc.exitcode)
        self.crashes_in_a_row += 1
        if w.task is not None:
            index, path = w.task
            record(index, "failed", f"{path}: the worker process died while preparing it ({how})", 0.0)
        if self.crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
            raise PrepareError(f"{self.root}: {self.crashes_in_a_row} worker processes in a row died ({how})")

    def in_flight(self) -> dict[int, str]:
        return {w.proc.pid: w.task[1] for w in self.workers if w.task is not None and w.proc.pid is not None}

    def close(self, graceful: bool) -> None:
        """Graceful: ask idle workers to exit. Else SIGTERM (each removes its half-written entry), then SIGKILL,
        then sweep the folders they were writing (a worker killed outright cannot clean up)."""
        busy = [w.task[1] for w in self.workers if w.task is not None]
        for w in self.workers:
            if graceful:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            elif w.proc.is_alive():
                w.proc.terminate()
        deadline = time.monotonic() + 10.0
        for w in self.workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            w.conn.close()
        self.workers = []
        if not graceful:
            cache = PreparedCache(self.root)
            for path in busy:
                with contextlib.suppress(XprError, OSError):
                    clean_stale(cache.entry(path, self.settings).parent, again=True)


class _Inline:
    """workers == 1: the same `prepare_one`, in this process."""

    def __init__(self, cache: PreparedCache, settings: PreprocessSettings) -> None:
        self.cache, self.settings = cache, settings
        self.current: str | None = None

    def run(self, paths: Sequence[Path], record: Record, tick: Callable[[], None]) -> None:
        for i, p in enumerate(paths):
            self.current = str(p)
            tick()
            cpu = time.process_time()
            what, reason = prepare_one(self.cache, p, self.settings)
            record(i, what, reason, time.process_time() - cpu)
        self.current = None

    def in_flight(self) -> dict[int, str]:
        return {os.getpid(): self.current} if self.current else {}

    def close(self, graceful: bool) -> None:
        self.current = None


# --------------------------------------------------------------------------- entry points


def prepare_files(
    paths: Sequence[str | Path],
    cache: str | Path,
    settings: PreprocessSettings,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
) -> PrepareReport:
    """Fill the cache for `paths` with `workers` processes (default: the cores available).

    Bad files cost only themselves (`rejected`, with the reason); a dead worker costs only its
    file (`failed`). A cache entry that cannot be written (disk full, quota, read-only, no
    permission) stops the run with OutputError: every other file would fail the same way.
    SIGINT/SIGTERM stop the workers, leave the finished entries and raise PrepareInterrupted.
    """
    n = default_workers() if workers is None else workers
    if n < 1:
        raise ConfigError(f"--workers {n}: need at least 1")
    files = list(dict.fromkeys(Path(p) for p in paths))
    pc = PreparedCache(cache)
    pc.write_settings(settings)
    n = max(1, min(n, len(files)))
    rep = PrepareReport(str(cache), settings.to_dict(), settings.hash(), workers=n, total=len(files))
    runner: _Pool | _Inline = _Pool(n, pc.root, settings) if n > 1 else _Inline(pc, settings)
    t0 = time.perf_counter()

    def record(index: int, what: str, reason: str, cpu: float) -> None:
        if what == "unwritable":
            raise OutputError(
                f"{reason}; stopped after {rep.done} of {len(files)} files (run the same command again to resume)"
            )
        rep.cpu_seconds += cpu
        if what in ("prepared", "reused"):
            setattr(rep, what, getattr(rep, what) + 1)
        else:
            getattr(rep, what).append({"path": str(files[index]), "reason": reason})

    def tick() -> None:
        rep.seconds = time.perf_counter() - t0
        if progress is not None:
            bad = (len(rep.rejected), len(rep.failed))
            ev = PrepareProgress(rep.done, rep.total, rep.prepared, rep.reused, *bad, rep.seconds, runner.in_flight())
            progress(ev)

    graceful = False
    try:
        with _sigterm_raises():
            runner.run(files, record, tick)
            graceful = True
    except (KeyboardInterrupt, _Stop) as exc:
        signum = exc.signum if isinstance(exc, _Stop) else signal.SIGINT
        raise PrepareInterrupted(
            f"{cache}: interrupted by {signal.Signals(signum).name} after {rep.done}/{len(files)} files "
            f"({rep.prepared} prepared, {rep.reused} reused); run the same command again to resume",
            int(signum),
        ) from None
    finally:
        runner.close(graceful=graceful)
    tick()
    order = {str(p): i for i, p in enumerate(files)}
    rep.rejected.sort(key=lambda r: order[r["path"]])
    rep.failed.sort(key=lambda r: order[r["path"]])
    return rep
