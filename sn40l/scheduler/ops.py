"""The controller's requests: what each Slurm command asks over the Unix socket, and the reply.

A request is ``{"op": name, ...arguments}`` (:mod:`sn40l.scheduler.client`); :func:`handle`
calls ``op_<name>(ctl, who, **arguments)`` with the caller's uid/gid from ``SO_PEERCRED``.
Each handler checks what ``who`` may see or change, asks the core under the controller's lock,
and has the :class:`~sn40l.scheduler.supervise.Supervisor` kill or signal what must end. Jobs
go back as records made by :func:`sn40l.scheduler.store.job_to_wire` (the store's row mapping
without the script and environment, plus the computed fields clients show).
"""

from __future__ import annotations

import os
import pwd
import time
from typing import TYPE_CHECKING

from sn40l.scheduler import agent, launch, verbs
from sn40l.scheduler.core import Who
from sn40l.scheduler.errors import RequestError
from sn40l.scheduler.records import job_to_wire, request_from_record, submit_flags
from sn40l.scheduler.types import JobState

if TYPE_CHECKING:
    from sn40l.scheduler.controller import ControllerActor


def handle(ctl: "ControllerActor", req: dict, who: Who) -> object:
    op = req.get("op")
    fn = OPS.get(op)
    if fn is None:
        raise RequestError(f"unknown request {op!r}; known: {', '.join(sorted(OPS))}",
                           "BadRequest")
    return fn(ctl, who, **{k: v for k, v in req.items() if k != "op"})


def op_ping(ctl: "ControllerActor", who: Who) -> dict:
    return {**ctl.ping(), "uid": who.uid}


def op_submit(ctl: "ControllerActor", who: Who, req: dict) -> dict:
    if os.geteuid() != 0 and who.uid != os.geteuid():  # stepsec: only root changes user
        raise RequestError(f"Access/permission denied: this controller runs as uid "
                           f"{os.geteuid()} and can run only that user's jobs", "Permission")
    try:
        request = request_from_record(req)
    except (TypeError, ValueError) as exc:  # unknown or missing fields, by name
        raise RequestError(f"bad job request: {exc}", "BadRequest") from None
    test_only = submit_flags(req)["test_only"]
    with ctl.lock:
        out = ctl.core.submit(request, who, test_only=test_only)
    if not test_only:
        ctl.wake.set()
    return out


def _visible_all(ctl: "ControllerActor", who: Who, tokens: list[str]) -> list:
    """The jobs named by ``tokens``; refused if any of them is not ``who``'s to see."""
    found = []
    for tok in tokens:
        found += ctl.core.jobs_for(tok)
    if any(not ctl.core.visible(who, j) for j in found):
        raise RequestError("Access/permission denied", "Permission")
    return found


def op_queue(ctl: "ControllerActor", who: Who, jobs: list[str] | None = None,
             users: list[str] | None = None, states: list[str] | None = None,
             partitions: list[str] | None = None, names: list[str] | None = None,
             all_states: bool = False, compact: bool = False) -> list[dict]:
    with ctl.lock:
        if jobs:
            found = _visible_all(ctl, who, jobs)
        else:
            found = [j for j in ctl.core.jobs.values() if ctl.core.visible(who, j)]
        out = []
        for j in sorted(found, key=lambda j: j.id):
            if users and j.user not in users:
                continue
            if states and j.state not in states:
                continue
            if not states and not all_states and j.is_final:
                continue  # squeue -j of a finished job prints nothing, so wait loops end
            if partitions and j.partition not in partitions:
                continue
            if names and j.name not in names:
                continue
            out.append(j)
    return [job_to_wire(j, compact=compact) for j in out]


def op_show_job(ctl: "ControllerActor", who: Who, job: str,
                all_tasks: bool = False) -> list[dict]:
    with ctl.lock:
        return [job_to_wire(j, full=True,
                            stdout_path=os.path.normpath(launch.out_path(j, "output")),
                            stderr_path=os.path.normpath(launch.out_path(j, "error")),
                            dependency_shown=ctl.core.dependency_text(j))
                for j in _visible_all(ctl, who, [job])]


def op_cancel(ctl: "ControllerActor", who: Who, jobs: list[str] | None = None,
              user: str | None = None, name: str | None = None,
              states: list[str] | None = None, partition: str | None = None,
              signal_num: int | None = None) -> dict:
    with ctl.lock:
        errors, kill, sig = verbs.cancel(ctl.core, who, jobs or [], user, name, states,
                                         partition, signal_num)
    for job in kill:
        ctl.steps.kill(job)
    for job in sig:
        ctl.steps.signal(job, signal_num)
    ctl.wake.set()
    return {"errors": errors, "cancelled": len(kill)}


def op_hold(ctl: "ControllerActor", who: Who, jobs: list[str],
            release: bool = False) -> list[str]:
    with ctl.lock:
        errors = verbs.hold(ctl.core, who, jobs, release)
    ctl.wake.set()
    return errors


