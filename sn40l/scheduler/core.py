"""The scheduler's state machine: jobs, their submission, scheduling and life. Ray-free.

:class:`SchedulerCore` holds the active jobs in memory as frozen
:class:`~sn40l.scheduler.job.Job` values and is the only writer of job state: a change is a new
value (:func:`dataclasses.replace`) put in memory and written through to the
:class:`~sn40l.scheduler.store.Store` (:meth:`SchedulerCore.put`). It does not start processes
or talk to sockets: :mod:`sn40l.scheduler.controller` launches what :meth:`schedule` starts and
reports back (:meth:`completing`, :meth:`release`, :meth:`node_failed`). The requests that
modify existing jobs are in :mod:`sn40l.scheduler.verbs`, dependency evaluation in
:mod:`sn40l.scheduler.deps`, nodes and partitions in :mod:`sn40l.scheduler.nodes`.

Scheduling follows Slurm's priority FIFO with backfill, decided by the pure planner
:func:`sn40l.scheduler.backfill.plan`: pending jobs are taken in priority order (submission
order; array tasks share their array's priority); each either starts now on free resources or
gets a reservation at the earliest time the running jobs' time limits free enough resources for
it. The first job in a partition that must wait is pending for ``Resources``, the ones behind it
for ``Priority``.
"""

from __future__ import annotations

import pwd
import time
from dataclasses import dataclass, replace

from sn40l.scheduler import backfill, deps, hostlist
from sn40l.scheduler.errors import RequestError, SubmitError
from sn40l.scheduler.job import Job, JobRequest
from sn40l.scheduler.nodes import NodeInfo, Partition, allocate
from sn40l.scheduler.store import Store
from sn40l.scheduler.types import DepKind, DepStatus, JobState, KillCause, Reason, end_reason

__all__ = ["BASE_PRIORITY", "MIN_JOB_AGE_S", "Partition", "RequestError", "SchedulerCore", "Who",
           "end_reason"]

BASE_PRIORITY = 4294901760  # priority/basic: the first job gets the highest, then one less each
BF_MAX_JOB_TEST = 100  # pending jobs the backfill pass considers (Slurm's bf_max_job_test)
MIN_JOB_AGE_S = 300  # finished jobs stay visible to squeue this long (Slurm's MinJobAge)
_HELD_REASON = {"user": Reason.JOB_HELD_USER, "admin": Reason.JOB_HELD_ADMIN}
_HOLDING = (JobState.RUNNING, JobState.COMPLETING)  # a tuple: members compare by identity


