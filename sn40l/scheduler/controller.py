"""The controller (our slurmctld): a detached, named Ray actor next to the cluster's sockets.

It owns the :class:`~sn40l.scheduler.core.SchedulerCore` and four threads:

* **server**: the Unix-socket endpoint of :mod:`sn40l.scheduler.client` (a thread per
  connection; the caller's uid comes from ``SO_PEERCRED``);
* **scheduler**: a scheduling pass whenever something changed (and every second, for begin
  times and reservations), then leases the started jobs' sockets and launches their batch steps
  (:mod:`sn40l.scheduler.launch`, :mod:`sn40l.scheduler.stepd`);
* **monitor**: every 50 ms, reaps finished steps (their ``exit.json``), enforces time limits
  (SIGTERM, then SIGKILL after KillWait), kills cancelled/requeued/failed-node jobs, and
  releases the sockets of ending jobs;
* **health**: pings every socket actor; a node whose socket does not answer goes DOWN and its
  running jobs end NODE_FAIL (requeued unless --no-requeue).

A restart (a new actor on the same state directory) reloads the database: queued jobs stay
queued, finished ones stay in sacct, and running jobs are reconciled from their job
directories, since batch steps are detached and outlive the controller.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import socketserver
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sn40l.scheduler import agent, hostlist, launch, private
from sn40l.scheduler.client import Client, ControllerUnavailable, endpoint, recv_frame, send_frame
from sn40l.scheduler.core import (FINAL_STATES, Partition, RequestError, SchedulerCore, Who,
                                  _display_id)
from sn40l.scheduler.launch import LAUNCH_TIMEOUT_S
from sn40l.scheduler.store import Store
from sn40l.scheduler.timespec import parse_time_limit
from sn40l.scheduler.types import JobState

log = logging.getLogger("sn40l.scheduler")

ACTOR_PREFIX = "slurmctld:"
DEFAULT_KILL_WAIT_S = 30.0  # Slurm's KillWait
HEALTH_PERIOD_S = 1.0
HEALTH_TIMEOUT_S = 5.0
SCHED_MIN_INTERVAL_S = 0.05  # between scheduling passes (Slurm's sched_min_interval idea)


def controller_dir(state: Path, cluster: str) -> Path:
    return Path(state) / "slurm" / cluster


def _partitions(config: list[dict] | None, node_names: list[str]) -> list[Partition]:
    if not config:
        return [Partition("sn40l", list(node_names), default=True)]
    parts = []
    for i, p in enumerate(config):
        nodes_text = p.get("nodes", "ALL")
        nodes = list(node_names) if nodes_text == "ALL" else hostlist.expand(nodes_text)
        unknown = [n for n in nodes if n not in node_names]
        if unknown:
            raise ValueError(f"partition {p.get('name')!r}: unknown nodes {unknown}; nodes: "
                             f"{hostlist.compress(node_names)}")

        def limit(key):
            v = p.get(key)
            return None if v in (None, "UNLIMITED", "INFINITE") else parse_time_limit(str(v))

        parts.append(Partition(str(p["name"]), nodes, bool(p.get("default", i == 0)),
                               limit("max_time"), limit("default_time"), p.get("max_nodes")))
    if not any(p.default for p in parts):
        parts[0].default = True
    return parts


class ControllerActor:
    """The Ray actor hosting the scheduler of cluster ``cluster``. Start it with
    :func:`start_controller`."""

    def __init__(self, cluster: str, state: str, partitions: list[dict] | None = None,
                 kill_wait_s: float = DEFAULT_KILL_WAIT_S):
        import ray

        from sn40l.cluster.cluster import Cluster, local_auth_mode

        self.cluster_name = cluster
        self.state = Path(state)
        self.dir = controller_dir(self.state, cluster)
        for d in (self.dir.parent, self.dir, self.dir / "jobs"):  # stepsec: state is private
            private.private_dir(d)
        self.lease_key = private.lease_key(self.dir)
        self.last_prune = 0.0
        self.kill_wait_s = kill_wait_s
        self.cluster = Cluster.connect(cluster)
        spec = self.cluster.spec
        self.spn = spec.sockets_per_node
        prof = self.cluster.profile
        node_names = spec.node_names
        self.ray_address = ray.get_runtime_context().gcs_address
        self.ray_auth = os.environ.get("RAY_AUTH_MODE") or local_auth_mode()
        self.store = Store(private.private_db(self.dir / "slurm.db"))
        self.core = SchedulerCore(cluster, node_names, self.spn,
                                  int(prof.value("node.host_cpus")),
                                  int(prof.value("node.host_memory")) // 2**20,
                                  _partitions(partitions, node_names), self.store)
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.kills: dict[int, float] = {}  # job id -> when SIGKILL follows the SIGTERM
        self.pids: dict[tuple[int, int], dict] = {}  # (job id, run) -> the step's pids
        self.warned: set[tuple[int, int]] = set()  # (job id, run) sent its --signal
        self.launch_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="launch")
        self.started_at = time.time()
        self.stepd_name = "sn40l-stepd" + endpoint(cluster, self.state)[len("\0sn40l-slurmctld"):]
        self.step_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._reconcile()
        self.server_address = endpoint(cluster, self.state)
        self.server = self._bind(self.server_address)
        self.threads = [threading.Thread(target=fn, name=name, daemon=True)
                        for name, fn in (("server", self.server.serve_forever),
                                         ("scheduler", self._scheduler_loop),
                                         ("monitor", self._monitor_loop),
                                         ("health", self._health_loop))]
        for t in self.threads:
            t.start()
        self.wake.set()

    def _bind(self, address: str) -> "_Server":
        deadline = time.monotonic() + 15
        while True:  # a controller being replaced may hold the name for a moment longer
            try:
                return _Server(address, self)
            except OSError as exc:
                if exc.errno != 98 or time.monotonic() > deadline:  # EADDRINUSE
                    raise
                time.sleep(0.1)

    # -- Ray-facing ------------------------------------------------------------------------
    def ping(self) -> dict:
        return {"cluster": self.cluster_name, "pid": os.getpid(), "state": str(self.state),
                "started_at": self.started_at}

    def shutdown(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    # -- reconciliation after a restart ----------------------------------------------------
    def _reconcile(self) -> None:
        """Jobs the previous controller left: COMPLETING ones are released; RUNNING ones whose
        batch step never reported (the controller died while launching) are launched now;
        the others are watched as before, their steps having outlived the controller."""
        unreported = []
        for job in self.core.running():
            if job["state"] == "COMPLETING":
                self.launch_pool.submit(self._release, job)
                continue
            jobdir = self._jobdir(job)
            if not (jobdir / "pid.json").exists() and not (jobdir / "exit.json").exists():
                unreported.append(job)
        if unreported:
            time.sleep(2.0)  # a step started just before the restart reports within this
        for job in unreported:
            jobdir = self._jobdir(job)
            if not (jobdir / "pid.json").exists() and not (jobdir / "exit.json").exists():
                job["launch_time"] = time.time()
                self.launch_pool.submit(self._launch, job)

    # -- request dispatch (called by server threads) ---------------------------------------
    def handle(self, req: dict, who: Who) -> object:
        op = req.get("op")
        fn = getattr(self, f"op_{op}", None)
        if fn is None:
            raise RequestError(f"unknown request {op!r}", "BadRequest")
        return fn(who, **{k: v for k, v in req.items() if k != "op"})

    def op_ping(self, who: Who) -> dict:
        return {**self.ping(), "uid": who.uid}

    def op_submit(self, who: Who, req: dict) -> dict:
        if os.geteuid() != 0 and who.uid != os.geteuid():  # stepsec: only root changes user
            raise RequestError(f"Access/permission denied: this controller runs as uid "
                               f"{os.geteuid()} and can run only that user's jobs", "Permission")
        with self.lock:
            out = self.core.submit(req, who)
        if not out.get("test_only"):
            self.wake.set()
        return out

    def op_queue(self, who: Who, jobs: list[str] | None = None, users: list[str] | None = None,
                 states: list[str] | None = None, partitions: list[str] | None = None,
                 names: list[str] | None = None, all_states: bool = False) -> list[dict]:
        with self.lock:
            if jobs:
                found = []
                for tok in jobs:
                    found += self.core.jobs_for(tok)
                for j in found:
                    if not self.core.visible(who, j):
                        raise RequestError("Access/permission denied", "Permission")
            else:
                found = [j for j in self.core.jobs.values() if self.core.visible(who, j)]
            out = []
            for j in found:
                if users and j["user"] not in users:
                    continue
                if states and j["state"] not in states:
                    continue
                if not states and not all_states and j["state"] in FINAL_STATES:
                    # squeue -j of a finished job prints nothing, so wait loops end
                    continue
                if partitions and j["partition"] not in partitions:
                    continue
                if names and j["name"] not in names:
                    continue
                out.append(_public(j))
        out.sort(key=lambda j: j["id"])
        return out

    def op_show_job(self, who: Who, job: str, all_tasks: bool = False) -> list[dict]:
        with self.lock:
            found = self.core.jobs_for(job)
            for j in found:
                if not self.core.visible(who, j):
                    raise RequestError("Access/permission denied", "Permission")
            out = []
            for j in found:
                shown = _public(j, full=True)
                shown["stdout_path"] = os.path.normpath(launch.out_path(j, "output"))
                shown["stderr_path"] = os.path.normpath(launch.out_path(j, "error"))
                shown["dependency_shown"] = self.core.dependency_text(j)
                out.append(shown)
            return out

    def op_cancel(self, who: Who, jobs: list[str] | None = None, user: str | None = None,
                  name: str | None = None, states: list[str] | None = None,
                  partition: str | None = None, signal_num: int | None = None) -> dict:
        with self.lock:
            out = self.core.cancel(who, jobs or [], user, name, states, partition, signal_num)
        for job in out["kill"]:
            self._kill(job)
        for job in out["signal"]:
            self._signal(job, signal_num)
        self.wake.set()
        return {"errors": out["errors"], "cancelled": len(out["kill"])}

    def op_hold(self, who: Who, jobs: list[str], release: bool = False) -> list[str]:
        with self.lock:
            errors = self.core.hold(who, jobs, release)
        self.wake.set()
        return errors

    def op_requeue(self, who: Who, jobs: list[str], hold: bool = False) -> list[str]:
        with self.lock:
            errors, kill = self.core.requeue(who, jobs, hold)
        for job in kill:
            self._kill(job)
        self.wake.set()
        return errors

    def op_update_job(self, who: Who, job: str, fields: dict) -> None:
        with self.lock:
            self.core.update_job(who, job, fields)
        self.wake.set()

    def op_update_node(self, who: Who, names: list[str], state: str,
                       reason: str | None = None) -> dict:
        revived: list[int] = []
        if state.lower() in ("resume", "idle", "undrain"):
            if not who.is_admin:
                raise RequestError("Access/permission denied", "Permission")
            for name in names:
                if name not in self.core.nodes:
                    raise RequestError(f"Invalid node name specified: {name}", "Invalid")
                revived += self._revive_node(name)
        with self.lock:
            self.core.set_node(who, names, state, reason)
        self.wake.set()
        return {"revived": revived}

    def op_nodes(self, who: Who) -> dict:
        with self.lock:
            return {"nodes": self.core.node_rows(), "partitions": self.core.partition_rows(),
                    "cluster": self.cluster_name, "sockets_per_node": self.spn}

    def op_sacct(self, who: Who, jobs: list[str] | None = None, users: list[str] | None = None,
                 all_users: bool = False, start: float | None = None, end: float | None = None,
                 states: list[str] | None = None, names: list[str] | None = None,
                 partitions: list[str] | None = None) -> list[dict]:
        import pwd

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
        with self.lock:
            rows = self.store.query_jobs(ids, uids, start, end, names)
            live = {j["id"]: j for j in self.core.jobs.values()}
            rows = [live.get(r["id"], r) for r in rows]
            if not who.is_admin:
                rows = [r for r in rows if r["uid"] == who.uid]
            if states:
                rows = [r for r in rows if r["state"] in states]
            if partitions:
                rows = [r for r in rows if r["partition"] in partitions]
            steps = self.store.steps([r["id"] for r in rows])
        out = []
        for r in rows:
            p = _public(r)
            p["steps"] = steps.get(r["id"], [])
            out.append(p)
        return out

    def op_step(self, who: Who, job_id: int, step: str, data: dict) -> int | None:
        """srun inside a job records its steps (for sacct); ``step="next"`` allocates the
        next step number and records the step as RUNNING."""
        with self.lock:
            job = self.core.jobs.get(int(job_id))
            if job is None or not (who.is_admin or who.uid == job["uid"]):
                raise RequestError("Access/permission denied", "Permission")
            if job["state"] != "RUNNING":
                raise RequestError(f"Job {job_id} is not running", "NotRunning")
            if step == "next":
                number = job.get("next_step", 0)
                job["next_step"] = number + 1
                self.store.put_job(job)
                self.store.put_step(int(job_id), str(number), {
                    "step": str(number), "name": "step", "state": "RUNNING",
                    "start_time": time.time(), "end_time": None, "exit_code": 0,
                    "exit_signal": 0, "ntasks": 0, "nodes": [], "cpus": 0})
                return number
            self.store.put_step(int(job_id), step, data)
            return None

    def op_job_run(self, who: Who, **kwargs) -> dict:
        """``sn40l run`` inside a job whose user has no Ray access: the controller runs it on
        the job's sockets (:mod:`sn40l.scheduler.agent`)."""
        return agent.run_for_job(self, who, **kwargs)

    def op_write_script(self, who: Who, job: str) -> str:
        with self.lock:
            found = self.core.jobs_for(job)
            if not self.core.visible(who, found[0]):
                raise RequestError("Access/permission denied", "Permission")
            return found[0]["req"]["script"]

    # -- scheduling and launch -------------------------------------------------------------
    def _scheduler_loop(self) -> None:
        last_expire = 0.0
        while not self.stop_event.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            try:
                with self.lock:
                    started = self.core.schedule()
                    if time.time() - last_expire > 10:
                        self.core.expire()
                        last_expire = time.time()
                for job in started:
                    job["launch_time"] = time.time()
                    self.launch_pool.submit(self._launch, job)
            except Exception:  # noqa: BLE001 - the controller must keep scheduling
                log.exception("scheduling pass failed")
            time.sleep(SCHED_MIN_INTERVAL_S)  # a burst of submissions coalesces into one pass

    def _jobdir(self, job: dict) -> Path:
        """The directory of the job's current run (a requeued job starts a new one)."""
        return self.dir / "jobs" / str(job["id"]) / f"run{job.get('restarts', 0)}"

    def _pid_info(self, job: dict) -> dict | None:
        """The step's ``{stepd, pgid}`` once it has reported (read once per run, then kept)."""
        key = (job["id"], job.get("restarts", 0))
        info = self.pids.get(key)
        if info is None:
            info = _read_json(self._jobdir(job) / "pid.json")
            if info is not None:
                self.pids[key] = info
        return info

    def capability(self, job: dict) -> str:
        """The job's right to its sockets, ``"<id>:<token>"`` (stepsec: leases)."""
        return f"{job['id']}:{private.job_token(self.lease_key, job['id'], job.get('restarts', 0))}"

    def _ranks(self, job: dict) -> list[int]:
        ranks = []
        for name, a in sorted(job["alloc"].items()):
            node = self.core.nodes[name].index
            ranks += [node * self.spn + s for s in a["sockets"]]
        return ranks

    def _launch(self, job: dict) -> None:
        import ray

        job_id = job["id"]
        jobdir = self._jobdir(job)
        try:
            ranks = self._ranks(job)
            if ranks:
                token = self.capability(job).partition(":")[2]
                ray.get([self.cluster.socket(r).lease.remote(job_id, token) for r in ranks],
                        timeout=LAUNCH_TIMEOUT_S)
            tasks = ([t["array_task_id"] for t in self.store.array_tasks(job["array_job_id"])]
                     if job.get("array_job_id") is not None else [])
            env = launch.job_env(job, ranks, cluster_name=self.cluster_name,
                                 state_dir=str(self.state), capability=self.capability(job),
                                 ray_address=self.ray_address, ray_auth=self.ray_auth,
                                 array_tasks=tasks)
            launch.write_run(jobdir, job, env)
            launch.fork_step(self.step_sock, self.stepd_name, self.server_address[1:], jobdir,
                             job["uid"], job["gid"], self.lock)
        except Exception as exc:  # noqa: BLE001 - a job that cannot start fails, visibly
            log.warning("job %s failed to launch: %s", job_id, exc)
            node_fail = isinstance(exc, (ray.exceptions.RayActorError,
                                         ray.exceptions.GetTimeoutError))
            with self.lock:
                job["launch_error"] = str(exc)
                if node_fail:  # a socket died under the launch: the node failed, not the job
                    job["requeue_pending"] = bool(job["req"].get("requeue", True))
                self.core.completing(job, "NODE_FAIL" if node_fail else "FAILED",
                                     0 if node_fail else 1, 0)
            self._release(job)

    # -- monitoring ------------------------------------------------------------------------
    def _monitor_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._monitor_once()
            except Exception:  # noqa: BLE001
                log.exception("monitor pass failed")
            self.stop_event.wait(0.05)

    def _monitor_once(self) -> None:
        now = time.time()
        if now - self.last_prune > 60:  # stepsec: finished jobs' directories go (MinJobAge)
            self.last_prune = now
            with self.lock:
                active = {j["id"] for j in self.core.jobs.values()
                          if j["state"] not in FINAL_STATES}
            private.prune_job_dirs(self.dir / "jobs", active, now)
        with self.lock:
            running = [j for j in self.core.running() if j["state"] == "RUNNING"]
        for job in running:
            jobdir = self._jobdir(job)
            exit_file = jobdir / "exit.json"
            if exit_file.exists():
                try:
                    info = json.loads(exit_file.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                self._finish(job, info)
                continue
            if job.get("launch_time") is None:
                job["launch_time"] = now  # reconciled after a restart: give it time to report
            pid_info = self._pid_info(job)
            if pid_info is None:
                if now - job["launch_time"] > LAUNCH_TIMEOUT_S and not job.get("launch_error"):
                    self._finish(job, {"returncode": 1, "error": "batch step never started"})
                continue
            if not _alive(pid_info["stepd"]):
                if exit_file.exists():
                    continue  # written between the two checks
                _killpg(pid_info["pgid"], signal.SIGKILL)  # the fork server reaps the rest
                self._finish(job, {"returncode": -signal.SIGKILL,
                                   "error": "batch step vanished"})
                continue
            limit = job["time_limit"]
            if (limit is not None and job.get("kill_reason") is None
                    and now >= job["start_time"] + limit):
                with self.lock:
                    job["kill_reason"] = "timeout"
                    self.store.put_job(job)
                self._kill(job)
            elif job.get("kill_reason") and job["id"] not in self.kills:
                self._kill(job)
            elif (limit is not None and job["req"].get("signal")
                    and (job["id"], job.get("restarts", 0)) not in self.warned
                    and now >= job["start_time"] + limit - job["req"]["signal"]["seconds"]):
                self.warned.add((job["id"], job.get("restarts", 0)))
                spec = job["req"]["signal"]
                if spec["batch_only"]:  # B: the batch shell alone
                    _kill_pid(pid_info["pgid"], spec["signum"])
                else:
                    _killpg(pid_info["pgid"], spec["signum"])
            deadline = self.kills.get(job["id"])
            if deadline is not None and now >= deadline:
                _killpg(pid_info["pgid"], signal.SIGKILL)
                self.kills[job["id"]] = now + 5.0

    def _finish(self, job: dict, info: dict) -> None:
        with self.lock:
            if job["state"] != "RUNNING":
                return
            # an I/O set-up failure reports -53: FAILED 0:53, Reason JobLaunchFailure (Slurm)
            state, code, sig = self.core.final_state_for(job, int(info["returncode"]))
            if info.get("error"):
                job["launch_error"] = info["error"]
            self.core.completing(job, state, code, sig)
            self.store.put_step(job["id"], "batch", {
                "step": "batch", "name": "batch", "state": batch_step_state(state, sig),
                "start_time": job["start_time"], "end_time": job["end_time"],
                "exit_code": code, "exit_signal": sig, "ntasks": 1, "nodes": [job["batch_host"]],
                "cpus": job["alloc"][job["batch_host"]]["cpus"]})
        self.kills.pop(job["id"], None)
        self.pids.pop((job["id"], job.get("restarts", 0)), None)
        self.warned.discard((job["id"], job.get("restarts", 0)))
        self._release(job)

    def _release(self, job: dict) -> None:
        import ray

        ranks = self._ranks(job) if job.get("alloc") else []
        refs = []
        for r in ranks:
            try:
                refs.append(self.cluster.socket(r).release.remote(self.capability(job)))
            except Exception:  # noqa: BLE001 - a dead socket has nothing to release
                pass
        for ref in refs:
            try:
                ray.get(ref, timeout=10)
            except Exception:  # noqa: BLE001 - dead or not leased to this job any more
                pass
        with self.lock:
            self.core.release(job)
        self.wake.set()

    def _kill(self, job: dict) -> None:
        """SIGTERM the job's process group now, SIGKILL after KillWait (by the monitor)."""
        pid_info = self._pid_info(job)
        if pid_info is None:
            return  # not started yet; the monitor retries once the step reports its pid
        _killpg(pid_info["pgid"], signal.SIGCONT)
        _killpg(pid_info["pgid"], signal.SIGTERM)
        self.kills[job["id"]] = time.time() + self.kill_wait_s

    def _signal(self, job: dict, signum: int) -> None:
        pid_info = self._pid_info(job)
        if pid_info is not None:
            _killpg(pid_info["pgid"], signum)

    # -- socket health ---------------------------------------------------------------------
    def _health_loop(self) -> None:
        import ray

        while not self.stop_event.wait(HEALTH_PERIOD_S):
            try:
                down = self._dead_ranks(ray)
            except Exception:  # noqa: BLE001
                log.exception("health check failed")
                continue
            by_node: dict[str, list[int]] = {}
            for r in down:
                by_node.setdefault(self.cluster.spec.node_names[r // self.spn], []).append(r)
            for name, node in self.core.nodes.items():
                if name in by_node:
                    labels = ",".join(f"s{r % self.spn}" for r in by_node[name])
                    with self.lock:
                        victims = self.core.node_failed(
                            name, f"Not responding: socket(s) {labels} of {name} died")
                    for job in victims:
                        self._kill(job)
                        if self._pid_info(job) is None:
                            self._finish(job, {"returncode": -signal.SIGKILL})
                elif node.not_responding:
                    with self.lock:
                        self.core.node_recovered(name)

    def _dead_ranks(self, ray) -> list[int]:
        refs = {}
        dead = []
        for r, h in enumerate(self.cluster.handles):
            if h is None:  # a socket dead at start-up, or revived by another process since
                h = self.cluster.handles[r] = self.cluster.lookup(r)
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
                self.cluster.handles[refs[ref]] = None  # looked up by name next time
        dead += [refs[ref] for ref in pending]
        return sorted(dead)

    def _revive_node(self, name: str) -> list[int]:
        index = self.core.nodes[name].index
        ranks = list(range(index * self.spn, (index + 1) * self.spn))
        revived = self.cluster.revive(ranks)
        if revived:
            with self.lock:
                self.core.node_recovered(name)
        return revived


def batch_step_state(job_state: str, signal_num: int) -> str:
    """The ``.batch`` step's state in sacct: CANCELLED when the batch shell was killed by a
    signal (time limit, scancel, a kill, a launch failure), as Slurm reports it; else the job's."""
    if signal_num and job_state in (JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED):
        return JobState.CANCELLED
    return job_state


def _public(job: dict, full: bool = False) -> dict:
    """A job record for clients: without the script and environment unless ``full``."""
    out = {k: v for k, v in job.items() if k != "req"}
    req = job["req"]
    out["req"] = {k: v for k, v in req.items() if k not in ("script", "env")}
    out["display_id"] = _display_id(job)
    if full:
        out["req"]["env_count"] = len(req.get("env") or {})
    return out


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


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        who = Who(uid, gid, pid)
        controller: ControllerActor = self.server.controller  # type: ignore[attr-defined]
        while True:
            try:
                req = recv_frame(sock)
            except (ConnectionError, OSError):
                return
            if req is None:
                return
            try:
                reply = {"ok": True, "result": controller.handle(req, who)}
            except RequestError as exc:
                reply = {"ok": False, "error": str(exc), "code": exc.code}
            except TypeError as exc:
                reply = {"ok": False, "error": f"bad request: {exc}", "code": "BadRequest"}
            except Exception as exc:  # noqa: BLE001 - reported to the client, not fatal here
                log.exception("request %r failed", req.get("op"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "code": "Internal"}
            try:
                send_frame(sock, reply)
            except OSError:
                return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: str, controller: ControllerActor):
        self.controller = controller
        super().__init__(address, _Handler)


# -- starting and stopping ---------------------------------------------------------------
def start_controller(cluster: str = "default", state: Path | str | None = None,
                     partitions: list[dict] | None = None,
                     kill_wait_s: float = DEFAULT_KILL_WAIT_S, timeout_s: float = 60.0):
    """Start (or find) the detached controller actor of ``cluster`` on this Ray node and wait
    until its endpoint answers. Ray must be connected. Returns the actor handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sn40l.cluster.cluster import NAMESPACE

    from sn40l.scheduler.client import state_dir

    state = Path(state or state_dir()).expanduser().resolve()
    name = ACTOR_PREFIX + cluster
    try:
        handle = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        handle = ray.remote(ControllerActor).options(
            name=name, namespace=NAMESPACE, lifetime="detached", num_cpus=0,
            max_concurrency=16, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False),
        ).remote(cluster, str(state), partitions, kill_wait_s)
    ray.get(handle.ping.remote(), timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with Client(cluster, state) as c:
                c.ping()
            return handle
        except ControllerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_controller(cluster: str = "default") -> bool:
    """Kill the controller actor of ``cluster`` (its state stays on disk). True if one ran."""
    import ray

    from sn40l.cluster.cluster import NAMESPACE

    try:
        handle = ray.get_actor(ACTOR_PREFIX + cluster, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            ray.get_actor(ACTOR_PREFIX + cluster, namespace=NAMESPACE)
            time.sleep(0.05)
        except ValueError:
            break
    return True
