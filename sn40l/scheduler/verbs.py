"""The requests that change jobs a user already has: ``scancel``, ``scontrol hold/release``,
``scontrol requeue[hold]`` and ``scontrol update JobId=``.

Each checks who may change what (the owner or root; some changes root only), makes the new
:class:`~sn40l.scheduler.job.Job` values with :func:`dataclasses.replace` and writes them with
:meth:`SchedulerCore.put <sn40l.scheduler.core.SchedulerCore.put>`. Running jobs to be ended
come back marked with their :class:`~sn40l.scheduler.types.KillCause`; the controller kills
their processes, and the core's ``completing``/``release`` end them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from sn40l.scheduler.core import BASE_PRIORITY, SchedulerCore, Who
from sn40l.scheduler.errors import RequestError
from sn40l.scheduler.job import Job
from sn40l.scheduler.request import parse_dependency
from sn40l.scheduler.timespec import parse_begin, parse_time_limit
from sn40l.scheduler.types import JobState, KillCause, Reason

UPDATABLE = ("TimeLimit, JobName, Partition, NumNodes, Dependency, Nice, Priority, Comment, "
             "StartTime")


def may_modify(who: Who, job: Job) -> bool:
    return who.is_admin or who.uid == job.uid


def cancel(core: SchedulerCore, who: Who, tokens: list[str], user: str | None = None,
           name: str | None = None, states: list[str] | None = None,
           partition: str | None = None, signal: int | None = None
           ) -> tuple[list[str], list[Job], list[Job]]:
    """scancel: pending jobs end CANCELLED now; running ones are marked to be killed.

    Returns (errors, jobs to kill, jobs to signal with ``signal``)."""
    errors: list[str] = []
    targets: list[Job] = []
    if tokens:
        for tok in tokens:
            try:
                jobs = core.resolve_ids(tok)
            except RequestError:
                errors.append(f"Invalid job id {tok}")
                continue
            # Slurm 22.05's scancel says nothing (exit 0) for an id it does not know
            if any(not may_modify(who, j) for j in jobs):
                errors.append(f"Kill job error on job id {tok}: Access/permission denied")
                continue
            targets += jobs
    else:
        targets = [j for j in core.jobs.values() if not j.is_final]
        if not who.is_admin and user is None:
            user = who.user
    if user is not None:
        targets = [j for j in targets if j.user == user]
        if not who.is_admin and user != who.user:
            errors.append(f"Access/permission denied for jobs of user {user}")
            targets = []
    if name is not None:
        targets = [j for j in targets if j.name == name]
    if partition is not None:
        targets = [j for j in targets if j.partition == partition]
    if states:
        targets = [j for j in targets if j.state in states]
    kill, sig, done = [], [], []
    for job in targets:
        if job.is_final:
            continue  # Slurm 22.05: finished jobs are skipped without a message
        if signal is not None:
            if job.state == JobState.RUNNING:
                sig.append(job)
            continue
        if job.state == JobState.PENDING:
            done.append(replace(job, state=JobState.CANCELLED, end_time=core.now(),
                                reason=Reason.NONE, exit_code=0, exit_signal=0,
                                cancelled_by=who.uid))
        elif job.state == JobState.RUNNING:
            kill.append(replace(job, kill_reason=KillCause.CANCEL, cancelled_by=who.uid,
                                requeue_pending=False))
    core.put(*done, *kill)
    return errors, kill, sig


def _modifiable(core: SchedulerCore, who: Who, tokens: list[str],
                errors: list[str]) -> Iterator[Job]:
    """The jobs named by ``tokens`` that ``who`` may modify; the rest become errors."""
    for tok in tokens:
        try:
            jobs = core.jobs_for(tok)
        except RequestError as exc:
            errors.append(f"Invalid job id specified for job {tok}"
                          if exc.code == "InvalidJobId" else str(exc))
            continue
        for job in jobs:
            if may_modify(who, job):
                yield job
            else:
                errors.append(f"Access/permission denied for job {job.display_id}")


def hold(core: SchedulerCore, who: Who, tokens: list[str],
         release: bool = False) -> list[str]:
    """scontrol hold / release: a held job keeps its priority aside and waits at 0."""
    errors: list[str] = []
    changed = []
    for job in _modifiable(core, who, tokens, errors):
        if job.state != JobState.PENDING:
            errors.append(f"Job is no longer pending execution for job {job.display_id}")
            continue
        if release:
            if job.held == "admin" and not who.is_admin:
                errors.append(f"Access/permission denied for job {job.display_id}")
                continue
            if job.held:
                job = replace(job, priority=job.priority_before_hold or (
                    BASE_PRIORITY - (job.array_job_id or job.id)), priority_before_hold=None,
                    held=None, reason=Reason.NONE)
        else:
            held = "user" if who.uid == job.uid else "admin"
            job = replace(job, priority_before_hold=job.priority_before_hold if job.held
                          else job.priority, held=held, priority=0,
                          reason=Reason.JOB_HELD_USER if held == "user"
                          else Reason.JOB_HELD_ADMIN)
        changed.append(job)
    core.put(*changed)
    return errors


def requeue(core: SchedulerCore, who: Who, tokens: list[str],
            hold: bool = False) -> tuple[list[str], list[Job]]:
    """scontrol requeue[hold]: running jobs are marked to be killed and go back to PENDING;
    finished batch jobs are queued again. Returns (errors, jobs to kill)."""
    errors: list[str] = []
    kill, changed = [], []
    for job in _modifiable(core, who, tokens, errors):
        if job.state == JobState.RUNNING:
            kill.append(replace(job, kill_reason=KillCause.REQUEUE, requeue_pending=True,
                                requeue_hold=hold))
        elif job.is_final:
            changed.append(core.requeued(job, hold))
        else:
            errors.append(f"Job is pending execution for job {job.display_id}")
    core.put(*kill, *changed)
    return errors, kill


def update_job(core: SchedulerCore, who: Who, token: str, fields: dict[str, str]) -> None:
    """scontrol update JobId=...: the fields of :data:`UPDATABLE` (Priority by an admin only);
    all are checked before any job changes."""
    jobs = core.jobs_for(token)
    for job in jobs:
        if not may_modify(who, job):
            raise RequestError("Access/permission denied", "Permission")
    changed = []
    for job in jobs:
        for key, value in fields.items():
            job = _update_one(core, who, job, key, value)
        changed.append(job)
    core.put(*changed)


def _update_one(core: SchedulerCore, who: Who, job: Job, key: str, value: str) -> Job:
    k = key.lower()
    req = job.req
    if k == "timelimit":
        try:
            limit = parse_time_limit(value)
        except ValueError:
            raise RequestError(f"Invalid TimeLimit value: {value}", "InvalidValue") from None
        if not who.is_admin and job.state != JobState.PENDING and (
                limit is None or (job.time_limit is not None and limit > job.time_limit)):
            raise RequestError("Access/permission denied (only an administrator may raise "
                                 "the time limit of a started job)", "Permission")
        return replace(job, time_limit=limit, req=replace(req, time_set=True))
    if k in ("jobname", "name"):
        return replace(job, name=value)
    if k == "partition":
        if value not in core.partitions:
            raise RequestError("Invalid partition name specified", "Invalid")
        _pending_only(job, key)
        return replace(job, partition=value)
    if k in ("numnodes", "minnodes"):
        _pending_only(job, key)
        n = _int_value(value.split("-")[0], "Invalid numeric value \"{}\" for requested node "
                       "count.", value, lo=1)
        return replace(job, req=replace(req, nodes=n, nodes_max=n, ntasks=max(req.ntasks, n)))
    if k == "dependency":
        _pending_only(job, key)
        if value in ("", "none", "None"):
            return replace(job, req=replace(req, dependency=None, dep_mode="all", deps=()))
        mode, deps = parse_dependency(value)
        return replace(job, req=replace(req, dependency=value, dep_mode=mode, deps=tuple(deps)))
    if k == "nice":
        nice = _int_value(value, "Invalid Nice value: {}", value, lo=-2147483645)
        return replace(job, priority=job.priority - (nice - int(req.nice or 0)),
                       req=replace(req, nice=nice))
    if k == "priority":
        if not who.is_admin:
            raise RequestError("Access/permission denied", "Permission")
        return replace(job, priority=_int_value(value, "Invalid Priority value: {}", value))
    if k == "comment":
        return replace(job, req=replace(req, comment=value))
    if k in ("starttime", "begintime"):
        _pending_only(job, key)
        try:
            return replace(job, req=replace(req, begin=parse_begin(value)))
        except ValueError:
            raise RequestError(f"Invalid StartTime value {value!r}", "Invalid") from None
    raise RequestError(f"Update of {key} is not supported; supported: {UPDATABLE}", "Invalid")


def _pending_only(job: Job, key: str) -> None:
    if job.state != JobState.PENDING:
        raise RequestError(f"Job is no longer pending execution (cannot change {key})",
                             "NotPending")


def _int_value(text: str, message: str, value: str, lo: int = 0) -> int:
    """``text`` as an integer >= ``lo``, or the RequestError scontrol prints for it."""
    try:
        n = int(text.strip())
    except ValueError:
        n = None
    if n is None or n < lo:
        raise RequestError(message.format(value), "InvalidValue")
    return n
