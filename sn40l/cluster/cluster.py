"""Bring-up of an emulated SN40L cluster on Ray: N nodes x S socket actors, named and healthy.

A cluster is named (default ``"default"``); its sockets are named Ray actors
``"<cluster>:n<node>s<local>"`` in the Ray namespace ``"sn40l"``, so any driver connected to the
same Ray cluster can find them (:meth:`Cluster.connect`). On a Ray cluster with at least as many
alive Ray nodes as emulated nodes, emulated node *i* is pinned to Ray node *i* (node affinity);
otherwise every socket runs on the local Ray node.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import ray

from sn40l.cluster.actor import SocketActor
from sn40l.cluster.rayauth import prepare_auth
from sn40l.cluster.record import check_cluster_name, node_name
from sn40l.errors import ClusterError, ConfigError
from sn40l.hardware.profile import Profile, load_profile
from sn40l.provenance import provenance
from sn40l.socket.device import SocketId

log = logging.getLogger("sn40l.cluster")

NAMESPACE = "sn40l"
ACTOR_CONCURRENCY = 32  # threads per socket actor: P2P service + pings while a kernel runs


def actor_name(cluster: str, node: int, local: int) -> str:
    return f"{cluster}:n{node}s{local}"


@dataclass(frozen=True)
class ClusterSpec:
    """What a cluster is: its name, shape and hardware profile (as plain data)."""

    name: str
    nodes: int
    sockets_per_node: int
    profile: dict = field(repr=False)
    ray_nodes: tuple[str, ...] = ()  # Ray node ids the emulated nodes are pinned to, if any
    detached: bool = False
    trace_capacity: int = 100_000

    @property
    def world_size(self) -> int:
        return self.nodes * self.sockets_per_node

    @property
    def node_names(self) -> list[str]:
        return [node_name(i) for i in range(self.nodes)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ray_nodes"] = list(self.ray_nodes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterSpec":
        return cls(d["name"], d["nodes"], d["sockets_per_node"], d["profile"],
                   tuple(d.get("ray_nodes", ())), bool(d.get("detached", False)),
                   int(d.get("trace_capacity", 100_000)))


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               auth: str | None = None) -> None:
    """Connect to Ray: an existing cluster at ``address`` ("auto" or HOST:PORT) or, with no
    address, an embedded local Ray started in this process.

    ``auth="token"`` presents ~/.ray/auth_token, as a Ray head started by ``ray.init`` on this
    machine requires (see :func:`local_auth_mode`); clusters recorded by ``sn40l cluster up``
    say which mode they use. Without ``auth``, whether the cluster wants a token is asked
    first (:func:`sn40l.cluster.rayauth.prepare_auth`), so a missing token fails in one line.
    """
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(namespace=NAMESPACE, include_dashboard=False,
                                  logging_level=logging.WARNING, log_to_driver=True,
                                  configure_logging=False)
    if address in (None, "", "local"):
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kwargs)
    else:
        if auth == "token":
            use_token_auth()
        elif auth is None:
            prepare_auth(address)
        ray.init(address=address, **kwargs)


def local_auth_mode() -> str:
    """The authentication a Ray head started here by ``ray.init`` uses: Ray turns token
    authentication on for local heads unless RAY_AUTH_MODE says otherwise."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode:
        return mode
    return "token" if (Path.home() / ".ray" / "auth_token").exists() else "disabled"


def use_token_auth() -> None:
    """Present ~/.ray/auth_token to the Ray cluster this process connects to.

    Ray reads RAY_AUTH_MODE into its config when it is imported, so the config is reloaded
    from the environment after setting it.
    """
    if os.environ.get("RAY_AUTH_MODE") == "token":
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # Ray's own way to re-read RAY_* variables

        Config.initialize("")
    except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
        pass


@functools.lru_cache(maxsize=1)
def _actor_class():
    """The Ray actor class of a socket, made once per process: ``ray.remote`` of a class
    exports (pickles) it, which costs as much as the actor's start when done per socket."""
    return ray.remote(SocketActor)


