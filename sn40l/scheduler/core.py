"""The scheduler's state machine: jobs, nodes, partitions, allocation and backfill. Ray-free.

:class:`SchedulerCore` holds the active jobs in memory, writes every change through to the
:class:`~sn40l.scheduler.store.Store`, and answers the requests of the Slurm commands. It does
not start processes or talk to sockets: :mod:`sn40l.scheduler.controller` launches what
:meth:`SchedulerCore.schedule` allocates and reports back (:meth:`finished`, :meth:`node_failed`).

Scheduling follows Slurm's priority FIFO with backfill: pending jobs are taken in priority order
(submission order; array tasks share their array's priority); each either starts now on free
resources or gets a reservation at the earliest time the running jobs' time limits free enough
resources for it. A lower-priority job starts now only if it fits around every reservation
(conservative backfill). The first job in a partition that must wait is pending for
``Resources``, the ones behind it for ``Priority``.

Resources per node: CPUs (the host's cores), RDU sockets (``--gres=rdu:N``, per node as in
Slurm) and memory when ``--mem`` is given. A node is ``alloc`` when its CPUs are all allocated
(or an exclusive job holds it), ``mix`` when some are, as Slurm reports it.
"""

from __future__ import annotations

import pwd
import time
from dataclasses import dataclass, field

from sn40l.errors import SchedulerError
from sn40l.scheduler import backfill, hostlist
from sn40l.scheduler.job import Job, tasks_per_node
from sn40l.scheduler.request import SubmitError, parse_dependency
from sn40l.scheduler.store import Store, job_from_record
from sn40l.scheduler.types import FINAL_STATES, DepKind, DepStatus, JobState, KillCause, Reason

BASE_PRIORITY = 4294901760  # priority/basic: the first job gets the highest, then one less each
BF_MAX_JOB_TEST = 100  # pending jobs the backfill pass considers (Slurm's bf_max_job_test)
MIN_JOB_AGE_S = 300  # finished jobs stay visible to squeue this long (Slurm's MinJobAge)


