"""The controller's side of running jobs: launching batch steps, watching them, ending them.

:class:`Supervisor` leases a started job's sockets and launches its batch step
(:mod:`sn40l.scheduler.launch`); its **monitor** pass (every 50 ms) reaps finished steps (their
``exit.json``), enforces time limits (SIGTERM, then SIGKILL after KillWait) and ``--signal``
warnings, kills cancelled/requeued/failed-node jobs and releases the sockets of ending jobs;
its **health** pass pings every socket actor, and a node whose socket does not answer goes DOWN
with its running jobs ending NODE_FAIL. After a controller restart, :meth:`reconcile` picks up
the jobs the previous controller left, since batch steps are detached and outlive it.

Every change of a job goes through the core (under the controller's lock); what is kept here
is only about processes: the steps' pids, pending SIGKILLs and the warnings already sent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sn40l.scheduler import launch, private
from sn40l.scheduler.launch import LAUNCH_TIMEOUT_S
from sn40l.scheduler.job import Job
from sn40l.scheduler.types import JobState

if TYPE_CHECKING:
    from sn40l.scheduler.controller import ControllerActor

log = logging.getLogger("sn40l.scheduler")

HEALTH_PERIOD_S = 1.0
HEALTH_TIMEOUT_S = 5.0
MONITOR_PERIOD_S = 0.05


@dataclass(frozen=True)
class StepPids:
    """What a batch step reports once it runs (``pid.json``): its supervisor's pid and the
    script's process group."""

    stepd: int
    pgid: int


@dataclass(frozen=True)
class StepExit:
    """How a batch step ended (``exit.json``): the script's return code (negative: killed by
    that signal) and, when the step could not be set up, why."""

    returncode: int
    error: str | None = None


def read_pids(path: Path) -> StepPids | None:
    info = _read_json(path)
    return None if info is None else StepPids(int(info["stepd"]), int(info["pgid"]))


def read_exit(path: Path) -> StepExit | None:
    info = _read_json(path)
    return None if info is None else StepExit(int(info["returncode"]), info.get("error"))


