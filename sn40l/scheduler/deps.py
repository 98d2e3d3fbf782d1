"""Evaluating ``--dependency``: whether a job's terms are satisfied, still waiting, or can never
be, and the text ``scontrol show job`` gives for them.

The terms were parsed once, when the request was read (:attr:`JobRequest.deps`); here they are
checked against the jobs the core holds (and the store's finished ones). Slurm's rules:
``after`` once the target started (plus ``+minutes``), ``afterany`` once it ended,
``afterok``/``aftercorr`` if it COMPLETED (never otherwise), ``afternotok`` if it did not, and
``singleton`` once no earlier job of the same user and name is active. An array id names all
its tasks; ``aftercorr`` pairs the tasks with the same index. Pure reads, no writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sn40l.scheduler.job import Dep, Job
from sn40l.scheduler.types import DepKind, DepStatus, JobState

if TYPE_CHECKING:
    from sn40l.scheduler.core import SchedulerCore

OK, WAIT, NEVER = DepStatus.OK, DepStatus.WAIT, DepStatus.NEVER


def status(core: "SchedulerCore", job: Job) -> DepStatus:
    """Where the job's ``--dependency`` stands as a whole (``,`` all terms, ``?`` any)."""
    deps = job.req.deps
    if not deps:
        return OK
    results = [term_status(core, job, d) for d in deps]
    if job.req.dep_mode == "all":
        if NEVER in results:
            return NEVER
        return OK if all(r == OK for r in results) else WAIT
    if OK in results:
        return OK
    return NEVER if all(r == NEVER for r in results) else WAIT


def text(core: "SchedulerCore", job: Job) -> str:
    """Dependency= as scontrol shows it: the terms not yet satisfied, each marked
    ``(unfulfilled)`` or ``(failed)`` (``afterok:12(unfulfilled),afterok:13(failed)``);
    ``(null)`` when none is left."""
    if not job.req.deps:
        return "(null)"
    shown = []
    for dep in job.req.deps:
        st = term_status(core, job, dep)
        if st == OK:
            continue
        mark = "failed" if st == NEVER else "unfulfilled"
        if dep.kind == DepKind.SINGLETON:
            shown.append(f"singleton({mark})")
            continue
        ref = str(dep.job) + (f"_{dep.task}" if dep.task is not None else "")
        ref += f"+{dep.delay_min}" if dep.delay_min else ""
        shown.append(f"{dep.kind}:{ref}({mark})")
    return ("?" if job.req.dep_mode == "any" else ",").join(shown) or "(null)"


def term_status(core: "SchedulerCore", job: Job, dep: Dep) -> DepStatus:
    if dep.kind == DepKind.SINGLETON:
        for other in core.jobs.values():
            if (other.id != job.id and other.uid == job.uid and other.name == job.name
                    and other.id < job.id and not other.is_final):
                return WAIT
        return OK
    found = targets(core, dep, job)
    if not found:
        return NEVER
    statuses = []
    for t in found:
        if dep.kind == DepKind.AFTER:
            started = t.start_time or t.is_final
            if started and dep.delay_min:
                since = t.start_time or t.end_time or 0
                started = core.now() >= since + dep.delay_min * 60
            statuses.append(OK if started else WAIT)
        elif not t.is_final:
            statuses.append(WAIT)
        elif dep.kind == DepKind.AFTERANY:
            statuses.append(OK)
        elif dep.kind in (DepKind.AFTEROK, DepKind.AFTERCORR):
            statuses.append(OK if t.state == JobState.COMPLETED else NEVER)
        elif dep.kind == DepKind.AFTERNOTOK:
            statuses.append(NEVER if t.state == JobState.COMPLETED else OK)
    if NEVER in statuses:
        return NEVER
    return OK if all(s == OK for s in statuses) else WAIT


def targets(core: "SchedulerCore", dep: Dep, job: Job) -> list[Job]:
    """The jobs a term waits for: the job, or the array's tasks it names."""
    target = core.lookup(dep.job)
    if target is None:
        return []
    array_id = target.array_job_id
    if array_id is None:
        return [target]
    tasks = core.array_tasks(array_id)
    if dep.kind == DepKind.AFTERCORR and job.array_task_id is not None:
        return [t for t in tasks if t.array_task_id == job.array_task_id]
    if dep.task is not None:
        return [t for t in tasks if t.array_task_id == dep.task]
    if dep.job == array_id:
        return tasks
    return [target]
