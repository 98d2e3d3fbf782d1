"""The controller's replies as the Slurm commands read them: typed, frozen values.

A job on the wire is its record (:func:`~sn40l.scheduler.records.job_to_wire`: no script, no
environment) plus what the controller computed for display (``display_id``; for ``show_job``
the expanded ``stdout_path``/``stderr_path``, the ``dependency_shown`` text and
``req.env_count``; for ``sacct`` the job's ``steps``). :func:`shown_from_wire` parses it once
into a :class:`Shown`: the typed :class:`~sn40l.scheduler.job.Job`, made by the row mapping of
:mod:`sn40l.scheduler.records`, plus those extras. So the views read attributes, and a field the
model does not know is refused by name (:class:`ReplyError`). Steps get a small frozen type of
their own; nodes and partitions are in :mod:`sn40l.scheduler.nodeinfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sn40l.errors import SchedulerError
from sn40l.scheduler.job import Job
from sn40l.scheduler.types import JobState


class ReplyError(SchedulerError):
    """A controller's reply holds a field the client does not know (versions out of step)."""


@dataclass(frozen=True)
class Step:
    """One job step as sacct shows it (``<job>.batch`` or ``<job>.<n>``)."""

    step: str  # "batch" or the step number
    name: str
    state: JobState
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int = 0
    exit_signal: int = 0
    ntasks: int = 1
    nodes: tuple[str, ...] = ()
    cpus: int | None = None  # None: the job's allocated CPUs

    @property
    def order(self) -> tuple[bool, int]:
        """sacct lists the batch step first, then the numbered steps in order."""
        return self.step != "batch", int(self.step) if self.step.isdigit() else -1


@dataclass(frozen=True)
class Shown:
    """A job as a reply shows it: the typed job and what the controller computed for display
    (``None`` / empty where the reply does not carry it)."""

    job: Job
    stdout_path: str | None = None
    stderr_path: str | None = None
    dependency: str | None = None  # scontrol's Dependency= text, unsatisfied terms marked
    steps: tuple[Step, ...] = ()


# -- the wire mapping: the client's one place that knows a reply's keys ------------------------
_REQUEST_EXTRAS = ("env_count",)  # show_job counts the environment it does not send


def shown_from_wire(record: dict) -> Shown:
    """A job record of a ``queue``/``show_job``/``sacct`` reply as a :class:`Shown`."""
    from sn40l.scheduler.records import WIRE_EXTRAS, job_from_record

    rec = dict(record)
    extras = {k: rec.pop(k) for k in WIRE_EXTRAS if k in rec}  # display_id: Job.display_id
    req = dict(rec["req"])
    for key in _REQUEST_EXTRAS:
        req.pop(key, None)
    req.setdefault("script", "")  # the controller does not send the script
    rec["req"] = req
    try:
        job = job_from_record(rec)
        steps = tuple(typed_record(Step, s, f"step of job {job.id}")
                      for s in extras.get("steps", ()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplyError(f"unreadable job record from the controller: {exc}") from None
    return Shown(job, extras.get("stdout_path"), extras.get("stderr_path"),
                 extras.get("dependency_shown"), steps)


def job_from_wire(record: dict) -> Job:
    """The typed job of one job record of a reply."""
    return shown_from_wire(record).job


def step_to_wire(step: Step) -> dict:
    """A step as ``srun`` sends it to be recorded."""
    out = {f.name: getattr(step, f.name) for f in fields(Step)}
    out["state"] = step.state.value
    out["nodes"] = list(step.nodes)
    return out


_FIELDS: dict[type, tuple[frozenset[str], tuple[str, ...]]] = {}


def typed_record(cls: type, record: dict, what: str):
    """The frozen dataclass ``cls`` built from a reply's ``record``: unknown keys refused by
    name (ValueError), lists made tuples, a :class:`Step`'s ``state`` made a
    :class:`JobState`."""
    if cls not in _FIELDS:
        names = frozenset(f.name for f in fields(cls))
        tuples = tuple(f.name for f in fields(cls) if str(f.type).startswith("tuple"))
        _FIELDS[cls] = names, tuples
    names, tuples = _FIELDS[cls]
    unknown = sorted(set(record) - names)
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    rec = dict(record)
    for key in tuples:
        if rec.get(key) is not None:
            rec[key] = tuple(rec[key])
    if cls is Step:
        rec["state"] = JobState(rec["state"])
    return cls(**rec)