def op_requeue(ctl: "ControllerActor", who: Who, jobs: list[str],
               hold: bool = False) -> list[str]:
    with ctl.lock:
        errors, kill = verbs.requeue(ctl.core, who, jobs, hold)
    for job in kill:
        ctl.steps.kill(job)
    ctl.wake.set()
    return errors


def op_update_job(ctl: "ControllerActor", who: Who, job: str, fields: dict) -> None:
    with ctl.lock:
        verbs.update_job(ctl.core, who, job, fields)
    ctl.wake.set()


def op_update_node(ctl: "ControllerActor", who: Who, names: list[str], state: str,
                   reason: str | None = None) -> dict:
    revived: list[int] = []
    if state.lower() in ("resume", "idle", "undrain"):
        if not who.is_admin:
            raise RequestError("Access/permission denied", "Permission")
        for name in names:
            if name not in ctl.core.nodes:
                raise RequestError(f"Invalid node name specified: {name}", "Invalid")
            revived += ctl.steps.revive_node(name)
    with ctl.lock:
        ctl.core.set_node(who, names, state, reason)
    ctl.wake.set()
    return {"revived": revived}


def op_nodes(ctl: "ControllerActor", who: Who) -> dict:
    with ctl.lock:
        return {"nodes": ctl.core.node_rows(), "partitions": ctl.core.partition_rows(),
                "cluster": ctl.cluster_name, "sockets_per_node": ctl.spn}


def op_sacct(ctl: "ControllerActor", who: Who, jobs: list[str] | None = None,
             users: list[str] | None = None, all_users: bool = False,
             start: float | None = None, end: float | None = None,
             states: list[str] | None = None, names: list[str] | None = None,
             partitions: list[str] | None = None, compact: bool = False) -> list[dict]:
    ids = None
    if jobs:
        ids = []
        for tok in jobs:
            try:
                ids.append(int(tok.split("_")[0].split(".")[0]))
            except ValueError:
                raise RequestError(f"Invalid job id {tok!r}", "InvalidJobId") from None
    uids = None
    if users:
        uids = []
        for u in users:
            try:
                uids.append(int(u) if u.isdigit() else pwd.getpwnam(u).pw_uid)
            except KeyError:
                raise RequestError(f"Invalid user id: {u}", "Invalid") from None
    elif not all_users and not who.is_admin:
        uids = [who.uid]
    if uids is not None and not who.is_admin and set(uids) - {who.uid}:
        raise RequestError("Access/permission denied", "Permission")
    with ctl.lock:
        live = ctl.core.jobs
        rows = [live[r] if isinstance(r, int) else r
                for r in ctl.store.query_jobs(ids, uids, start, end, names, skip=live.keys())]
        if not who.is_admin:
            rows = [r for r in rows if r.uid == who.uid]
        if states:
            rows = [r for r in rows if r.state in states]
        if partitions:
            rows = [r for r in rows if r.partition in partitions]
        steps = ctl.store.steps([r.id for r in rows])
    return [job_to_wire(r, compact=compact, steps=steps.get(r.id, [])) for r in rows]


def op_step(ctl: "ControllerActor", who: Who, job_id: int, step: str,
            data: dict) -> int | None:
    """srun inside a job records its steps (for sacct); ``step="next"`` allocates the
    next step number and records the step as RUNNING."""
    job_id = int(job_id)
    with ctl.lock:
        job = ctl.core.jobs.get(job_id)
        if job is None or not verbs.may_modify(who, job):
            raise RequestError("Access/permission denied", "Permission")
        if job.state != JobState.RUNNING:
            raise RequestError(f"Job {job_id} is not running", "NotRunning")
        if step == "next":
            number = ctl.core.next_step(job_id)
            ctl.store.put_step(job_id, str(number), {
                "step": str(number), "name": "step", "state": "RUNNING",
                "start_time": time.time(), "end_time": None, "exit_code": 0,
                "exit_signal": 0, "ntasks": 0, "nodes": [], "cpus": 0})
            return number
        ctl.store.put_step(job_id, step, data)
        return None


def op_job_run(ctl: "ControllerActor", who: Who, **kwargs) -> dict:
    """``sn40l run`` inside a job whose user has no Ray access: the controller runs it on
    the job's sockets (:mod:`sn40l.scheduler.agent`)."""
    return agent.run_for_job(ctl, who, **kwargs)


def op_write_script(ctl: "ControllerActor", who: Who, job: str) -> str:
    with ctl.lock:
        found = ctl.core.jobs_for(job)
        if not ctl.core.visible(who, found[0]):
            raise RequestError("Access/permission denied", "Permission")
        return found[0].req.script


OPS = {name[3:]: fn for name, fn in dict(globals()).items() if name.startswith("op_")}
