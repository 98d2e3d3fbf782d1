"""The row mapping: the one place that knows the keys of a job's record.

A record is the plain-data form of a :class:`~sn40l.scheduler.job.Job` (JSON in the store's
``jobs`` table, msgpack on the wire to the Slurm commands): :func:`job_to_record` and
:func:`job_from_record` map between them, refusing a key the model does not know, by name. What
a client gets is :func:`job_to_wire`: the record without the script and environment plus the
computed fields of :data:`WIRE_EXTRAS`. No I/O, no sqlite3, so the commands can import it.
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import MISSING, fields
from functools import lru_cache

from sn40l.scheduler.job import Alloc, Dep, Job, JobRequest, Signal
from sn40l.scheduler.types import JobState, KillCause

_REQ_FIELDS = {f.name for f in fields(JobRequest)} - {"deps", "dep_mode"}
_JOB_FIELDS = {f.name for f in fields(Job)}
_REQ_TUPLES = ("array", "nodelist", "exclude", "script_args")
# flags the submitting command acts on; the core drops them before it stores a request
_COMMAND_FLAGS = ("parsable", "test_only", "wait", "quiet")
# what the controller adds to a job record it sends to a client (computed, not stored)
WIRE_EXTRAS = ("display_id", "stdout_path", "stderr_path", "dependency_shown", "steps")
_WIRE_HIDDEN = ("script", "env")  # request fields never sent to clients


def _defaults(cls) -> tuple[dict, dict, KeysView[str]]:
    """(plain defaults, default factories, required names) of a dataclass's fields; the names
    are a dict's keys view, ordered and a set (``rec.keys() >= required``)."""
    plain = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    factories = {f.name: f.default_factory for f in fields(cls)
                 if f.default_factory is not MISSING}
    required = dict.fromkeys(f.name for f in fields(cls)
                             if f.default is MISSING and f.default_factory is MISSING).keys()
    return plain, factories, required


_DEFAULTS = {cls: _defaults(cls) for cls in (Job, JobRequest)}
_STATES = {s.value: s for s in JobState}  # a dict lookup, where calling the enum costs 1 us


def _build(cls, rec: dict):
    """``cls(**rec)`` for a record whose keys are already checked, without the frozen
    dataclass's ``__init__`` (a third of the cost of reading a record): the same value,
    defaults and factories filled in, a missing required field refused by name."""
    plain, factories, required = _DEFAULTS[cls]
    if not rec.keys() >= required:
        missing = [name for name in required if name not in rec]
        raise TypeError(f"{cls.__name__} record lacks required field(s) {', '.join(missing)}")
    obj = object.__new__(cls)
    values = obj.__dict__
    values.update(plain)
    values.update(rec)
    for name, factory in factories.items():
        if name not in rec:
            values[name] = factory()
    return obj


@lru_cache(maxsize=4096)
def _dependency(text: str) -> tuple[str, tuple[Dep, ...]]:
    """``parse_dependency`` once per text (the terms are frozen values). Imported here: the
    option parser is not needed to read the records of jobs without dependencies (squeue)."""
    from sn40l.scheduler.request import parse_dependency

    mode, deps = parse_dependency(text)
    return mode, tuple(deps)


def _refuse_unknown(record: dict, known: set[str], what: str) -> None:
    if record.keys() <= known:
        return
    unknown = sorted(set(record) - known)
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")


def request_from_record(record: dict) -> JobRequest:
    """The typed request of a stored (or just submitted) request record; the dependency text is
    parsed here, once. Refuses a key it does not know, by name."""
    rec = dict(record)
    for key in _COMMAND_FLAGS:
        rec.pop(key, None)
    _refuse_unknown(rec, _REQ_FIELDS, "job request")
    for key in _REQ_TUPLES:
        if rec.get(key) is not None:
            rec[key] = tuple(rec[key])
    if rec.get("signal") is not None:
        rec["signal"] = Signal(**rec["signal"])
    if rec.get("dependency"):
        rec["dep_mode"], rec["deps"] = _dependency(rec["dependency"])
    return _build(JobRequest, rec)


def submit_flags(record: dict) -> dict[str, bool]:
    """The submitting command's flags of a request record (``test_only``, ``parsable``, ...)."""
    return {k: bool(record.get(k)) for k in _COMMAND_FLAGS}


def request_to_record(req: JobRequest) -> dict:
    out = dict(req.__dict__)  # a dataclass instance's fields (no slots), copied
    del out["deps"], out["dep_mode"]
    for key in _REQ_TUPLES:
        if out[key] is not None:
            out[key] = list(out[key])
    sig = req.signal
    if sig is not None:
        out["signal"] = {"signum": sig.signum, "seconds": sig.seconds,
                         "batch_only": sig.batch_only, "text": sig.text}
    return out


def job_from_record(record: dict) -> Job:
    """The typed job of a stored record. Refuses a key it does not know, by name."""
    if not record.keys() <= _JOB_FIELDS:
        _refuse_unknown(record, _JOB_FIELDS, f"job {record.get('id')}")
    rec = dict(record)
    state = rec["state"]
    rec["state"] = _STATES.get(state) or JobState(state)  # JobState() refuses an unknown one
    if rec.get("final_state") is not None:
        rec["final_state"] = JobState(rec["final_state"])
    if rec.get("kill_reason") is not None:
        rec["kill_reason"] = KillCause(rec["kill_reason"])
    rec["reason"] = str(rec["reason"])
    rec["req"] = request_from_record(rec["req"])
    if rec.get("alloc") is not None:
        rec["alloc"] = {name: Alloc(a["cpus"], tuple(a["sockets"]), a["mem"])
                        for name, a in rec["alloc"].items()}
    return _build(Job, rec)


def job_to_record(job: Job) -> dict:
    out = dict(job.__dict__)
    out["state"] = job.state.value
    out["final_state"] = job.final_state.value if job.final_state is not None else None
    out["kill_reason"] = job.kill_reason.value if job.kill_reason is not None else None
    out["reason"] = str(job.reason)
    out["req"] = request_to_record(job.req)
    if job.alloc is not None:
        out["alloc"] = {name: {"cpus": a.cpus, "sockets": list(a.sockets), "mem": a.mem}
                        for name, a in job.alloc.items()}
    return out


def _without_defaults(rec: dict, defaults: dict) -> dict:
    """``rec`` without the fields at their default value (the reader's :func:`_build` puts them
    back)."""
    return {k: v for k, v in rec.items()
            if k not in defaults or not (v is defaults[k] or (type(v) is type(defaults[k])
                                                              and v == defaults[k]))}


def job_to_wire(job: Job, full: bool = False, compact: bool = False, **computed) -> dict:
    """The record a client gets: :func:`job_to_record` without the script and environment,
    with ``display_id`` and the ``computed`` fields (named in :data:`WIRE_EXTRAS`); ``full``
    (scontrol show job) adds ``req.env_count``; ``compact`` leaves out the fields at their
    default (squeue and sacct: a third of the bytes to send and to read)."""
    unknown = sorted(set(computed) - set(WIRE_EXTRAS))
    if unknown:
        raise ValueError(f"unknown wire field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(WIRE_EXTRAS)}")
    out = job_to_record(job)
    req = out["req"]
    if compact:  # for the Slurm commands, which read records through the row mapping
        out = _without_defaults(out, _DEFAULTS[Job][0])
        req = out["req"] = _without_defaults(req, _DEFAULTS[JobRequest][0])
    for name in _WIRE_HIDDEN:
        req.pop(name, None)
    if full:
        req["env_count"] = len(job.req.env)
    out["display_id"] = job.display_id
    out.update(computed)
    return out
