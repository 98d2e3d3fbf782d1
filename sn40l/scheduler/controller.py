"""The controller (our slurmctld): a detached, named Ray actor next to the cluster's sockets.

Its constructor only stores its arguments; :meth:`ControllerActor.start` does the I/O (the
private state directories, the SQLite store, the :class:`~sn40l.scheduler.core.SchedulerCore`,
the socket bind) and starts four threads:

* **server**: the Unix-socket endpoint of :mod:`sn40l.scheduler.client` (a thread per
  connection; the caller's uid comes from ``SO_PEERCRED``); the requests are answered by
  :mod:`sn40l.scheduler.ops`;
* **scheduler**: a scheduling pass whenever something changed (and every second, for begin
  times and reservations), then the started jobs' batch steps are launched;
* **monitor** and **health**: the running jobs' processes and the sockets' health
  (:class:`~sn40l.scheduler.supervise.Supervisor`).

A restart (a new actor on the same state directory) reloads the database: queued jobs stay
queued, finished ones stay in sacct, and running jobs are reconciled from their job
directories, since batch steps are detached and outlive the controller.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

from sn40l.scheduler import hostlist, ops, private
from sn40l.scheduler.client import (Client, ControllerUnavailable, controller_dir, endpoint,
                                    peer_credentials, recv_frame, send_frame)
from sn40l.scheduler.core import SchedulerCore, Who
from sn40l.scheduler.errors import RequestError
from sn40l.scheduler.nodes import Partition
from sn40l.scheduler.store import Store
from sn40l.scheduler.supervise import Supervisor
from sn40l.scheduler.timespec import parse_time_limit

log = logging.getLogger("sn40l.scheduler")

ACTOR_PREFIX = "slurmctld:"
DEFAULT_KILL_WAIT_S = 30.0  # Slurm's KillWait
SCHED_MIN_INTERVAL_S = 0.05  # between scheduling passes (Slurm's sched_min_interval idea)


def _partitions(config: list[dict] | None, node_names: list[str]) -> list[Partition]:
    if not config:
        return [Partition("sn40l", list(node_names), default=True)]
    parts = []
    for i, p in enumerate(config):
        name = p.get("name")
        nodes_text = p.get("nodes", "ALL")
        if not isinstance(nodes_text, str):
            raise ValueError(f"partition {name!r}: nodes {nodes_text!r} must be a host list "
                             f"string such as 'sn[00-01]' or 'ALL', as in slurm.conf")
        max_nodes = p.get("max_nodes")
        if max_nodes is not None and (type(max_nodes) is not int or max_nodes < 1):
            raise ValueError(f"partition {name!r}: max_nodes {max_nodes!r} must be a whole "
                             f"number of at least 1, or left out for UNLIMITED")
        if not isinstance(p.get("default", False), bool):
            raise ValueError(f"partition {name!r}: default {p['default']!r} must be true or "
                             f"false")
        nodes = list(node_names) if nodes_text == "ALL" else hostlist.expand(nodes_text)
        unknown = [n for n in nodes if n not in node_names]
        if unknown:
            raise ValueError(f"partition {name!r}: unknown nodes {unknown}; nodes: "
                             f"{hostlist.compress(node_names)}")

        def limit(key):
            v = p.get(key)
            return None if v in (None, "UNLIMITED", "INFINITE") else parse_time_limit(str(v))

        parts.append(Partition(str(name), nodes, p.get("default", i == 0),
                               limit("max_time"), limit("default_time"), max_nodes))
    if not any(p.default for p in parts):
        parts[0].default = True
    return parts


class ControllerActor:
    """The Ray actor hosting the scheduler of cluster ``cluster``. Start it with
    :func:`start_controller` (which creates the actor, then calls :meth:`start`)."""

    def __init__(self, cluster: str, state: str, partitions: list[dict] | None = None,
                 kill_wait_s: float = DEFAULT_KILL_WAIT_S):
        self.cluster_name = cluster
        self.state = Path(state)
        self.partitions_config = partitions
        self.kill_wait_s = kill_wait_s
        self.started_at: float | None = None

    def start(self) -> None:
        """Open the state, recover the jobs, bind the endpoint and start the threads."""
        import ray

        from sn40l.cluster.cluster import Cluster, local_auth_mode

        if self.started_at is not None:
            return
        self.started_at = time.time()
        cluster = self.cluster_name
        self.dir = controller_dir(self.state, cluster)
        for d in (self.dir.parent, self.dir, self.dir / "jobs"):  # stepsec: state is private
            private.private_dir(d)
        self.lease_key = private.lease_key(self.dir)
        self.cluster = Cluster.connect(cluster)
        spec = self.cluster.spec
        self.spn = spec.sockets_per_node
        prof = self.cluster.profile
        self.ray_address = ray.get_runtime_context().gcs_address
        self.ray_auth = os.environ.get("RAY_AUTH_MODE") or local_auth_mode()
        self.store = Store(private.private_db(self.dir / "slurm.db"))
        self.core = SchedulerCore(cluster, spec.node_names, self.spn,
                                  int(prof.value("node.host_cpus")),
                                  int(prof.value("node.host_memory")) // 2**20,
                                  _partitions(self.partitions_config, spec.node_names),
                                  self.store)
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self.steps = Supervisor(self)
        self.server_address = endpoint(cluster, self.state)
        self.stepd_name = "sn40l-stepd" + self.server_address[len("\0sn40l-slurmctld"):]
        self.steps.reconcile()
        self.server = self._bind(self.server_address)
        self.threads = [threading.Thread(target=fn, name=name, daemon=True)
                        for name, fn in (("server", self.server.serve_forever),
                                         ("scheduler", self._scheduler_loop),
                                         ("monitor", self.steps.monitor_loop),
                                         ("health", self.steps.health_loop))]
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
        if self.started_at is None:
            return
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: dict, who: Who) -> object:
        """A client's request (called by the server's threads)."""
        return ops.handle(self, req, who)

    # -- scheduling ------------------------------------------------------------------------
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
                    self.steps.pool.submit(self.steps.launch, job)
            except Exception:  # noqa: BLE001 - the controller must keep scheduling
                log.exception("scheduling pass failed")
            time.sleep(SCHED_MIN_INTERVAL_S)  # a burst of submissions coalesces into one pass


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        pid, uid, gid = peer_credentials(sock)
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
        try:
            ray.get(handle.start.remote(), timeout=timeout_s)
        except BaseException:
            ray.kill(handle, no_restart=True)  # a controller that did not start holds nothing
            raise
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