class RequestError(SchedulerError):
    """A request refused by the controller; ``str`` is Slurm's text (e.g. "Invalid job id
    specified"), ``code`` a stable name for clients."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


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


@dataclass
class Partition:
    """A partition: its nodes and limits (None = UNLIMITED)."""

    name: str
    nodes: list[str]
    default: bool = False
    max_time: int | None = None
    default_time: int | None = None
    max_nodes: int | None = None
    state: str = "UP"


@dataclass
class NodeInfo:
    """A node's capacity, allocation and state."""

    name: str
    index: int
    cpus: int
    rdus: int
    mem_mb: int
    admin: str | None = None  # "down" | "drain" | None
    reason: str | None = None
    since: float | None = None
    not_responding: bool = False
    cpus_used: int = 0
    sockets_used: set = field(default_factory=set)
    mem_used: int = 0
    exclusive: int | None = None
    jobs: set = field(default_factory=set)

    @property
    def usable(self) -> bool:
        return self.admin is None and not self.not_responding

    def state(self, completing: bool = False) -> str:
        """Slurm's long node state: IDLE, MIXED, ALLOCATED, DOWN, DRAINED, DRAINING, ..."""
        if self.admin == "down" or self.not_responding:
            return "DOWN*" if self.not_responding else "DOWN"
        if self.admin == "drain":
            return "DRAINING" if self.jobs else "DRAINED"
        if completing:
            return "COMPLETING"
        if not self.jobs:
            return "IDLE"
        if self.exclusive is not None or self.cpus_used >= self.cpus:
            return "ALLOCATED"
        return "MIXED"


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
        self.jobs: dict[int, dict] = {}
        self._running_typed: dict[int, tuple[tuple, Job]] = {}
        self.recover()

    # -- persistence -----------------------------------------------------------------------
    def recover(self) -> None:
        """Load node admin states and every active job (plus recently finished ones)."""
        for name, st in self.store.node_states().items():
            if name in self.nodes:
                node = self.nodes[name]
                node.admin, node.reason, node.since = st["state"], st["reason"], st["since"]
        for job in self.store.active_jobs() + self.store.finished_since(
                self.now() - MIN_JOB_AGE_S):
            self.jobs[job["id"]] = job
            if job["state"] in ("RUNNING", "COMPLETING") and job.get("alloc"):
                self._take(job)

    def _save(self, *jobs: dict) -> None:
        self.store.put_jobs(list(jobs))

    # -- allocation bookkeeping ------------------------------------------------------------
    def _take(self, job: dict) -> None:
        for name, a in job["alloc"].items():
            node = self.nodes[name]
            node.cpus_used += a["cpus"]
            node.sockets_used |= set(a["sockets"])
            node.mem_used += a["mem"]
            node.jobs.add(job["id"])
            if job["req"].get("exclusive"):
                node.exclusive = job["id"]

    def _give_back(self, job: dict) -> None:
        for name, a in (job.get("alloc") or {}).items():
            node = self.nodes[name]
            if job["id"] not in node.jobs:
                continue
            node.cpus_used -= a["cpus"]
            node.sockets_used -= set(a["sockets"])
            node.mem_used -= a["mem"]
            node.jobs.discard(job["id"])
            if node.exclusive == job["id"]:
                node.exclusive = None

    # -- per-node need of a job ------------------------------------------------------------
    def _need(self, job: dict) -> tuple[int, int, int]:
        """(cpus, rdus, mem MB) the job needs on each of its nodes."""
        req = job["req"]
        n = max(1, req["nodes"])
        tasks = tasks_per_node(n, req["ntasks"], req.get("ntasks_per_node"))
        cpus = tasks * (req.get("cpus_per_task") or 1)
        mem = req.get("mem_mb") or (req.get("mem_per_cpu_mb") or 0) * cpus
        return cpus, req.get("gres_rdu", 0), mem

    def _candidates(self, job: dict) -> list[NodeInfo]:
        req = job["req"]
        part = self.partitions[job["partition"]]
        exclude = set(req.get("exclude") or ())
        return [self.nodes[n] for n in part.nodes if n not in exclude]

    def _fits_shape(self, job: dict) -> str | None:
        """Why the job can never run on this cluster (Slurm's submit-time refusal), or None."""
        cpus, rdus, mem = self._need(job)
        req = job["req"]
        cands = self._candidates(job)
        ok = [n for n in cands if n.cpus >= cpus and n.rdus >= rdus and n.mem_mb >= mem]
        wanted = req.get("nodelist") or []
        if any(w not in self.nodes for w in wanted):
            return "Invalid node name specified"
        if any(w not in {n.name for n in ok} for w in wanted) or len(ok) < req["nodes"] \
                or len(wanted) > req["nodes_max"]:
            return "Requested node configuration is not available"
        return None

    # -- submission ------------------------------------------------------------------------
    def submit(self, req: dict, who: Who) -> dict:
        """Create the job (or array tasks) of a request; return ``{"job_id": first}`` or, for
        ``test_only``, the estimated start."""
        now = self.now()
        partition = req.get("partition") or self.default_partition
        if partition not in self.partitions:
            raise RequestError("Invalid partition name specified", "InvalidPartition")
        base = {"state": "PENDING", "reason": "None", "uid": who.uid, "gid": who.gid,
                "user": who.user, "name": req["name"], "partition": partition,
                "submit_time": now, "eligible_time": None, "start_time": None,
                "end_time": None, "req": {k: v for k, v in req.items()
                                          if k not in ("parsable", "test_only", "wait", "quiet")},
                "alloc": None, "exit_code": None, "restarts": 0, "held": None,
                "array_job_id": None, "array_task_id": None, "cancelled_by": None}
        part = self.partitions[partition]
        limit = req.get("time_limit")
        if not req.get("time_set") and part.default_time is not None:
            limit = part.default_time
        elif not req.get("time_set"):
            limit = part.max_time
        base["time_limit"] = limit
        probe = dict(base, id=0)
        why = self._fits_shape(probe)
        if why:
            raise RequestError(why, "NodeConfig")
        if req.get("dependency"):
            _, deps = parse_dependency(req["dependency"])
            for dep in deps:
                if dep.kind != "singleton" and self._lookup(dep.job) is None:
                    raise RequestError("Job dependency problem", "Dependency")
        if req.get("test_only"):
            start, nodes = self._estimate(probe, now)
            cpus, _, _ = self._need(probe)
            # Slurm gives the probe a job id of its own (the next submission gets the one after)
            return {"test_only": True, "start": start, "nodes": nodes, "partition": partition,
                    "cpus": cpus * len(nodes), "job_id": self.store.next_job_id()}
        indices = req.get("array")
        count = len(indices) if indices else 1
        first = self.store.peek_job_id()
        prio = BASE_PRIORITY - first - int(req.get("nice") or 0)
        jobs = []
        for k in range(count):
            job = dict(base, id=first + k, priority=prio)
            job["req"] = dict(base["req"])  # tasks are updated one by one (scontrol update)
            if indices:
                job["array_job_id"] = first
                job["array_task_id"] = indices[k]
                job["array_throttle"] = req.get("array_throttle") or 0
            if req.get("hold"):
                job["held"] = "user"
                job["priority_before_hold"] = prio
                job["priority"] = 0
                job["reason"] = "JobHeldUser"
            jobs.append(job)
        self.store.put_jobs(jobs, next_job_id=first + count)
        for job in jobs:
            self.jobs[job["id"]] = job
        return {"job_id": first, "count": count}

    def _lookup(self, job_id: int) -> dict | None:
        job = self.jobs.get(job_id)
        return job if job is not None else self.store.get_job(job_id)

    # -- dependencies ----------------------------------------------------------------------
    def _dep_status(self, job: dict) -> str:
        """'ok', 'wait' or 'never' for the job's --dependency."""
        text = job["req"].get("dependency")
        if not text:
            return "ok"
        mode, deps = parse_dependency(text)
        results = [self._term_status(job, d) for d in deps]
        if mode == "all":
            if "never" in results:
                return "never"
            return "ok" if all(r == "ok" for r in results) else "wait"
        if "ok" in results:
            return "ok"
        return "never" if all(r == "never" for r in results) else "wait"

    def dependency_text(self, job: dict) -> str:
        """Dependency= as scontrol shows it: the terms not yet satisfied, each marked
        ``(unfulfilled)`` or ``(failed)`` (``afterok:12(unfulfilled),afterok:13(failed)``);
        ``(null)`` when none is left."""
        text = job["req"].get("dependency")
        if not text:
            return "(null)"
        mode, deps = parse_dependency(text)
        shown = []
        for dep in deps:
            status = self._term_status(job, dep)
            if status == DepStatus.OK:
                continue
            mark = "failed" if status == DepStatus.NEVER else "unfulfilled"
            if dep.kind == DepKind.SINGLETON:
                shown.append(f"singleton({mark})")
                continue
            ref = str(dep.job) + (f"_{dep.task}" if dep.task is not None else "")
            ref += f"+{dep.delay_min}" if dep.delay_min else ""
            shown.append(f"{dep.kind}:{ref}({mark})")
        return ("?" if mode == "any" else ",").join(shown) or "(null)"

    def _term_status(self, job: dict, dep) -> str:
        if dep.kind == "singleton":
            for other in self.jobs.values():
                if (other["id"] != job["id"] and other["uid"] == job["uid"]
                        and other["name"] == job["name"] and other["id"] < job["id"]
                        and other["state"] not in FINAL_STATES):
                    return "wait"
            return "ok"
        targets = self._dep_targets(dep, job)
        if not targets:
            return "never"
        statuses = []
        for t in targets:
            state = t["state"]
            if dep.kind == "after":
                started = t.get("start_time") or state in FINAL_STATES
                if started and dep.delay_min:
                    since = t.get("start_time") or t.get("end_time") or 0
                    started = self.now() >= since + dep.delay_min * 60
                statuses.append("ok" if started else "wait")
            elif state not in FINAL_STATES:
                statuses.append("wait")
            elif dep.kind == "afterany":
                statuses.append("ok")
            elif dep.kind in ("afterok", "aftercorr"):
                statuses.append("ok" if state == "COMPLETED" else "never")
            elif dep.kind == "afternotok":
                statuses.append("never" if state == "COMPLETED" else "ok")
        if "never" in statuses:
            return "never"
        return "ok" if all(s == "ok" for s in statuses) else "wait"

    def _dep_targets(self, dep, job: dict) -> list[dict]:
        target = self._lookup(dep.job)
        if target is None:
            return []
        array_id = target.get("array_job_id")
        if array_id is None:
            return [target]
        tasks = [self._lookup(j["id"]) or j for j in self.store.array_tasks(array_id)]
        if dep.kind == "aftercorr" and job.get("array_task_id") is not None:
            return [t for t in tasks if t["array_task_id"] == job["array_task_id"]]
        if dep.task is not None:
            return [t for t in tasks if t["array_task_id"] == dep.task]
        if dep.job == array_id:
            return tasks
        return [target]

    # -- scheduling ------------------------------------------------------------------------
    def _array_running(self) -> dict[int, int]:
        """Running tasks per array job (for %N throttles), counted once per pass."""
        counts: dict[int, int] = {}
        for j in self.jobs.values():
            if j.get("array_job_id") is not None and j["state"] in ("RUNNING", "COMPLETING"):
                counts[j["array_job_id"]] = counts.get(j["array_job_id"], 0) + 1
        return counts

    def _pending_reason(self, job: dict, now: float) -> str | None:
        """Why a pending job may not be considered now (the %N throttle aside), or None."""
        if job["held"]:
            return "JobHeldAdmin" if job["held"] == "admin" else "JobHeldUser"
        begin = job["req"].get("begin")
        if begin and begin > now:
            return "BeginTime"
        if job.get("requeue_at") and job["requeue_at"] > now:
            return "BeginTime"
        dep = self._dep_status(job)
        if dep == "never":
            return "DependencyNeverSatisfied"
        if dep == "wait":
            return "Dependency"
        part = self.partitions[job["partition"]]
        if part.max_nodes is not None and job["req"]["nodes"] > part.max_nodes:
            return "PartitionNodeLimit"
        if part.max_time is not None and (job["time_limit"] is None
                                          or job["time_limit"] > part.max_time):
            return "PartitionTimeLimit"
        if part.state != "UP":
            return "PartitionDown"
        wanted = job["req"].get("nodelist") or []
        bad = [w for w in wanted if not self.nodes[w].usable]
        if bad:
            return f"ReqNodeNotAvail, UnavailableNodes:{hostlist.compress(bad)}"
        return None

    @staticmethod
    def _throttled(job: dict, array_running: dict[int, int]) -> bool:
        """Whether the job's array already runs as many tasks as its ``%N`` allows."""
        throttle = job.get("array_throttle") or 0
        return bool(throttle) and array_running.get(job["array_job_id"], 0) >= throttle

    def _order(self) -> list[dict]:
        pending = [j for j in self.jobs.values() if j["state"] == "PENDING"]
        pending.sort(key=lambda j: (-j["priority"], j.get("array_job_id") or j["id"],
                                    j.get("array_task_id") or 0, j["id"]))
        return pending

    def schedule(self) -> list[dict]:
        """One scheduling pass. Starts what can start (state RUNNING with its allocation, to be
        launched by the caller) and updates the reasons of the rest. Returns the started jobs.
        Which jobs start is :func:`sn40l.scheduler.backfill.plan`'s decision."""
        now = self.now()
        changed: list[dict] = []
        eligible: list[dict] = []
        for job in self._order():
            reason = self._pending_reason(job, now)
            if reason is None:
                eligible.append(job)
            elif job["reason"] != reason:
                job["reason"] = reason
                changed.append(job)
        if not eligible:
            if changed:
                self._save(*changed)
            return []
        counts = self._array_running()
        pulled: set[int] = set()  # the jobs the planner looked at

        def typed():
            for job in eligible:
                pulled.add(job["id"])
                yield job_from_record(job)

        result = backfill.plan(typed(), self._typed_running(),
                               self._capacities(), now, self._partition_nodes(), counts,
                               BF_MAX_JOB_TEST)
        started: list[dict] = []
        for job in eligible:
            if job["id"] in pulled and (job["id"] in result.start
                                  or result.reasons[job["id"]] != Reason.JOB_ARRAY_TASK_LIMIT):
                if job.get("eligible_time") is None:
                    job["eligible_time"] = now  # considered by this pass
            if job["id"] in result.start:
                self._start(job, [self.nodes[n] for n in result.start[job["id"]]], now)
                started.append(job)
                if job.get("array_job_id") is not None:
                    counts[job["array_job_id"]] = counts.get(job["array_job_id"], 0) + 1
                continue
            reason = result.reasons.get(job["id"])
            if reason is None:  # beyond bf_max_job_test
                reason = (Reason.JOB_ARRAY_TASK_LIMIT if self._throttled(job, counts)
                          else Reason.PRIORITY)
            if job["reason"] != reason:
                job["reason"] = reason
                changed.append(job)
        if changed or started:
            self._save(*changed, *started)
        return started

    def _typed_running(self) -> list[Job]:
        """The jobs holding resources, typed; kept between passes while what the planner
        reads of them (start, time limit, allocation) stays the same."""
        out = []
        cache = self._running_typed
        for job in self.running():
            key = (job["start_time"], job["time_limit"], job.get("restarts"), job["state"])
            hit = cache.get(job["id"])
            if hit is None or hit[0] != key:
                hit = cache[job["id"]] = (key, job_from_record(job))
            out.append(hit[1])
        if len(cache) > 2 * len(out) + 64:  # forget jobs that ended
            alive = {j.id for j in out}
            for job_id in [i for i in cache if i not in alive]:
                del cache[job_id]
        return out

    def _capacities(self) -> list[backfill.NodeCapacity]:
        return [backfill.NodeCapacity(n.name, n.cpus, n.rdus, n.mem_mb, n.usable)
                for n in self.nodes.values()]

    def _partition_nodes(self) -> dict[str, list[str]]:
        return {p.name: p.nodes for p in self.partitions.values()}

    def _estimate(self, job: dict, now: float) -> tuple[float, list[str]]:
        """When and where ``job`` would start behind everything already queued (--test-only)."""
        counts = self._array_running()
        pending = [job_from_record(o) for o in self._order()
                   if self._pending_reason(o, now) is None and not self._throttled(o, counts)]
        start, nodes = backfill.estimate(
            job_from_record(job), pending, self._typed_running(),
            self._capacities(), now, self._partition_nodes())
        return start, list(nodes)

    def _start(self, job: dict, nodes: list[NodeInfo], now: float) -> None:
        cpus, rdus, mem = self._need(job)
        alloc = {}
        excl = job["req"].get("exclusive")
        for node in nodes:
            free = [s for s in range(node.rdus) if s not in node.sockets_used]
            take = free if excl else free[:rdus]
            alloc[node.name] = {"cpus": node.cpus if excl else cpus, "sockets": take,
                                "mem": node.mem_mb if excl else mem}
        job.update(state="RUNNING", reason="None", start_time=now, alloc=alloc,
                   batch_host=nodes[0].name, end_time=None, exit_code=None, kill_reason=None)
        self._take(job)

    # -- job life --------------------------------------------------------------------------
    def running(self) -> list[dict]:
        return [j for j in self.jobs.values() if j["state"] in ("RUNNING", "COMPLETING")]

    def completing(self, job: dict, final_state: str, exit_code: int, signal: int) -> None:
        """The job's processes are gone: COMPLETING until its sockets are released."""
        if job["state"] not in ("RUNNING", "COMPLETING"):
            return
        job["final_state"] = final_state
        job["exit_code"] = exit_code
        job["exit_signal"] = signal
        job["end_time"] = self.now()
        job["state"] = "COMPLETING"
        self._save(job)

    def release(self, job: dict) -> None:
        """Resources released: the job reaches its final state (or PENDING again if requeued)."""
        self._give_back(job)
        final = job.pop("final_state", None) or "COMPLETED"
        if job.pop("requeue_pending", False):
            self._requeue(job, hold=job.pop("requeue_hold", False))
        else:
            job["state"] = final
            job["reason"] = end_reason(final, job.get("exit_code") or 0,
                                       job.get("exit_signal") or 0)
        self._save(job)

    def _requeue(self, job: dict, hold: bool = False) -> None:
        job["restarts"] = job.get("restarts", 0) + 1
        job.update(state="PENDING", alloc=None, start_time=None, end_time=None,
                   exit_code=None, exit_signal=None, batch_host=None, cancelled_by=None,
                   kill_reason=None, requeue_at=self.now() + 1.0)
        job["reason"] = "BeginTime"
        if hold:
            job["held"] = "user"
            job["priority_before_hold"] = job.get("priority_before_hold") or job["priority"]
            job["priority"] = 0
            job["reason"] = "JobHeldUser"

    def final_state_for(self, job: dict, returncode: int) -> tuple[str, int, int]:
        """(state, exit code, signal) of a batch script that ended with ``returncode``
        (negative = killed by that signal), given why it may have been killed."""
        code, sig = (0, -returncode) if returncode < 0 else (returncode, 0)
        if code > 128 and job.get("kill_reason"):
            code, sig = 0, code - 128  # the shell reported a child killed by a signal
        why = job.get("kill_reason")
        if why == "timeout":
            return "TIMEOUT", code, sig
        if why == "cancel":
            return "CANCELLED", code, sig
        if why == "node_fail":
            return "NODE_FAIL", code, sig
        if code == 0 and sig == 0:
            return "COMPLETED", 0, 0
        return "FAILED", code, sig

    # -- user requests ---------------------------------------------------------------------
    def _resolve_ids(self, token: str) -> list[dict]:
        """Jobs named by ``12``, ``12_3``, ``12_[1-3]`` (an array id names all its tasks)."""
        token = token.strip()
        try:
            if "_" in token:
                base, _, tasks = token.partition("_")
                array_id = int(base)
                if tasks.startswith("[") and tasks.endswith("]"):
                    from sn40l.scheduler.request import parse_array

                    wanted = set(parse_array(tasks[1:-1]).indices)
                else:
                    wanted = {int(tasks)}
                found = [self._lookup(t["id"]) or t for t in self.store.array_tasks(array_id)
                         if t["array_task_id"] in wanted]
                return found
            job_id = int(token)
        except (ValueError, SubmitError):
            raise RequestError("Invalid job id specified", "InvalidJobId") from None
        job = self._lookup(job_id)
        if job is None:
            return []
        if job.get("array_job_id") == job_id:
            return [self._lookup(t["id"]) or t for t in self.store.array_tasks(job_id)]
        return [job]

    def jobs_for(self, token: str) -> list[dict]:
        jobs = self._resolve_ids(token)
        if not jobs:
            raise RequestError("Invalid job id specified", "InvalidJobId")
        return jobs

    @staticmethod
    def _may_modify(who: Who, job: dict) -> bool:
        return who.is_admin or who.uid == job["uid"]

    def cancel(self, who: Who, tokens: list[str], user: str | None = None,
               name: str | None = None, states: list[str] | None = None,
               partition: str | None = None, signal: int | None = None) -> dict:
        """scancel: pending jobs end CANCELLED now; running ones are returned to be killed.

        Returns ``{"errors": [msg...], "kill": [job...], "signal": [job...]}``."""
        errors: list[str] = []
        targets: list[dict] = []
        if tokens:
            for tok in tokens:
                try:
                    jobs = self._resolve_ids(tok)
                except RequestError:
                    errors.append(f"Invalid job id {tok}")
                    continue
                # Slurm 22.05's scancel says nothing (exit 0) for an id it does not know
                denied = [j for j in jobs if not self._may_modify(who, j)]
                if denied:
                    errors.append(f"Kill job error on job id {tok}: Access/permission denied")
                    continue
                targets += jobs
        else:
            targets = [j for j in self.jobs.values() if j["state"] not in FINAL_STATES]
            if not who.is_admin and user is None:
                user = who.user
        if user is not None:
            targets = [j for j in targets if j["user"] == user]
            if not who.is_admin and user != who.user:
                errors.append(f"Access/permission denied for jobs of user {user}")
                targets = []
        if name is not None:
            targets = [j for j in targets if j["name"] == name]
        if partition is not None:
            targets = [j for j in targets if j["partition"] == partition]
        if states:
            targets = [j for j in targets if j["state"] in states]
        kill, sig, done = [], [], []
        for job in targets:
            if job["state"] in FINAL_STATES:
                continue  # Slurm 22.05: finished jobs are skipped without a message
            if signal is not None:
                if job["state"] == "RUNNING":
                    sig.append(job)
                continue
            if job["state"] == "PENDING":
                job.update(state="CANCELLED", end_time=self.now(), reason="None",
                           exit_code=0, exit_signal=0, cancelled_by=who.uid)
                done.append(job)
            elif job["state"] == "RUNNING":
                job["kill_reason"] = "cancel"
                job["cancelled_by"] = who.uid
                job["requeue_pending"] = False
                kill.append(job)
        if done or kill:
            self._save(*done, *kill)
        return {"errors": errors, "kill": kill, "signal": sig}

    def _modifiable(self, who: Who, tokens: list[str], errors: list[str]):
        """The jobs named by ``tokens`` that ``who`` may modify; the rest become errors."""
        for tok in tokens:
            try:
                jobs = self.jobs_for(tok)
            except RequestError as exc:
                errors.append(f"Invalid job id specified for job {tok}" if exc.code ==
                              "InvalidJobId" else str(exc))
                continue
            for job in jobs:
                if self._may_modify(who, job):
                    yield job
                else:
                    errors.append(f"Access/permission denied for job {_display_id(job)}")

    def hold(self, who: Who, tokens: list[str], release: bool = False) -> list[str]:
        errors: list[str] = []
        changed = []
        for job in self._modifiable(who, tokens, errors):
            if job["state"] != "PENDING":
                errors.append(f"Job is no longer pending execution for job "
                              f"{_display_id(job)}")
                continue
            if release:
                if job["held"] == "admin" and not who.is_admin:
                    errors.append(f"Access/permission denied for job {_display_id(job)}")
                    continue
                if job["held"]:
                    job["priority"] = job.pop("priority_before_hold", job["priority"]) or (
                        BASE_PRIORITY - (job.get("array_job_id") or job["id"]))
                    job["held"] = None
                    job["reason"] = "None"
            else:
                if not job["held"]:
                    job["priority_before_hold"] = job["priority"]
                job["held"] = "user" if who.uid == job["uid"] else "admin"
                job["priority"] = 0
                job["reason"] = "JobHeldUser" if job["held"] == "user" else "JobHeldAdmin"
            changed.append(job)
        if changed:
            self._save(*changed)
        return errors

    def requeue(self, who: Who, tokens: list[str], hold: bool = False) -> tuple[list[str],
                                                                                list[dict]]:
        """scontrol requeue[hold]: running jobs are killed and go back to PENDING; finished
        batch jobs are queued again. Returns (errors, jobs to kill)."""
        errors: list[str] = []
        kill, changed = [], []
        for job in self._modifiable(who, tokens, errors):
            if job["state"] == "RUNNING":
                job["kill_reason"] = "requeue"
                job["requeue_pending"] = True
                job["requeue_hold"] = hold
                kill.append(job)
            elif job["state"] in FINAL_STATES:
                self.jobs[job["id"]] = job
                self._requeue(job, hold)
                changed.append(job)
            else:
                errors.append(f"Job is pending execution for job {_display_id(job)}")
        if kill or changed:
            self._save(*kill, *changed)
        return errors, kill

    def update_job(self, who: Who, token: str, fields: dict[str, str]) -> None:
        """scontrol update JobId=...: TimeLimit, JobName, Partition, NumNodes, Dependency,
        Nice, Priority (admin), Comment, StartTime (begin)."""
        from sn40l.scheduler.timespec import parse_begin, parse_time_limit

        jobs = self.jobs_for(token)
        for job in jobs:
            if not self._may_modify(who, job):
                raise RequestError("Access/permission denied", "Permission")
        for job in jobs:
            for key, value in fields.items():
                k = key.lower()
                if k == "timelimit":
                    try:
                        limit = parse_time_limit(value)
                    except ValueError:
                        raise RequestError(f"Invalid TimeLimit value: {value}",
                                           "InvalidValue") from None
                    if not who.is_admin and job["state"] != "PENDING" and (
                            limit is None or (job["time_limit"] is not None
                                              and limit > job["time_limit"])):
                        raise RequestError("Access/permission denied (only an administrator "
                                           "may raise the time limit of a started job)",
                                           "Permission")
                    job["time_limit"] = limit
                    job["req"]["time_set"] = True
                elif k in ("jobname", "name"):
                    job["name"] = value
                elif k == "partition":
                    if value not in self.partitions:
                        raise RequestError("Invalid partition name specified", "Invalid")
                    self._pending_only(job, key)
                    job["partition"] = value
                elif k in ("numnodes", "minnodes"):
                    self._pending_only(job, key)
                    n = _int_value(value.split("-")[0], "Invalid numeric value \"{}\" for "
                                   "requested node count.", value, lo=1)
                    job["req"]["nodes"] = job["req"]["nodes_max"] = n
                    job["req"]["ntasks"] = max(job["req"]["ntasks"], n)
                elif k == "dependency":
                    self._pending_only(job, key)
                    if value in ("", "none", "None"):
                        job["req"]["dependency"] = None
                    else:
                        parse_dependency(value)
                        job["req"]["dependency"] = value
                elif k == "nice":
                    nice = _int_value(value, "Invalid Nice value: {}", value, lo=-2147483645)
                    job["priority"] -= nice - int(job["req"].get("nice") or 0)
                    job["req"]["nice"] = nice
                elif k == "priority":
                    if not who.is_admin:
                        raise RequestError("Access/permission denied", "Permission")
                    job["priority"] = _int_value(value, "Invalid Priority value: {}", value)
                elif k == "comment":
                    job["req"]["comment"] = value
                elif k in ("starttime", "begintime"):
                    self._pending_only(job, key)
                    try:
                        job["req"]["begin"] = parse_begin(value)
                    except ValueError:
                        raise RequestError(f"Invalid StartTime value {value!r}",
                                           "Invalid") from None
                else:
                    raise RequestError(f"Update of {key} is not supported; supported: "
                                       "TimeLimit, JobName, Partition, NumNodes, Dependency, "
                                       "Nice, Priority, Comment, StartTime", "Invalid")
        self._save(*jobs)

    @staticmethod
    def _pending_only(job: dict, key: str) -> None:
        if job["state"] != "PENDING":
            raise RequestError(f"Job is no longer pending execution (cannot change {key})",
                               "NotPending")

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

    def node_failed(self, name: str, reason: str) -> list[dict]:
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
        victims = []
        for job_id in list(node.jobs):
            job = self.jobs.get(job_id)
            if job and job["state"] == "RUNNING":
                job["kill_reason"] = "node_fail"
                job["requeue_pending"] = bool(job["req"].get("requeue", True))
                victims.append(job)
        if victims:
            self._save(*victims)
        return victims

    def node_recovered(self, name: str) -> None:
        """The node's sockets answer again; it stays DOWN until an admin resumes it."""
        self.nodes[name].not_responding = False

    # -- views -----------------------------------------------------------------------------
    def visible(self, who: Who, job: dict) -> bool:
        return who.is_admin or job["uid"] == who.uid

    def expire(self) -> None:
        """Forget (from memory, not the database) jobs finished more than MinJobAge ago."""
        cutoff = self.now() - MIN_JOB_AGE_S
        for job_id in [j for j, job in self.jobs.items()
                       if job["state"] in FINAL_STATES and (job["end_time"] or 0) < cutoff]:
            del self.jobs[job_id]

    def node_rows(self) -> list[dict]:
        rows = []
        for node in self.nodes.values():
            completing = any(self.jobs[j]["state"] == "COMPLETING" for j in node.jobs
                             if j in self.jobs)
            rows.append({"name": node.name, "state": node.state(completing),
                         "cpus": node.cpus, "cpus_alloc": node.cpus_used, "rdus": node.rdus,
                         "rdus_alloc": len(node.sockets_used), "mem_mb": node.mem_mb,
                         "mem_alloc": node.mem_used, "reason": node.reason,
                         "since": node.since, "jobs": sorted(node.jobs),
                         "partitions": [p.name for p in self.partitions.values()
                                        if node.name in p.nodes]})
        return rows

    def partition_rows(self) -> list[dict]:
        return [{"name": p.name, "nodes": p.nodes, "default": p.default,
                 "max_time": p.max_time, "default_time": p.default_time,
                 "max_nodes": p.max_nodes, "state": p.state}
                for p in self.partitions.values()]


def end_reason(state: str, exit_code: int, signal_num: int) -> Reason:
    """Reason= of a finished job as Slurm 22.05 sets it: TimeLimit for TIMEOUT;
    NonZeroExitCode for a script's non-zero exit; JobLaunchFailure when the batch shell died of
    a signal (as observed for both ``kill -9 $$`` and an unopenable -o file); else None."""
    if state == JobState.TIMEOUT:
        return Reason.TIME_LIMIT
    if state == JobState.FAILED:
        return Reason.JOB_LAUNCH_FAILURE if signal_num else Reason.NON_ZERO_EXIT_CODE
    return Reason.NONE


def _int_value(text: str, message: str, value: str, lo: int = 0) -> int:
    """``text`` as an integer >= ``lo``, or the RequestError scontrol prints for it."""
    try:
        n = int(text.strip())
    except ValueError:
        n = None
    if n is None or n < lo:
        raise RequestError(message.format(value), "InvalidValue")
    return n


def _display_id(job: dict) -> str:
    if job.get("array_job_id") is not None:
        return f"{job['array_job_id']}_{job['array_task_id']}"
    return str(job["id"])
