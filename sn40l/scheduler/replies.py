"""The controller's replies as the Slurm commands read them: typed, frozen values.

A job on the wire is the store's record (:func:`~sn40l.scheduler.store.job_to_record`) without
the script and the environment, plus what the controller computed for display
(``display_id``; for ``show_job`` the expanded ``stdout_path``/``stderr_path``, the
``dependency_shown`` text and ``req.env_count``; for ``sacct`` the job's ``steps``).
:func:`shown_from_wire` parses it once into a :class:`Shown` (the typed
:class:`~sn40l.scheduler.job.Job` through the store's row mapping, plus those extras), so the
views read attributes and a field the model does not know is refused by name
(:class:`ReplyError`). Steps, nodes and partitions get small frozen types of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

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


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``sinfo``/``scontrol show node`` see it."""

    name: str
    state: str  # IDLE, MIXED, ALLOCATED, DOWN, DOWN*, DRAINED, DRAINING, COMPLETING
    cpus: int
    cpus_alloc: int
    rdus: int
    rdus_alloc: int
    mem_mb: int
    mem_alloc: int
    reason: str | None = None
    since: float | None = None
    jobs: tuple[int, ...] = ()
    partitions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as ``sinfo``/``scontrol show partition`` see it."""

    name: str
    nodes: tuple[str, ...]
    default: bool
    state: str  # UP | DOWN
    max_time: int | None = None  # seconds; None = infinite
    default_time: int | None = None
    max_nodes: int | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """The ``nodes`` reply: every node and partition."""

    nodes: tuple[NodeInfo, ...]
    partitions: tuple[PartitionInfo, ...]
    cluster: str = ""
    sockets_per_node: int = 0

    def only(self, names: set[str]) -> "ClusterInfo":
        """The nodes in ``names`` only, partitions cut to them (``sinfo -n``)."""
        return replace(self, nodes=tuple(n for n in self.nodes if n.name in names),
                       partitions=tuple(replace(p, nodes=tuple(n for n in p.nodes if n in names))
                                        for p in self.partitions))


# -- the wire mapping: the client's one place that knows a reply's keys ------------------------
_SHOWN_EXTRAS = ("stdout_path", "stderr_path", "dependency_shown", "steps")
_REQUEST_EXTRAS = ("env_count",)  # show_job counts the environment it does not send


def shown_from_wire(record: dict) -> Shown:
    """A job record of a ``queue``/``show_job``/``sacct`` reply as a :class:`Shown`."""
    from sn40l.scheduler.store import job_from_record

    rec = dict(record)
    extras = {k: rec.pop(k) for k in _SHOWN_EXTRAS if k in rec}
    rec.pop("display_id", None)  # Job.display_id derives it
    req = {k: v for k, v in rec["req"].items() if k not in _REQUEST_EXTRAS}
    req.setdefault("script", "")  # the controller does not send the script
    rec["req"] = req
    try:
        job = job_from_record(rec)
        steps = tuple(_typed(Step, s, f"step of job {job.id}") for s in extras.get("steps", ()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplyError(f"unreadable job record from the controller: {exc}") from None
    return Shown(job, extras.get("stdout_path"), extras.get("stderr_path"),
                 extras.get("dependency_shown"), steps)


def job_from_wire(record: dict) -> Job:
    """The typed job of one job record of a reply."""
    return shown_from_wire(record).job


def cluster_from_wire(reply: dict) -> ClusterInfo:
    """The ``nodes`` reply as a :class:`ClusterInfo`."""
    try:
        return ClusterInfo(tuple(_typed(NodeInfo, n, "node") for n in reply["nodes"]),
                           tuple(_typed(PartitionInfo, p, "partition")
                                 for p in reply["partitions"]),
                           reply.get("cluster", ""), reply.get("sockets_per_node", 0))
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplyError(f"unreadable node information from the controller: {exc}") from None


def step_to_wire(step: Step) -> dict:
    """A step as ``srun`` sends it to be recorded."""
    out = {f.name: getattr(step, f.name) for f in fields(Step)}
    out["state"] = step.state.value
    out["nodes"] = list(step.nodes)
    return out


_FIELDS: dict[type, tuple[frozenset[str], tuple[str, ...]]] = {}


def _typed(cls: type, record: dict, what: str):
    """``cls`` built from ``record``: unknown keys refused by name, lists made tuples,
    a ``state`` of a :class:`Step` made a :class:`JobState`."""
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
