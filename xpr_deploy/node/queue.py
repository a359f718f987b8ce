"""The persistent queue: one SQLite database in the spool (WAL, synchronous=FULL, one connection
behind a lock: one writer), the state of every study and every result already acknowledged.

    received --(no new instance for the quiet period)--> complete --(inference, results written)-->
    predicted --(every result acknowledged by every destination)--> sent
    (a destination that refuses the objects again and again: failed)

A new instance for a study past `received` reopens it (`gen` + 1): its results are made again
and only the objects no destination has acknowledged yet are sent. Each transition is a
conditional UPDATE on (uid, gen), so work done for an older generation is never recorded for a
newer one. `kill -9` at any moment leaves the last committed state: the node resumes from it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECEIVED, COMPLETE, PREDICTED, SENT, FAILED = "received", "complete", "predicted", "sent", "failed"
STATES = (RECEIVED, COMPLETE, PREDICTED, SENT, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    gen INTEGER NOT NULL DEFAULT 1,
    instances INTEGER NOT NULL DEFAULT 0,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    predicted_at REAL,
    done_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    summary TEXT
);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, last_at);
CREATE TABLE IF NOT EXISTS instances (
    sop TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    path TEXT NOT NULL,
    calling TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study);
CREATE TABLE IF NOT EXISTS sent (
    study TEXT NOT NULL,
    dest TEXT NOT NULL,
    sop TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (study, dest, sop)
);
"""


@dataclass(frozen=True)
class Study:
    uid: str
    state: str
    gen: int
    instances: int
    first_at: float
    last_at: float
    predicted_at: float | None
    attempts: int
    next_at: float
    last_error: str | None
    summary: dict[str, Any] | None


class Queue:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- receiving ----------------------------------------------------------------------------
    def has_instance(self, sop: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM instances WHERE sop = ?", (sop,)).fetchone() is not None

    def add_instance(
        self, study: str, sop: str, sop_class: str, path: str, calling: str, now: float | None = None
    ) -> bool:
        """Record a stored instance; False when its SOP Instance UID was already there (nothing changes)."""
        now = time.time() if now is None else now
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO instances (sop, study, sop_class, path, calling, received_at) "
                "VALUES (?,?,?,?,?,?)",
                (sop, study, sop_class, path, calling, now),
            )
            if cur.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO studies (uid, state, first_at, last_at, instances) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(uid) DO UPDATE SET last_at = excluded.last_at, instances = instances + 1, "
                "gen = gen + (state != 'received'), state = 'received', attempts = 0, next_at = 0, last_error = NULL",
                (study, RECEIVED, now, now),
            )
        return True

    # ---- the worker's transitions -------------------------------------------------------------
    def promote_quiet(self, quiet_s: float, now: float | None = None) -> int:
        """received -> complete for every study with no new instance for `quiet_s` seconds."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return db.execute(
                "UPDATE studies SET state = ? WHERE state = ? AND last_at <= ?", (COMPLETE, RECEIVED, now - quiet_s)
            ).rowcount

    def next_in(self, state: str, now: float | None = None) -> Study | None:
        """The oldest study in `state` whose retry time has come."""
        now = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM studies WHERE state = ? AND next_at <= ? ORDER BY last_at LIMIT 1",
                (state, now),
            ).fetchone()
        return _study(row) if row else None

    def get(self, uid: str) -> Study | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM studies WHERE uid = ?", (uid,)).fetchone()
        return _study(row) if row else None

    def instance_paths(self, study: str) -> list[str]:
        with self._lock:
            return [
                r[0] for r in self._db.execute("SELECT path FROM instances WHERE study = ? ORDER BY path", (study,))
            ]

    def mark_predicted(self, study: Study, summary: dict[str, Any], now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE studies SET state = ?, predicted_at = ?, summary = ?, attempts = 0, next_at = 0, "
                    "last_error = NULL WHERE uid = ? AND gen = ? AND state = ?",
                    (PREDICTED, now, json.dumps(summary), study.uid, study.gen, COMPLETE),
                ).rowcount
                == 1
            )

    def defer(self, study: Study, error: str, delay: float, *, fail: bool = False) -> int:
        """A send (or inference) failed: try again after `delay` seconds; `fail`: give up (state failed)."""
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET attempts = attempts + 1, next_at = ?, last_error = ?, "
                "state = CASE WHEN ? THEN 'failed' ELSE state END WHERE uid = ? AND gen = ?",
                (time.time() + delay, error[:500], int(fail), study.uid, study.gen),
            )
            row = db.execute("SELECT attempts FROM studies WHERE uid = ?", (study.uid,)).fetchone()
        return int(row[0]) if row else 0

    def sent_sops(self, study: str, dest: str) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT sop FROM sent WHERE study = ? AND dest = ?", (study, dest))
            return {r[0] for r in rows}

    def record_sent(self, study: str, dest: str, sop: str) -> None:
        """`dest` acknowledged `sop`: it is never sent there again."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO sent (study, dest, sop, at) VALUES (?,?,?,?)", (study, dest, sop, time.time())
            )

    def mark_sent(self, study: Study, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._tx() as db:
            return (
                db.execute(
                    "UPDATE studies SET state = ?, done_at = ?, last_error = NULL "
                    "WHERE uid = ? AND gen = ? AND state = ?",
                    (SENT, now, study.uid, study.gen, PREDICTED),
                ).rowcount
                == 1
            )

    def expired(self, before: float) -> list[str]:
        """Studies sent (or failed) before `before`: their files may go."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uid FROM studies WHERE state IN (?, ?) AND COALESCE(done_at, next_at) < ?",
                (SENT, FAILED, before),
            )
            return [r[0] for r in rows]

    def forget(self, study: str) -> None:
        with self._tx() as db:
            for table, col in (("studies", "uid"), ("instances", "study"), ("sent", "study")):
                db.execute(f"DELETE FROM {table} WHERE {col} = ?", (study,))

    def counts(self) -> dict[str, int]:
        with self._lock:
            got = dict(self._db.execute("SELECT state, COUNT(*) FROM studies GROUP BY state").fetchall())
        return {s: int(got.get(s, 0)) for s in STATES}


_COLUMNS = "uid, state, gen, instances, first_at, last_at, predicted_at, attempts, next_at, last_error, summary"


def _study(row: tuple[Any, ...]) -> Study:
    uid, state, gen, instances, first_at, last_at, predicted_at, attempts, next_at, last_error, summary = row
    return Study(uid, state, gen, instances, first_at, last_at, predicted_at, attempts, next_at, last_error,
                 json.loads(summary) if summary else None)  # fmt: skip
