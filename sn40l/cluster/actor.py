"""SocketActor: one emulated SN40L socket as a Ray actor.

The actor hosts a :class:`~sn40l.socket.Socket` (memory tiers, virtual clock) and the operations
later layers add through mixins: collectives (:class:`CollectiveOps`), the tile engine
(:class:`EngineOps`) and serving programs (:class:`ServeOps`). It lives in ``cluster/`` rather than ``socket/`` because it composes
layers that sit above the socket (the socket never imports collectives or the compiler).

Concurrency: the actor is threaded (``max_concurrency``), so it serves P2P traffic and health
pings while a kernel or a collective runs. Memory-tier mutations hold ``self._lock``; the clock
has its own lock.

Leasing: a socket allocated to a job (``lease(job_id, token)``) accepts work only with that job's
capability ``"<job id>:<token>"`` as the ``job`` argument (:mod:`sn40l.socket.lease`); work sent
by another job, by a bare job id or outside any job is refused, naming the holder, and so is a
release without the capability.
"""

from __future__ import annotations

import os
import socket as std_socket
import threading
import time
from typing import Any

import numpy as np

from sn40l.collectives.actor_ops import CollectiveOps
from sn40l.cluster.engine_ops import EngineOps
from sn40l.cluster.serve_ops import ServeOps
from sn40l.errors import ConfigError
from sn40l.hardware.profile import Profile
from sn40l.provenance import provenance
from sn40l.socket.device import Socket, SocketId
from sn40l.socket.lease import Lease
from sn40l.socket.tensor import Tensor


def tensor_to_wire(t: Tensor) -> dict:
    """A tensor as plain data for a Ray reply: phantom tensors carry no array."""
    return {"shape": list(t.shape), "dtype": t.dtype.name,
            "data": None if t.is_phantom else t.data}


def tensor_from_wire(obj: "dict | np.ndarray | Tensor", dtype: str | None = None) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        return Tensor.of(obj, dtype)
    if obj.get("data") is None:
        return Tensor.phantom(obj["shape"], obj.get("dtype", dtype or "bf16"))
    return Tensor.of(obj["data"], obj.get("dtype", dtype))