@dataclass(frozen=True)
class Who:
    """The OS user behind a request, from the Unix socket's peer credentials."""

    uid: int
    gid: int
    pid: int = 0

    @property
    def user(self) -> str:
        return user_name(self.uid)

    @property
    def is_admin(self) -> bool:
        return self.uid == 0


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class SchedulerCore:
    """Jobs, nodes and partitions of one cluster, persisted in ``store``."""

    def __init__(self, cluster: str, node_names: list[str], sockets_per_node: int, cpus: int,
                 mem_mb: int, partitions: list[Partition], store: Store, now=time.time):
        self.cluster = cluster
        self.store = store
        self.now = now
        self.sockets_per_node = sockets_per_node
        self.nodes = {n: NodeInfo(n, i, cpus, sockets_per_node, mem_mb)
                      for i, n in enumerate(node_names)}
        self.partitions = {p.name: p for p in partitions}
        self.default_partition = next((p.name for p in partitions if p.default),
                                      partitions[0].name)
        self.jobs: dict[int, Job] = {}
        self.recover()

    # -- persistence -----------------------------------------------------------------------
    def recover(self) -> None:
        """Load node admin states and every active job (plus recently finished ones)."""
        for name, st in self.store.node_states().items():
            if name in self.nodes:
                node = self.nodes[name]
                node.admin, node.reason, node.since = st.state, st.reason, st.since
        for job in self.store.active_jobs() + self.store.finished_since(
                self.now() - MIN_JOB_AGE_S):
            self.jobs[job.id] = job
            if job.holds_resources and job.alloc:
                self._take(job)

    def put(self, *jobs: Job) -> None:
        """The new values of ``jobs``: held in memory and written to the store."""
        for job in jobs:
            self.jobs[job.id] = job
        if jobs:
            self.store.put_jobs(list(jobs))

    def _keep(self, job: Job) -> Job:
        """``job`` held in memory only (what a later :meth:`put` writes)."""
        self.jobs[job.id] = job
        return job

    # -- allocation bookkeeping ------------------------------------------------------------
    def _take(self, job: Job) -> None:
        for name, a in job.alloc.items():
            self.nodes[name].take(job, a)

    def _give_back(self, job: Job) -> None:
        for name, a in (job.alloc or {}).items():
            self.nodes[name].give_back(job, a)

    def _fits_shape(self, job: Job) -> str | None:
        """Why the job can never run on this cluster (Slurm's submit-time refusal), or None."""
        cpus, rdus, mem = job.need
        req = job.req
        exclude = set(req.exclude or ())
        cands = [self.nodes[n] for n in self.partitions[job.partition].nodes if n not in exclude]
        ok = {n.name for n in cands if n.cpus >= cpus and n.rdus >= rdus and n.mem_mb >= mem}
        wanted = req.nodelist or ()
        if any(w not in self.nodes for w in wanted):
            return "Invalid node name specified"
        if any(w not in ok for w in wanted) or len(ok) < req.nodes or len(wanted) > req.nodes_max:
            return "Requested node configuration is not available"
        return None

    # -- submission ------------------------------------------------------------------------
    def submit(self, req: JobRequest, who: Who, test_only: bool = False) -> dict:
        """Create the job (or array tasks) of a request; return ``{"job_id": first, "count"}``
        or, for ``test_only``, the estimated start."""
        now = self.now()
        partition = req.partition or self.default_partition
        if partition not in self.partitions:
            raise RequestError("Invalid partition name specified", "InvalidPartition")
        part = self.partitions[partition]
        limit = req.time_limit
        if not req.time_set:
            limit = part.default_time if part.default_time is not None else part.max_time
        first = self.store.peek_job_id()
        prio = BASE_PRIORITY - first - int(req.nice or 0)
        held, array = req.hold, req.array is not None
        user = who.user
        jobs = [Job(id=first + k, state=JobState.PENDING,
                    reason=Reason.JOB_HELD_USER if held else Reason.NONE, uid=who.uid,
                    gid=who.gid, user=user, name=req.name, partition=partition,
                    submit_time=now, req=req, time_limit=limit, priority=0 if held else prio,
                    held="user" if held else None, priority_before_hold=prio if held else None,
                    array_job_id=first if array else None, array_task_id=task,
                    array_throttle=(req.array_throttle or 0) if array else 0)
                for k, task in enumerate(req.array or (None,))]
        why = self._fits_shape(jobs[0])  # every task has the same shape
        if why:
            raise RequestError(why, "NodeConfig")
        for dep in req.deps:
            if dep.kind != DepKind.SINGLETON and self.lookup(dep.job) is None:
                raise RequestError("Job dependency problem", "Dependency")
        if test_only:
            probe = Job(id=0, state=JobState.PENDING, reason=Reason.NONE, uid=who.uid,
                        gid=who.gid, user=user, name=req.name, partition=partition,
                        submit_time=now, req=req, time_limit=limit)
            start, nodes = self._estimate(probe, now)
            # Slurm gives the probe a job id of its own (the next submission gets the one after)
            return {"test_only": True, "start": start, "nodes": nodes, "partition": partition,
                    "cpus": probe.need[0] * len(nodes), "job_id": self.store.next_job_id()}
        count = len(jobs)
        self.store.put_jobs(jobs, next_job_id=first + count)
        for job in jobs:
            self.jobs[job.id] = job
        return {"job_id": first, "count": count}

    def lookup(self, job_id: int) -> Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None else self.store.get_job(job_id)

    def array_tasks(self, array_job_id: int) -> list[Job]:
        """The tasks of an array, in id order (held ones as held, the others from the store)."""
        ids = self.store.array_task_ids(array_job_id)
        stored = {j.id: j for j in self.store.get_jobs([i for i in ids if i not in self.jobs])}
        return [self.jobs.get(i) or stored[i] for i in ids if i in self.jobs or i in stored]

    def dependency_text(self, job: Job) -> str:
        return deps.text(self, job)

    # -- scheduling ------------------------------------------------------------------------
    def _array_running(self) -> dict[int, int]:
        """Running tasks per array job (for %N throttles), counted once per pass."""
        counts: dict[int, int] = {}
        for j in self.jobs.values():
            if j.array_job_id is not None and j.state in _HOLDING:
                counts[j.array_job_id] = counts.get(j.array_job_id, 0) + 1
        return counts

    def _pending_reason(self, job: Job, now: float) -> str | None:
        """Why a pending job may not be considered now (the %N throttle aside), or None."""
        if job.held:
            return _HELD_REASON[job.held]
        begin = job.req.begin
        if (begin and begin > now) or (job.requeue_at and job.requeue_at > now):
            return Reason.BEGIN_TIME
        dep = deps.status(self, job)
        if dep == DepStatus.NEVER:
            return Reason.DEPENDENCY_NEVER_SATISFIED
        if dep == DepStatus.WAIT:
            return Reason.DEPENDENCY
        part = self.partitions[job.partition]
        if part.max_nodes is not None and job.req.nodes > part.max_nodes:
            return Reason.PARTITION_NODE_LIMIT
        if part.max_time is not None and (job.time_limit is None
                                          or job.time_limit > part.max_time):
            return Reason.PARTITION_TIME_LIMIT
        if part.state != "UP":
            return Reason.PARTITION_DOWN
        bad = [w for w in job.req.nodelist or () if not self.nodes[w].usable]
        if bad:
            return f"{Reason.REQ_NODE_NOT_AVAIL.value}, UnavailableNodes:{hostlist.compress(bad)}"
        return None

    @staticmethod
    def _throttled(job: Job, array_running: dict[int, int]) -> bool:
        """Whether the job's array already runs as many tasks as its ``%N`` allows."""
        throttle = job.array_throttle or 0
        return bool(throttle) and array_running.get(job.array_job_id, 0) >= throttle

    @staticmethod
    def _order(jobs) -> list[Job]:
        """``jobs`` in priority order: array tasks share their array's place, in task order."""
        return sorted(jobs, key=lambda j: (-j.priority, j.array_job_id or j.id,
                                           j.array_task_id or 0, j.id))

    def schedule(self) -> list[Job]:
        """One scheduling pass. Starts what can start (state RUNNING with its allocation, to be
        launched by the caller) and updates the reasons of the rest. Returns the started jobs.
        Which jobs start is :func:`sn40l.scheduler.backfill.plan`'s decision."""
        now = self.now()
        changed: list[Job] = []
        eligible: list[Job] = []
        pending_state = JobState.PENDING  # an enum member's lookup costs a call: once a pass
        for job in self.jobs.values():  # held and waiting jobs need no order
            if job.state is not pending_state:
                continue
            reason = self._pending_reason(job, now)
            if reason is None:
                eligible.append(job)
            elif job.reason is not reason and job.reason != reason:
                changed.append(replace(job, reason=reason))
        for job in changed:
            self._keep(job)
        if not eligible:
            self.put(*changed)
            return []
        eligible = self._order(eligible)
        counts = self._array_running()
        pulled: set[int] = set()  # the jobs the planner looked at

        def pull():
            for job in eligible:
                pulled.add(job.id)
                yield job

        result = backfill.plan(pull(), self.running(), self._capacities(), now,
                               self._partition_nodes(), counts, BF_MAX_JOB_TEST)
        started: list[Job] = []
        for job in eligible:
            new = job
            if job.id in pulled and job.eligible_time is None and (
                    job.id in result.start
                    or result.reasons[job.id] != Reason.JOB_ARRAY_TASK_LIMIT):
                new = replace(new, eligible_time=now)  # considered by this pass
            if job.id in result.start:
                started.append(self._start(new, [self.nodes[n] for n in result.start[job.id]],
                                           now))
                if job.array_job_id is not None:
                    counts[job.array_job_id] = counts.get(job.array_job_id, 0) + 1
                continue
            reason = result.reasons.get(job.id)
            if reason is None:  # beyond bf_max_job_test
                reason = (Reason.JOB_ARRAY_TASK_LIMIT if self._throttled(job, counts)
                          else Reason.PRIORITY)
            if job.reason != reason:
                new = replace(new, reason=reason)
            if new is not job:
                changed.append(self._keep(new))
        self.put(*changed, *started)
        return started

    def _capacities(self) -> list[backfill.NodeCapacity]:
        return [backfill.NodeCapacity(n.name, n.cpus, n.rdus, n.mem_mb, n.usable)
                for n in self.nodes.values()]

    def _partition_nodes(self) -> dict[str, list[str]]:
        return {p.name: p.nodes for p in self.partitions.values()}

    def _estimate(self, job: Job, now: float) -> tuple[float, list[str]]:
        """When and where ``job`` would start behind everything already queued (--test-only)."""
        counts = self._array_running()
        pending = self._order(o for o in self.jobs.values() if o.state is JobState.PENDING
                              and self._pending_reason(o, now) is None
                              and not self._throttled(o, counts))
        start, nodes = backfill.estimate(job, pending, self.running(), self._capacities(), now,
                                         self._partition_nodes())
        return start, list(nodes)

    def _start(self, job: Job, nodes: list[NodeInfo], now: float) -> Job:
        job = self._keep(replace(job, state=JobState.RUNNING, reason=Reason.NONE, start_time=now,
                                 alloc=allocate(job, nodes), batch_host=nodes[0].name,
                                 end_time=None, exit_code=None, kill_reason=None,
                                 launch_time=now))
        self._take(job)
        return job

    # -- job life (reported by the controller) ---------------------------------------------
    def running(self) -> list[Job]:
        """The jobs holding resources (RUNNING or COMPLETING)."""
        return [j for j in self.jobs.values() if j.state in _HOLDING]

    def launching(self, job_id: int, now: float) -> Job:
        """The job's batch step is (re)launched at ``now`` (it has LAUNCH_TIMEOUT_S to report)."""
        job = replace(self.jobs[job_id], launch_time=now)
        self.put(job)
        return job

    def timed_out(self, job_id: int) -> Job:
        """The running job reached its time limit: it is to be killed, ending TIMEOUT."""
        job = replace(self.jobs[job_id], kill_reason=KillCause.TIMEOUT)
        self.put(job)
        return job

    def next_step(self, job_id: int) -> int:
        """A new step number of the running job (srun inside it)."""
        job = self.jobs[job_id]
        number = job.next_step or 0
        self.put(replace(job, next_step=number + 1))
        return number

    def completing(self, job_id: int, final_state: JobState, exit_code: int, signal: int,
                   launch_error: str | None = None, requeue: bool | None = None) -> Job | None:
        """The job's processes are gone: COMPLETING until its sockets are released. Records
        a launch error and, for a node failure at launch, whether it goes back to the queue.
        None if the job was not running."""
        job = self.jobs.get(job_id)
        if job is None or not job.holds_resources:
            return None
        job = replace(job, final_state=final_state, exit_code=exit_code, exit_signal=signal,
                      end_time=self.now(), state=JobState.COMPLETING,
                      launch_error=launch_error or job.launch_error,
                      requeue_pending=job.requeue_pending if requeue is None else requeue)
        self.put(job)
        return job

    def release(self, job_id: int) -> Job:
        """Resources released: the job reaches its final state (or PENDING again if requeued)."""
        job = self.jobs[job_id]
        self._give_back(job)
        final = job.final_state or JobState.COMPLETED
        if job.requeue_pending:
            job = self.requeued(job, hold=bool(job.requeue_hold))
        else:
            job = replace(job, state=final, requeue_pending=None,
                          reason=end_reason(final, job.exit_code or 0, job.exit_signal or 0))
        job = replace(job, final_state=None)
        self.put(job)
        return job

    def requeued(self, job: Job, hold: bool = False) -> Job:
        """``job`` queued again (a new run: restarts + 1), held if ``hold``; not yet put."""
        job = replace(job, restarts=job.restarts + 1, state=JobState.PENDING, alloc=None,
                      start_time=None, end_time=None, exit_code=None, exit_signal=None,
                      batch_host=None, cancelled_by=None, kill_reason=None,
                      requeue_at=self.now() + 1.0, reason=Reason.BEGIN_TIME,
                      requeue_pending=None, requeue_hold=None)
        if hold:
            job = replace(job, held="user", priority=0, reason=Reason.JOB_HELD_USER,
                          priority_before_hold=job.priority_before_hold or job.priority)
        return job

    @staticmethod
    def final_state_for(job: Job, returncode: int) -> tuple[JobState, int, int]:
        """(state, exit code, signal) of a batch script that ended with ``returncode``
        (negative = killed by that signal), given why it may have been killed."""
        code, sig = (0, -returncode) if returncode < 0 else (returncode, 0)
        if code > 128 and job.kill_reason:
            code, sig = 0, code - 128  # the shell reported a child killed by a signal
        killed = {KillCause.TIMEOUT: JobState.TIMEOUT, KillCause.CANCEL: JobState.CANCELLED,
                  KillCause.NODE_FAIL: JobState.NODE_FAIL}.get(job.kill_reason)
        if killed is not None:
            return killed, code, sig
        if code == 0 and sig == 0:
            return JobState.COMPLETED, 0, 0
        return JobState.FAILED, code, sig

    # -- naming jobs -----------------------------------------------------------------------
    def resolve_ids(self, token: str) -> list[Job]:
        """Jobs named by ``12``, ``12_3``, ``12_[1-3]`` (an array id names all its tasks)."""
        from sn40l.scheduler.request import parse_array

        token = token.strip()
        try:
            if "_" in token:
                base, _, tasks = token.partition("_")
                if tasks.startswith("[") and tasks.endswith("]"):
                    wanted = set(parse_array(tasks[1:-1]).indices)
                else:
                    wanted = {int(tasks)}
                return [t for t in self.array_tasks(int(base)) if t.array_task_id in wanted]
            job_id = int(token)
        except (ValueError, SubmitError):
            raise RequestError("Invalid job id specified", "InvalidJobId") from None
        job = self.lookup(job_id)
        if job is None:
            return []
        if job.array_job_id == job_id:
            return self.array_tasks(job_id)
        return [job]

    def jobs_for(self, token: str) -> list[Job]:
        jobs = self.resolve_ids(token)
        if not jobs:
            raise RequestError("Invalid job id specified", "InvalidJobId")
        return jobs

    # -- nodes -----------------------------------------------------------------------------
    def set_node(self, who: Who, names: list[str], state: str, reason: str | None) -> None:
        """scontrol update NodeName=... State=DOWN|DRAIN|RESUME|UNDRAIN|IDLE Reason=..."""
        if not who.is_admin:
            raise RequestError("Access/permission denied", "Permission")
        s = state.lower()
        unknown = [n for n in names if n not in self.nodes]
        if unknown:
            raise RequestError(f"Invalid node name specified: {','.join(unknown)}", "Invalid")
        if s in ("down", "drain") and not reason:
            raise RequestError("You must specify a reason when DOWNING or DRAINING a node. "
                               "Request denied", "Invalid")
        for n in names:
            node = self.nodes[n]
            if s in ("down", "drain"):
                node.admin, node.reason, node.since = s, reason, self.now()
                self.store.set_node_state(n, s, reason, node.since)
            elif s in ("resume", "idle", "undrain"):
                if node.not_responding:
                    raise RequestError(f"node {n} is not responding (its sockets are down); "
                                       "it can be resumed once they answer again", "NotReady")
                node.admin, node.reason, node.since = None, None, None
                self.store.set_node_state(n, None, None, None)
            else:
                raise RequestError(f"Invalid node state specified: {state}; allowed: DOWN, "
                                   "DRAIN, RESUME, UNDRAIN, IDLE", "Invalid")

    def node_failed(self, name: str, reason: str) -> list[Job]:
        """A node's sockets stopped answering: DOWN*, and its running jobs NODE_FAIL (returned
        to be killed; requeued after, when their --requeue allows)."""
        node = self.nodes[name]
        if node.not_responding:
            return []
        node.not_responding = True
        node.reason = reason
        node.since = self.now()
        self.store.set_node_state(name, "down", reason, node.since)
        node.admin = "down"
        victims = [replace(j, kill_reason=KillCause.NODE_FAIL, requeue_pending=j.req.requeue)
                   for j in map(self.jobs.get, list(node.jobs))
                   if j is not None and j.state == JobState.RUNNING]
        self.put(*victims)
        return victims

    def node_recovered(self, name: str) -> None:
        """The node's sockets answer again; it stays DOWN until an admin resumes it."""
        self.nodes[name].not_responding = False

    def node_rows(self) -> list[dict]:
        """The nodes as sinfo's client reads them."""
        return [node.row(any(self.jobs[j].state == JobState.COMPLETING for j in node.jobs
                             if j in self.jobs),
                         [p.name for p in self.partitions.values() if node.name in p.nodes])
                for node in self.nodes.values()]

    def partition_rows(self) -> list[dict]:
        return [p.row() for p in self.partitions.values()]

    # -- views -----------------------------------------------------------------------------
    @staticmethod
    def visible(who: Who, job: Job) -> bool:
        return who.is_admin or job.uid == who.uid

    def expire(self) -> None:
        """Forget (from memory, not the database) jobs finished more than MinJobAge ago."""
        cutoff = self.now() - MIN_JOB_AGE_S
        for job_id in [j for j, job in self.jobs.items()
                       if job.is_final and (job.end_time or 0) < cutoff]:
            del self.jobs[job_id]