class Supervisor:
    """The running jobs' processes of controller ``ctl``."""

    def __init__(self, ctl: "ControllerActor"):
        self.ctl = ctl
        self.kills: dict[int, float] = {}  # job id -> when SIGKILL follows the SIGTERM
        self.pids: dict[tuple[int, int], StepPids] = {}  # (job id, run) -> the step's pids
        self.warned: set[tuple[int, int]] = set()  # (job id, run) sent its --signal
        self.last_prune = 0.0
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="launch")

    # -- where a job's run lives -----------------------------------------------------------
    def jobdir(self, job: Job) -> Path:
        """The directory of the job's current run (a requeued job starts a new one)."""
        return self.ctl.dir / "jobs" / str(job.id) / f"run{job.restarts}"

    def pid_info(self, job: Job) -> StepPids | None:
        """The step's pids once it has reported (read once per run, then kept)."""
        key = (job.id, job.restarts)
        info = self.pids.get(key)
        if info is None:
            info = read_pids(self.jobdir(job) / "pid.json")
            if info is not None:
                self.pids[key] = info
        return info

    def capability(self, job: Job) -> str:
        """The job's right to its sockets, ``"<id>:<token>"`` (stepsec: leases)."""
        return f"{job.id}:{private.job_token(self.ctl.lease_key, job.id, job.restarts)}"

    def ranks(self, job: Job) -> list[int]:
        spn = self.ctl.spn
        ranks = []
        for name, a in sorted(job.alloc.items()):
            node = self.ctl.core.nodes[name].index
            ranks += [node * spn + s for s in a.sockets]
        return ranks

    # -- after a restart -------------------------------------------------------------------
    def reconcile(self) -> None:
        """Jobs the previous controller left: COMPLETING ones are released; RUNNING ones whose
        batch step never reported (the controller died while launching) are launched now;
        the others are watched as before, their steps having outlived the controller."""
        def unreported(job: Job) -> bool:
            d = self.jobdir(job)
            return not (d / "pid.json").exists() and not (d / "exit.json").exists()

        waiting = []
        for job in self.ctl.core.running():
            if job.state == JobState.COMPLETING:
                self.pool.submit(self.release, job)
            elif unreported(job):
                waiting.append(job)
        if waiting:
            time.sleep(2.0)  # a step started just before the restart reports within this
        for job in waiting:
            if unreported(job):
                with self.ctl.lock:
                    job = self.ctl.core.launching(job.id, time.time())
                self.pool.submit(self.launch, job)

    # -- launch ----------------------------------------------------------------------------
    def launch(self, job: Job) -> None:
        import ray

        ctl = self.ctl
        try:
            ranks = self.ranks(job)
            if ranks:
                token = self.capability(job).partition(":")[2]
                ray.get([ctl.cluster.socket(r).lease.remote(job.id, token) for r in ranks],
                        timeout=LAUNCH_TIMEOUT_S)
            tasks = ([t.array_task_id for t in ctl.core.array_tasks(job.array_job_id)]
                     if job.array_job_id is not None else [])
            env = launch.job_env(job, ranks, cluster_name=ctl.cluster_name,
                                 state_dir=str(ctl.state), capability=self.capability(job),
                                 ray_address=ctl.ray_address, ray_auth=ctl.ray_auth,
                                 array_tasks=tasks)
            jobdir = self.jobdir(job)
            launch.write_run(jobdir, job, env)
            launch.fork_step(ctl.stepd_name, ctl.server_address[1:], jobdir, job.uid, job.gid,
                             ctl.lock)
        except Exception as exc:  # noqa: BLE001 - a job that cannot start fails, visibly
            log.warning("job %s failed to launch: %s", job.id, exc)
            node_fail = isinstance(exc, (ray.exceptions.RayActorError,
                                         ray.exceptions.GetTimeoutError))
            with ctl.lock:  # a socket died under the launch: the node failed, not the job
                ctl.core.completing(job.id, JobState.NODE_FAIL if node_fail else JobState.FAILED,
                                    0 if node_fail else 1, 0, launch_error=str(exc),
                                    requeue=job.req.requeue if node_fail else None)
            self.release(job)

    # -- monitoring ------------------------------------------------------------------------
    def monitor_loop(self) -> None:
        while not self.ctl.stop_event.is_set():
            try:
                self.monitor_once()
            except Exception:  # noqa: BLE001
                log.exception("monitor pass failed")
            self.ctl.stop_event.wait(MONITOR_PERIOD_S)

    def monitor_once(self) -> None:
        ctl = self.ctl
        now = time.time()
        if now - self.last_prune > 60:  # stepsec: finished jobs' directories go (MinJobAge)
            self.last_prune = now
            with ctl.lock:
                active = {j.id for j in ctl.core.jobs.values() if not j.is_final}
            private.prune_job_dirs(ctl.dir / "jobs", active, now)
        with ctl.lock:
            running = [j for j in ctl.core.running() if j.state == JobState.RUNNING]
        for job in running:
            self._watch(job, now)

    def _watch(self, job: Job, now: float) -> None:
        ctl = self.ctl
        exit_file = self.jobdir(job) / "exit.json"
        if exit_file.exists():
            info = read_exit(exit_file)
            if info is not None:
                self.finish(job, info)
            return
        if job.launch_time is None:  # reconciled after a restart: give it time to report
            with ctl.lock:
                job = ctl.core.launching(job.id, now)
        pids = self.pid_info(job)
        if pids is None:
            if now - job.launch_time > LAUNCH_TIMEOUT_S and not job.launch_error:
                self.finish(job, StepExit(1, "batch step never started"))
            return
        if not _alive(pids.stepd):
            if exit_file.exists():
                return  # written between the two checks
            _killpg(pids.pgid, signal.SIGKILL)  # the fork server reaps the rest
            self.finish(job, StepExit(-signal.SIGKILL, "batch step vanished"))
            return
        limit, run = job.time_limit, (job.id, job.restarts)
        warn = job.req.signal
        if limit is not None and job.kill_reason is None and now >= job.start_time + limit:
            with ctl.lock:
                job = ctl.core.timed_out(job.id)
            self.kill(job)
        elif job.kill_reason and job.id not in self.kills:
            self.kill(job)
        elif (limit is not None and warn is not None and run not in self.warned
                and now >= job.start_time + limit - warn.seconds):
            self.warned.add(run)
            if warn.batch_only:  # B: the batch shell alone
                _kill_pid(pids.pgid, warn.signum)
            else:
                _killpg(pids.pgid, warn.signum)
        deadline = self.kills.get(job.id)
        if deadline is not None and now >= deadline:
            _killpg(pids.pgid, signal.SIGKILL)
            self.kills[job.id] = now + 5.0

    def finish(self, job: Job, info: StepExit) -> None:
        """The batch step ended: the job is COMPLETING, its ``.batch`` step recorded, its
        sockets released."""
        ctl = self.ctl
        with ctl.lock:
            current = ctl.core.jobs.get(job.id)
            if current is None or current.state != JobState.RUNNING:
                return
            # an I/O set-up failure reports -53: FAILED 0:53, Reason JobLaunchFailure (Slurm)
            state, code, sig = ctl.core.final_state_for(current, info.returncode)
            job = ctl.core.completing(job.id, state, code, sig, launch_error=info.error)
            ctl.store.put_step(job.id, "batch", {
                "step": "batch", "name": "batch", "state": batch_step_state(state, sig),
                "start_time": job.start_time, "end_time": job.end_time,
                "exit_code": code, "exit_signal": sig, "ntasks": 1, "nodes": [job.batch_host],
                "cpus": job.alloc[job.batch_host].cpus})
        self.kills.pop(job.id, None)
        self.pids.pop((job.id, job.restarts), None)
        self.warned.discard((job.id, job.restarts))
        self.release(job)

    def release(self, job: Job) -> None:
        """Release the job's sockets, then let the core end (or requeue) it."""
        import ray

        ranks = self.ranks(job) if job.alloc else []
        refs = []
        for r in ranks:
            try:
                refs.append(self.ctl.cluster.socket(r).release.remote(self.capability(job)))
            except Exception:  # noqa: BLE001 - a dead socket has nothing to release
                pass
        for ref in refs:
            try:
                ray.get(ref, timeout=10)
            except Exception:  # noqa: BLE001 - dead or not leased to this job any more
                pass
        with self.ctl.lock:
            self.ctl.core.release(job.id)
        self.ctl.wake.set()

    def kill(self, job: Job) -> None:
        """SIGTERM the job's process group now, SIGKILL after KillWait (by the monitor)."""
        pids = self.pid_info(job)
        if pids is None:
            return  # not started yet; the monitor retries once the step reports its pid
        _killpg(pids.pgid, signal.SIGCONT)
        _killpg(pids.pgid, signal.SIGTERM)
        self.kills[job.id] = time.time() + self.ctl.kill_wait_s

    def signal(self, job: Job, signum: int) -> None:
        pids = self.pid_info(job)
        if pids is not None:
            _killpg(pids.pgid, signum)

    # -- socket health ---------------------------------------------------------------------
    def health_loop(self) -> None:
        import ray

        ctl = self.ctl
        while not ctl.stop_event.wait(HEALTH_PERIOD_S):
            try:
                down = self._dead_ranks(ray)
            except Exception:  # noqa: BLE001
                log.exception("health check failed")
                continue
            by_node: dict[str, list[int]] = {}
            for r in down:
                by_node.setdefault(ctl.cluster.spec.node_names[r // ctl.spn], []).append(r)
            for name, node in ctl.core.nodes.items():
                if name in by_node:
                    labels = ",".join(f"s{r % ctl.spn}" for r in by_node[name])
                    with ctl.lock:
                        victims = ctl.core.node_failed(
                            name, f"Not responding: socket(s) {labels} of {name} died")
                    for job in victims:
                        self.kill(job)
                        if self.pid_info(job) is None:
                            self.finish(job, StepExit(-signal.SIGKILL))
                elif node.not_responding:
                    with ctl.lock:
                        ctl.core.node_recovered(name)

    def _dead_ranks(self, ray) -> list[int]:
        cluster = self.ctl.cluster
        refs = {}
        dead = []
        for r, h in enumerate(cluster.handles):
            if h is None:  # a socket dead at start-up, or revived by another process since
                h = cluster.handles[r] = cluster.lookup(r)
            if h is None:
                dead.append(r)
                continue
            refs[h.ping.remote()] = r
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=HEALTH_TIMEOUT_S)
        for ref in ready:
            try:
                ray.get(ref)
            except Exception:  # noqa: BLE001 - the actor died
                dead.append(refs[ref])
                cluster.handles[refs[ref]] = None  # looked up by name next time
        dead += [refs[ref] for ref in pending]
        return sorted(dead)

    def revive_node(self, name: str) -> list[int]:
        ctl = self.ctl
        index = ctl.core.nodes[name].index
        revived = ctl.cluster.revive(list(range(index * ctl.spn, (index + 1) * ctl.spn)))
        if revived:
            with ctl.lock:
                ctl.core.node_recovered(name)
        return revived


def batch_step_state(job_state: JobState, signal_num: int) -> JobState:
    """The ``.batch`` step's state in sacct: CANCELLED when the batch shell was killed by a
    signal (time limit, scancel, a kill, a launch failure), as Slurm reports it; else the job's."""
    if signal_num and job_state in (JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED):
        return JobState.CANCELLED
    return job_state


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