def _spawn(spec: ClusterSpec, node: int, local: int, detached: bool | None = None):
    """Create the actor of socket ``local`` of emulated node ``node`` (detached: it outlives
    the process that created it; default as the cluster's spec says)."""
    detached = spec.detached if detached is None else detached
    opts: dict[str, Any] = dict(
        name=actor_name(spec.name, node, local), namespace=NAMESPACE, num_cpus=0,
        max_concurrency=ACTOR_CONCURRENCY, max_restarts=0,
        lifetime="detached" if detached else None)
    if spec.ray_nodes:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.ray_nodes[node],
                                                                     soft=False)
    ident = SocketId(spec.name, node, local, spec.sockets_per_node)
    return _actor_class().options(**opts).remote(
        ident.to_dict(), spec.profile, spec.to_dict(), spec.trace_capacity)


def _check_shape(nodes: int, sockets_per_node: int, profile: Profile) -> Profile:
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ConfigError(f"--nodes must be a whole number >= 1, got {nodes!r}")
    if nodes > 256:
        raise ConfigError(f"--nodes {nodes} is more than the 256 nodes one cluster may have")
    return profile.with_sockets_per_node(sockets_per_node)


class Cluster:
    """Handles to the socket actors of one emulated cluster. Build with :meth:`start` or
    :meth:`connect`; ``__init__`` only stores."""

    def __init__(self, spec: ClusterSpec, handles: list):
        self.spec = spec
        self.handles = handles
        self.profile = Profile.from_dict(spec.profile)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def start(cls, nodes: int = 1, sockets_per_node: int | None = None,
              profile: "str | Path | Profile" = "sn40l", name: str = "default",
              address: str | None = None, detached: bool = False,
              trace_capacity: int = 100_000, timeout_s: float = 120.0) -> "Cluster":
        """Start ``nodes`` x ``sockets_per_node`` socket actors and wait until all answer."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        prof = _check_shape(nodes, sockets_per_node or prof.sockets_per_node, prof)
        check_cluster_name(name)
        ensure_ray(address)
        if cls.exists(name):
            running = cls.connect(name)
            raise ClusterError(
                f"cluster {name!r} is already running ({running.spec.nodes} nodes x "
                f"{running.spec.sockets_per_node} sockets); stop it first (sn40l cluster down)")
        from sn40l.collectives.shm import sweep

        swept = sweep()  # segments a crashed cluster left behind (owners dead), never live ones
        if swept:
            log.info("removed %d shared-memory segments left by dead sockets", swept)
        ray_nodes = cls._pick_ray_nodes(nodes)
        spec = ClusterSpec(name, nodes, prof.sockets_per_node, prof.to_dict(), tuple(ray_nodes),
                           detached, trace_capacity)
        t0 = time.perf_counter()
        handles = [_spawn(spec, n, s) for n in range(nodes) for s in range(prof.sockets_per_node)]
        cluster = cls(spec, handles)
        try:
            cluster.wait_healthy(timeout_s)
        except BaseException:
            cluster.stop()
            raise
        log.info("cluster %r up: %d x %d sockets in %.2f s", name, nodes, prof.sockets_per_node,
                 time.perf_counter() - t0)
        return cluster

    def reprofile(self, profile: "str | Path | Profile") -> None:
        """Make every socket a fresh socket of ``profile``, keeping its actor (empty memory,
        clocks at 0: what :meth:`start` with that profile and this shape would give, without a
        bring-up's seconds of wall time; for sweeps over profiles). The cluster keeps its nodes
        and sockets per node. Refused while a socket holds a model, a collective group or a
        lease."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        prof = _check_shape(self.spec.nodes, self.spec.sockets_per_node, prof)
        spec = ClusterSpec(self.spec.name, self.spec.nodes, self.spec.sockets_per_node,
                           prof.to_dict(), self.spec.ray_nodes, self.spec.detached,
                           self.spec.trace_capacity)
        ray.get([h.reset_socket.remote(spec.profile, spec.to_dict()) for h in self.handles])
        self.spec, self.profile = spec, Profile.from_dict(spec.profile)

    def revive(self, ranks: Iterable[int] | None = None, timeout_s: float = 60.0) -> list[int]:
        """Start fresh socket actors for the dead ones among ``ranks`` (default all), under
        their old names, with empty memory (as a socket after a reset). Returns the ranks
        restarted; a revived socket that runs other sn40l code is refused as at :meth:`start`.

        A revived socket is a detached actor: it outlives the process that revived it (the
        scheduler's controller, a driver), and :meth:`stop` finds it by name."""
        ranks = list(range(self.world_size)) if ranks is None else list(ranks)
        dead = []
        for r in ranks:
            h = self.handles[r]
            try:
                if h is None:
                    raise ClusterError("no actor")
                ray.get(h.ping.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - any failure to answer means the socket is gone
                dead.append(r)
        spn = self.spec.sockets_per_node
        for r in dead:
            node, local = divmod(r, spn)
            try:
                ray.kill(ray.get_actor(actor_name(self.spec.name, node, local),
                                       namespace=NAMESPACE), no_restart=True)
            except (ValueError, Exception):  # noqa: BLE001 - already gone
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(actor_name(self.spec.name, node, local), namespace=NAMESPACE)
                    time.sleep(0.05)
                except ValueError:
                    break
            self.handles[r] = _spawn(self.spec, node, local, detached=True)
        if dead:
            try:
                pings = ray.get([self.handles[r].ping.remote() for r in dead],
                                timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                raise ClusterError(f"revived sockets {dead} did not answer within "
                                   f"{timeout_s:.0f} s") from None
            self._refuse_other_code(pings)
        return dead

    @staticmethod
    def _pick_ray_nodes(nodes: int) -> list[str]:
        alive = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        if len(alive) >= nodes > 1:
            return sorted(alive)[:nodes]
        return []

    @staticmethod
    def live_sockets(name: str = "default") -> list[str]:
        """Names of the live socket actors of cluster ``name`` (any rank: none is special)."""
        prefix = f"{name}:n"
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a.get("namespace") == NAMESPACE and a["name"].startswith(prefix)
                      and _is_socket_name(a["name"][len(prefix):]))

    @classmethod
    def exists(cls, name: str = "default") -> bool:
        return bool(cls.live_sockets(name))

    @classmethod
    def connect(cls, name: str = "default", address: str | None = None) -> "Cluster":
        """Handles to a running cluster, found by name. Its shape comes from whichever of its
        sockets answers first, so the death of any one socket (rank 0 included) leaves the
        cluster reachable, with the dead ones as None."""
        if address is not None:
            ensure_ray(address)
        if not ray.is_initialized():
            raise ClusterError("not connected to Ray; start a cluster (sn40l cluster up) first")
        spec = None
        for actor in cls.live_sockets(name):
            try:
                handle = ray.get_actor(actor, namespace=NAMESPACE)
                spec = ClusterSpec.from_dict(ray.get(handle.get_cluster_spec.remote(),
                                                     timeout=10))
                break
            except (ValueError, ray.exceptions.RayError):  # died meanwhile: ask the next one
                continue
        if spec is None:
            raise ClusterError(f"no cluster named {name!r} is running; start one with "
                               "'sn40l cluster up'")
        cluster = cls(spec, [None] * spec.world_size)
        cluster.handles = [cluster.lookup(r) for r in range(spec.world_size)]
        return cluster

    def lookup(self, rank: int):
        """The live actor of socket ``rank`` found by name (a revived one included), or None
        when it is dead (status shows it as down)."""
        node, local = divmod(rank, self.spec.sockets_per_node)
        try:
            return ray.get_actor(actor_name(self.spec.name, node, local), namespace=NAMESPACE)
        except ValueError:
            return None

    # -- access ---------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.spec.world_size

    def socket(self, rank: int):
        """The actor handle of global rank ``rank`` (node * sockets_per_node + local)."""
        if not 0 <= rank < len(self.handles):
            raise ConfigError(f"socket rank {rank} out of range 0..{len(self.handles) - 1}")
        handle = self.handles[rank]
        if handle is None:
            raise ClusterError(f"socket rank {rank} of cluster {self.spec.name!r} is down")
        return handle

    def node_ranks(self, node: int) -> list[int]:
        spn = self.spec.sockets_per_node
        if not 0 <= node < self.spec.nodes:
            raise ConfigError(f"node {node} out of range 0..{self.spec.nodes - 1}")
        return list(range(node * spn, (node + 1) * spn))

    def call(self, method: str, *args: Any, ranks: Iterable[int] | None = None,
             timeout_s: float | None = None, **kwargs: Any) -> list:
        """Call ``method`` on the sockets of ``ranks`` (default all) in parallel; results by rank."""
        ranks = list(range(self.world_size)) if ranks is None else list(ranks)
        refs = [getattr(self.socket(r), method).remote(*args, **kwargs) for r in ranks]
        return ray.get(refs, timeout=timeout_s)

    def wait_healthy(self, timeout_s: float = 60.0) -> list[dict]:
        """Every socket's :meth:`SocketActor.ping`, once all answer; a socket that runs other
        sn40l code than this process is refused by name (:mod:`sn40l.provenance`)."""
        try:
            pings = self.call("ping", timeout_s=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise ClusterError(f"cluster {self.spec.name!r}: sockets did not answer within "
                               f"{timeout_s:.0f} s") from None
        self._refuse_other_code(pings)
        return pings

    def _refuse_other_code(self, pings: list[dict]) -> None:
        """Raise when a socket (one of ``pings``) runs other sn40l code than this process."""
        mine = provenance()
        other = [p for p in pings if p.get("code") != mine["code"]]
        if other:
            p = other[0]
            raise ClusterError(
                f"cluster {self.spec.name!r}: {len(other)} socket(s) run other sn40l code than "
                f"this process, e.g. socket {p['label']} on {p['host']} (pid {p['pid']}) "
                f"runs {p.get('code_dir')} (code {p.get('code')}) while this process runs "
                f"{mine['code_dir']} (code {mine['code']}); install the same sn40l everywhere, "
                "and start drivers outside a source checkout of another version (Ray's "
                "workers import from the driver's working directory first)")

    def status(self, timeout_s: float = 10.0) -> list[dict]:
        """One row per socket: identity, state ('up'/'down'), job, per-tier used/free."""
        rows = []
        refs = {}
        for rank, h in enumerate(self.handles):
            if h is not None:
                refs[rank] = h.stats.remote()
        for rank in range(self.world_size):
            node, local = divmod(rank, self.spec.sockets_per_node)
            row: dict[str, Any] = {"rank": rank, "node": node_name(node), "socket": local}
            try:
                if rank not in refs:
                    raise ClusterError("no actor")
                st = ray.get(refs[rank], timeout=timeout_s)
                row.update(state="up", job=st["job"], now_ns=st["clock"]["now_ns"],
                           tiers=st["tiers"])
            except (ray.exceptions.RayError, ClusterError):
                row.update(state="down", job=None, now_ns=None, tiers={})
            rows.append(row)
        return rows

    def chrome_trace(self, clear: bool = False) -> dict:
        """Every socket's modeled events as one Chrome trace (open it in Perfetto)."""
        from sn40l.socket.clock import TraceEvent, chrome_trace

        by_socket = {}
        for rank, events in enumerate(self.call("trace", clear=clear)):
            node, local = divmod(rank, self.spec.sockets_per_node)
            by_socket[(node, local)] = [TraceEvent(e["name"], e["cat"], e["engine"],
                                                   e["start_ns"], e["end_ns"], e["args"])
                                        for e in events]
        return chrome_trace(by_socket)

    def stop(self) -> None:
        """Stop every socket actor of this cluster (revived ones included, found by name) and
        remove their shared-memory segments: each live socket first leaves its collective
        groups (which unlinks its segments, on whatever host it runs), then the actors are
        killed and what a dead or unresponsive socket left on this host is swept."""
        from sn40l.collectives.shm import sweep

        handles = []
        for rank, h in enumerate(self.handles):
            h = self.lookup(rank) or h  # the current actor: a revived socket replaced the old
            if h is not None:
                handles.append(h)
        closing = [h.close.remote() for h in handles]
        ready, _ = ray.wait(closing, num_returns=len(closing), timeout=5)
        pids = set()
        for ref in ready:
            try:
                pids.add(ray.get(ref)["pid"])
            except Exception:  # noqa: BLE001 - a dead socket has nothing to report
                pass
        try:  # the cluster's scheduler controller, if one was started (sn40l.scheduler)
            ray.kill(ray.get_actor(f"slurmctld:{self.spec.name}", namespace=NAMESPACE),
                     no_restart=True)
        except Exception:  # noqa: BLE001 - there is none
            pass
        for h in handles:
            try:
                ray.kill(h, no_restart=True)
            except Exception:  # noqa: BLE001 - an already-dead actor is fine
                pass
        deadline = time.monotonic() + 10
        while self.exists(self.spec.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        sweep(pids)  # segments of sockets killed in the middle of a collective
        sweep()      # and of sockets that had died before (their owner pid is gone)


def _is_socket_name(rest: str) -> bool:
    """Whether ``rest`` is the ``<node>s<local>`` tail of a socket actor's name."""
    node, sep, local = rest.partition("s")
    return bool(sep) and node.isdigit() and local.isdigit()