class SocketActor(CollectiveOps, EngineOps, ServeOps):
    """Ray actor wrapping one emulated socket. Create it through :class:`sn40l.cluster.Cluster`."""

    def __init__(self, ident: dict, profile: dict, cluster_spec: dict,
                 trace_capacity: int = 100_000):
        self.ident = SocketId(ident["cluster"], ident["node"], ident["local"],
                              ident["sockets_per_node"])
        self.profile = Profile.from_dict(profile)
        self.cluster_spec = cluster_spec
        self._trace_capacity = trace_capacity
        self.socket = Socket(self.ident, self.profile, trace_capacity)
        self._lock = threading.RLock()
        self._lease = Lease()
        self._job_owners: set[str] = set()  # owners of regions allocated by the leasing job
        self._started = time.time()
        super().__init__()

    # -- identity and health --------------------------------------------------------------
    def identity(self) -> dict:
        return {**self.ident.to_dict(), "pid": os.getpid(), "host": std_socket.gethostname(),
                "profile": self.profile.name}

    def ping(self) -> dict:
        """Health and state: identity, the sn40l code it runs (:mod:`sn40l.provenance`), job
        lease, modeled now, RSS of this process."""
        import psutil  # noqa: PLC0415 - psutil is only needed for this report

        return {**self.identity(), **provenance(), "job": self._lease.job,
                "now_ns": self.socket.clock.now, "rss": psutil.Process().memory_info().rss,
                "uptime_s": time.time() - self._started}

    def get_cluster_spec(self) -> dict:
        return self.cluster_spec

    def close(self) -> dict:
        """Leave every collective group (which unlinks this socket's shared-memory segments);
        called by ``Cluster.stop`` before the actor is killed. Returns :meth:`identity`."""
        for name in self.collective_groups():
            self.destroy_collective_group(name)
        return self.identity()

    def reset_socket(self, profile: dict, cluster_spec: dict) -> dict:
        """Become a fresh socket of ``profile`` in this process (:meth:`Cluster.reprofile`):
        empty memory, the clock at 0, an empty trace, no compiled plans or replay records, as a
        socket actor just started with it. Refused while the socket holds a model, a collective
        group or a lease. Returns :meth:`identity`."""
        prof = Profile.from_dict(profile)
        with self._lock:
            held = [what for what, on in (("models", self._engines),
                                          ("collective groups", self.collective_groups()),
                                          ("a job lease", self._lease.job is not None)) if on]
            if held:
                raise ConfigError(f"socket {self.ident.label} still holds {' and '.join(held)}; "
                                  "unload, destroy or release them before a reset")
            if prof.sockets_per_node != self.ident.sockets_per_node:
                raise ConfigError(f"profile {prof.name!r} has {prof.sockets_per_node} sockets "
                                  f"per node, this cluster {self.ident.sockets_per_node}")
            self.profile, self.cluster_spec = prof, cluster_spec
            self.socket = Socket(self.ident, prof, self._trace_capacity)
            self._plans.clear()
            self._replays.clear()
            self._kernels.clear()
            self._job_owners.clear()
        return self.identity()

    # -- leasing --------------------------------------------------------------------------
    def lease(self, job_id: int, token: str) -> None:
        """Allocate this socket to ``job_id`` under ``token`` (the job's capability is
        ``"<job_id>:<token>"``); refused while another job holds it."""
        with self._lock:
            self._lease.grant(job_id, token, self.ident.label)

    def release(self, job: str | None = None, free_owner: str | None = None) -> int:
        """End the lease (a leased socket needs the holder's capability ``job``) and free what
        the job left on this socket: regions it allocated and models it loaded (a job's end
        leaves a clean socket, as an accelerator runtime resets a device between jobs).
        Returns the bytes freed."""
        with self._lock:
            held = self._lease.check(job, self.ident.label) if self._lease.job is not None \
                else None
            freed = 0
            owners = set(self._job_owners) if held is not None else set()
            if free_owner is not None:
                owners.add(free_owner)
            for owner in sorted(owners):
                self._engines.pop(owner, None)
                freed += self.socket.free_owner(owner)
            self._lease.end()
            self._job_owners.clear()
            return freed

    def _note_owner(self, job: str | int | None, owner: str) -> None:
        """Remember that the leasing job allocated regions of ``owner`` (freed at release)."""
        if self._lease.job is not None:
            self._job_owners.add(owner)  # _check_job already proved the caller holds the lease

    def leased_to(self) -> int | None:
        return self._lease.job

    def _check_job(self, job: str | int | None) -> None:
        """Refuse work on a leased socket without the holder's capability ``job`` (no lock:
        a kernel may hold it for long, and the lease is replaced whole under it)."""
        self._lease.check(job, self.ident.label)

    # -- memory ---------------------------------------------------------------------------
    def alloc(self, name: str, tier: str, shape: list[int], dtype: str = "bf16",
              owner: str = "user", read_only: bool = False, phantom: bool = False,
              job: int | None = None) -> dict:
        self._check_job(job)
        self._note_owner(job, owner)
        with self._lock:
            return self.socket.alloc(name, tier, tuple(shape), dtype, owner, read_only,
                                     phantom).describe()

    def write(self, name: str, tier: str, tensor: Any, dtype: str | None = None,
              owner: str = "user", read_only: bool = False, job: int | None = None,
              wait: bool = True) -> dict:
        """Host -> device DMA. ``tensor`` is a numpy array or ``{shape, dtype, data: None}``.
        ``wait=False`` occupies the host DMA engine without moving the socket's clock."""
        self._check_job(job)
        self._note_owner(job, owner)
        with self._lock:
            region, start, end = self.socket.write(name, tier, tensor_from_wire(tensor, dtype),
                                                   owner, read_only, wait)
        return {**region.describe(), "start_ns": start, "end_ns": end}

    def read(self, name: str, job: int | None = None) -> dict:
        """Device -> host DMA; returns ``{shape, dtype, data, start_ns, end_ns}``."""
        self._check_job(job)
        with self._lock:
            tensor, start, end = self.socket.read(name)
        return {**tensor_to_wire(tensor), "start_ns": start, "end_ns": end}

    def copy(self, src: str, dst_tier: str, dst: str | None = None, move: bool = False,
             wait: bool = True, owner: str | None = None, read_only: bool | None = None,
             job: int | None = None) -> dict:
        self._check_job(job)
        if owner is not None:
            self._note_owner(job, owner)
        with self._lock:
            region, start, end = self.socket.copy(src, dst_tier, dst, move, wait, owner,
                                                  read_only)
        return {**region.describe(), "start_ns": start, "end_ns": end}

    def free(self, name: str, job: int | None = None) -> dict:
        self._check_job(job)
        with self._lock:
            return self.socket.free(name).describe()

    def free_owner(self, owner: str, job: int | None = None) -> int:
        self._check_job(job)
        with self._lock:
            return self.socket.free_owner(owner)

    def regions(self, tier: str | None = None, owner: str | None = None) -> list[dict]:
        with self._lock:
            return [r.describe() for r in self.socket.regions(tier, owner)]

    def stats(self) -> dict:
        with self._lock:
            return {**self.socket.stats(), "job": self._lease.job}

    # -- virtual time ---------------------------------------------------------------------
    def now(self) -> int:
        return self.socket.clock.now

    def advance_to(self, t_ns: int) -> int:
        """Join an external event at modeled time ``t_ns`` (e.g. a job's start)."""
        return self.socket.clock.advance_to(t_ns)

    def trace(self, clear: bool = False) -> list[dict]:
        """This socket's modeled events (bounded log) as plain dicts."""
        events = self.socket.clock.log.events()
        if clear:
            self.socket.clock.log.clear()
        return [{"name": e.name, "cat": e.cat, "engine": e.engine, "start_ns": e.start_ns,
                 "end_ns": e.end_ns, "args": e.args} for e in events]
