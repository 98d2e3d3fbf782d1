"""The controller's persistent state: one SQLite database (WAL) per cluster.

Tables: ``jobs`` (one row per job or array task; the record as JSON plus the columns queries
filter on), ``steps`` (srun steps and the batch step, for sacct), ``nodes`` (admin state that
must survive a restart: DOWN/DRAIN and the reason) and ``meta`` (the next job id). Every change
is committed before the controller answers, so a restart finds what clients were told.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from dataclasses import fields

from sn40l.scheduler.job import Alloc, Job, JobRequest, Signal
from sn40l.scheduler.request import parse_dependency
from sn40l.scheduler.types import ACTIVE_STATES, JobState

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

# -- the row mapping: the one place that knows a record's keys ---------------------------------
_REQ_FIELDS = {f.name for f in fields(JobRequest)} - {"deps", "dep_mode"}
_JOB_FIELDS = {f.name for f in fields(Job)}
_REQ_TUPLES = ("array", "nodelist", "exclude", "script_args")
# flags the submitting command acts on; the core drops them before it stores a request
_COMMAND_FLAGS = ("parsable", "test_only", "wait", "quiet")


def _refuse_unknown(record: dict, known: set[str], what: str) -> None:
    unknown = sorted(set(record) - known)
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")


def request_from_record(record: dict) -> JobRequest:
    """The typed request of a stored (or just submitted) request record; the dependency text is
    parsed here, once. Refuses a key it does not know, by name."""
    rec = {k: v for k, v in record.items() if k not in _COMMAND_FLAGS}
    _refuse_unknown(rec, _REQ_FIELDS, "job request")
    for key in _REQ_TUPLES:
        if rec.get(key) is not None:
            rec[key] = tuple(rec[key])
    if rec.get("signal") is not None:
        rec["signal"] = Signal(**rec["signal"])
    if rec.get("dependency"):
        rec["dep_mode"], deps = parse_dependency(rec["dependency"])
        rec["deps"] = tuple(deps)
    return JobRequest(**rec)


def request_to_record(req: JobRequest) -> dict:
    out = {}
    for f in fields(JobRequest):
        if f.name in ("deps", "dep_mode"):
            continue
        value = getattr(req, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Signal):
            value = {"signum": value.signum, "seconds": value.seconds,
                     "batch_only": value.batch_only, "text": value.text}
        out[f.name] = value
    return out


def job_from_record(record: dict) -> Job:
    """The typed job of a stored record. Refuses a key it does not know, by name."""
    _refuse_unknown(record, _JOB_FIELDS, f"job {record.get('id')}")
    rec = dict(record)
    rec["state"] = JobState(rec["state"])
    if rec.get("final_state") is not None:
        rec["final_state"] = JobState(rec["final_state"])
    rec["reason"] = str(rec["reason"])
    rec["req"] = request_from_record(rec["req"])
    if rec.get("alloc") is not None:
        rec["alloc"] = {name: Alloc(a["cpus"], tuple(a["sockets"]), a["mem"])
                        for name, a in rec["alloc"].items()}
    return Job(**rec)


def job_to_record(job: Job) -> dict:
    out = {f.name: getattr(job, f.name) for f in fields(Job)}
    out["state"] = job.state.value
    out["final_state"] = job.final_state.value if job.final_state is not None else None
    out["req"] = request_to_record(job.req)
    if job.alloc is not None:
        out["alloc"] = {name: {"cpus": a.cpus, "sockets": list(a.sockets), "mem": a.mem}
                        for name, a in job.alloc.items()}
    return out


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
    def put_jobs(self, jobs: list[dict], next_job_id: int | None = None) -> None:
        """Insert or replace job records in one transaction (advancing the next job id in
        the same transaction, for a submission)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                if next_job_id is not None:
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) "
                                     "VALUES('next_job_id', ?)", (str(next_job_id),))
                self._db.executemany(
                    "INSERT OR REPLACE INTO jobs(id, state, uid, name, array_job_id, submit_time,"
                    " end_time, data) VALUES(?,?,?,?,?,?,?,?)",
                    [(j["id"], j["state"], j["uid"], j["name"], j.get("array_job_id"),
                      j["submit_time"], j.get("end_time"), json.dumps(j)) for j in jobs])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_job(self, job: dict) -> None:
        self.put_jobs([job])

    def get_job(self, job_id: int) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM jobs WHERE id=?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def array_tasks(self, array_job_id: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM jobs WHERE array_job_id=? ORDER BY id",
                                    (array_job_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def active_jobs(self) -> list[dict]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            rows = self._db.execute(f"SELECT data FROM jobs WHERE state IN ({marks}) ORDER BY id",
                                    ACTIVE_STATES).fetchall()
        return [json.loads(r[0]) for r in rows]

    def finished_since(self, since: float) -> list[dict]:
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT data FROM jobs WHERE state NOT IN ({marks}) AND end_time >= ? "
                "ORDER BY id", (*ACTIVE_STATES, since)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def query_jobs(self, ids: list[int] | None = None, uids: list[int] | None = None,
                   start: float | None = None, end: float | None = None,
                   names: list[str] | None = None) -> list[dict]:
        """Jobs for sacct: by id (or array id), owner, name, and overlap with [start, end]."""
        sql = "SELECT data FROM jobs WHERE 1=1"
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
        return [json.loads(r[0]) for r in rows]

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
    def node_states(self) -> dict[str, dict]:
        with self._lock:
            rows = self._db.execute("SELECT name, state, reason, since FROM nodes").fetchall()
        return {r[0]: {"state": r[1], "reason": r[2], "since": r[3]} for r in rows}

    def set_node_state(self, name: str, state: str | None, reason: str | None,
                       since: float | None) -> None:
        with self._lock:
            if state is None:
                self._db.execute("DELETE FROM nodes WHERE name=?", (name,))
            else:
                self._db.execute("INSERT OR REPLACE INTO nodes(name, state, reason, since) "
                                 "VALUES(?,?,?,?)", (name, state, reason, since))
