"""The controller's persistent state: one SQLite database (WAL) per cluster.

Tables: ``jobs`` (one row per job or array task; the record as JSON plus the columns queries
filter on), ``steps`` (srun steps and the batch step, for sacct), ``nodes`` (admin state that
must survive a restart: DOWN/DRAIN and the reason) and ``meta`` (the next job id). Every change
is committed before the controller answers, so a restart finds what clients were told. Jobs go
in and come out as :class:`~sn40l.scheduler.job.Job` values, through the row mapping of
:mod:`sn40l.scheduler.records`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from dataclasses import dataclass

from sn40l.scheduler.job import Job
from sn40l.scheduler.records import job_from_record, job_to_record
from sn40l.scheduler.types import ACTIVE_STATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    uid INTEGER NOT NULL,
    name TEXT NOT NULL,
    array_job_id INTEGER,
    submit_time REAL NOT NULL,
    end_time REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_end ON jobs(end_time);
CREATE TABLE IF NOT EXISTS steps (
    job_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    reason TEXT,
    since REAL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

@dataclass(frozen=True)
class NodeAdmin:
    """A node's stored admin state: ``down`` or ``drain``, why, and since when."""

    state: str
    reason: str | None
    since: float | None


class Store:
    """Thread-safe access to the scheduler database at ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- ids -------------------------------------------------------------------------------
    def next_job_id(self, count: int = 1) -> int:
        """Reserve ``count`` consecutive job ids; return the first."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='next_job_id'").fetchone()
            first = int(row[0]) if row else 1
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('next_job_id', ?)",
                             (str(first + count),))
            return first

    def peek_job_id(self) -> int:
        """The id the next submission gets (reserved by :meth:`put_jobs` with
        ``next_job_id``; callers hold the controller's lock between the two)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='next_job_id'").fetchone()
            return int(row[0]) if row else 1

    # -- jobs ------------------------------------------------------------------------------
    def put_jobs(self, jobs: list[Job], next_job_id: int | None = None) -> None:
        """Insert or replace jobs in one transaction (advancing the next job id in the same
        transaction, for a submission)."""
        rows = [(j.id, j.state.value, j.uid, j.name, j.array_job_id, j.submit_time, j.end_time,
                 json.dumps(job_to_record(j))) for j in jobs]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if next_job_id is not None:
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) "
                                     "VALUES('next_job_id', ?)", (str(next_job_id),))
                self._db.executemany(
                    "INSERT OR REPLACE INTO jobs(id, state, uid, name, array_job_id, submit_time,"
                    " end_time, data) VALUES(?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_job(self, job: Job) -> None:
        self.put_jobs([job])

    def _jobs(self, sql: str, args=()) -> list[Job]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [job_from_record(json.loads(r[0])) for r in rows]

    def get_job(self, job_id: int) -> Job | None:
        found = self._jobs("SELECT data FROM jobs WHERE id=?", (job_id,))
        return found[0] if found else None

    def get_jobs(self, job_ids: list[int]) -> list[Job]:
        out: list[Job] = []
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i:i + 500]
            out += self._jobs(f"SELECT data FROM jobs WHERE id IN ({','.join('?' * len(chunk))})"
                              " ORDER BY id", chunk)
        return out

    def array_task_ids(self, array_job_id: int) -> list[int]:
        """The job ids of an array's tasks, in order (the tasks themselves: :meth:`get_jobs`)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE array_job_id=? ORDER BY id",
                                    (array_job_id,)).fetchall()
        return [r[0] for r in rows]

    def array_tasks(self, array_job_id: int) -> list[Job]:
        return self._jobs("SELECT data FROM jobs WHERE array_job_id=? ORDER BY id",
                          (array_job_id,))

    def active_jobs(self) -> list[Job]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        return self._jobs(f"SELECT data FROM jobs WHERE state IN ({marks}) ORDER BY id",
                          ACTIVE_STATES)

    def finished_since(self, since: float) -> list[Job]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        return self._jobs(f"SELECT data FROM jobs WHERE state NOT IN ({marks}) AND end_time >= ? "
                          "ORDER BY id", (*ACTIVE_STATES, since))

    def query_jobs(self, ids: list[int] | None = None, uids: list[int] | None = None,
                   start: float | None = None, end: float | None = None,
                   names: list[str] | None = None, skip: set[int] | frozenset = frozenset()
                   ) -> list[Job | int]:
        """Jobs for sacct: by id (or array id), owner, name, and overlap with [start, end].
        A job whose id is in ``skip`` (the caller holds it) comes back as its id, unread."""
        sql = "SELECT id, data FROM jobs WHERE 1=1"
        args: list = []
        if ids:
            marks = ",".join("?" * len(ids))
            sql += f" AND (id IN ({marks}) OR array_job_id IN ({marks}))"
            args += ids + ids
        if uids is not None:
            sql += f" AND uid IN ({','.join('?' * len(uids))})"
            args += uids
        if names:
            sql += f" AND name IN ({','.join('?' * len(names))})"
            args += names
        if start is not None:
            sql += " AND (end_time IS NULL OR end_time >= ?)"
            args.append(start)
        if end is not None:
            sql += " AND submit_time <= ?"
            args.append(end)
        sql += " ORDER BY id"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [r[0] if r[0] in skip else job_from_record(json.loads(r[1])) for r in rows]

    # -- steps -----------------------------------------------------------------------------
    def put_step(self, job_id: int, step: str, data: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO steps(job_id, step, data) VALUES(?,?,?)",
                             (job_id, step, json.dumps(data)))

    def steps(self, job_ids: list[int]) -> dict[int, list[dict]]:
        if not job_ids:
            return {}
        out: dict[int, list[dict]] = {}
        with self._lock:
            for i in range(0, len(job_ids), 500):
                chunk = job_ids[i:i + 500]
                rows = self._db.execute(
                    f"SELECT job_id, data FROM steps WHERE job_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY job_id, rowid", chunk).fetchall()
                for job_id, data in rows:
                    out.setdefault(job_id, []).append(json.loads(data))
        return out

    # -- nodes -----------------------------------------------------------------------------
    def node_states(self) -> dict[str, NodeAdmin]:
        with self._lock:
            rows = self._db.execute("SELECT name, state, reason, since FROM nodes").fetchall()
        return {r[0]: NodeAdmin(r[1], r[2], r[3]) for r in rows}

    def set_node_state(self, name: str, state: str | None, reason: str | None,
                       since: float | None) -> None:
        with self._lock:
            if state is None:
                self._db.execute("DELETE FROM nodes WHERE name=?", (name,))
            else:
                self._db.execute("INSERT OR REPLACE INTO nodes(name, state, reason, since) "
                                 "VALUES(?,?,?,?)", (name, state, reason, since))
