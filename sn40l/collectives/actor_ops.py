"""Collective operations that SocketActor gains as a mixin: its P2P endpoint, its communicators
and Ray-callable wrappers used by tests, benchmarks and the driver."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import ray

from sn40l.collectives.communicator import Communicator
from sn40l.collectives.endpoint import Endpoint, endpoint_address
from sn40l.collectives.transport import Member, transport_class
from sn40l.collectives.wire import KEY_BYTES
from sn40l.errors import ConfigError
from sn40l.socket.tensor import Tensor


def _tensor(obj: Any, dtype: str | None) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, dict):
        if obj.get("data") is None:
            return Tensor.phantom(obj["shape"], obj.get("dtype", dtype or "bf16"))
        return Tensor.of(obj["data"], obj.get("dtype", dtype))
    return Tensor.of(np.asarray(obj), dtype)


def _wire(t: Tensor) -> dict:
    return {"shape": list(t.shape), "dtype": t.dtype.name,
            "data": None if t.is_phantom else t.data}


class CollectiveOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor`: communicator and P2P methods."""

    def __init__(self) -> None:
        super().__init__()
        self._endpoint: Endpoint | None = None
        self._comms: dict[str, Communicator] = {}
        self._comm_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------
    def _p2p(self) -> Endpoint:
        with self._comm_lock:
            if self._endpoint is None:
                ep = Endpoint(endpoint_address(self.ident.cluster, self.ident.rank, os.getpid()),
                              ray.util.get_node_ip_address())
                ep.start()
                self._endpoint = ep
            return self._endpoint

    def p2p_info(self) -> dict:
        """Where this socket's endpoint is (started on first call): its Unix address on
        this host and its TCP address for any host."""
        ep = self._p2p()
        return {**self.identity(), "address": ep.address, "net": list(ep.net_address)}

    def p2p_stats(self) -> dict:
        """What this socket's endpoint dropped (by reason) and accepted."""
        return self._p2p().stats()

    def init_collective_group(self, name: str, index: int, members: list[dict],
                              timeout_s: float = 30.0, transport: str = "shm",
                              key: bytes = b"") -> None:
        """Join group ``name`` as member ``index`` (called on every member by create_group,
        which hands every member the group's secret ``key``)."""
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ConfigError(f"collective group {name!r} needs a {KEY_BYTES}-byte key")
        cls = transport_class(transport)
        ep = self._p2p()
        with self._comm_lock:
            if name in self._comms:
                raise ConfigError(f"collective group {name!r} already exists on socket "
                                  f"{self.ident.label}; destroy it first or pick another name")
            ms = [Member(i, m["rank"], m["node"], m["host"], m["pid"], m["address"],
                         m["actor_name"], tuple(m["net"])) for i, m in enumerate(members)]
            ep.register(name.encode(), key)
            self._comms[name] = Communicator(name, index, ms, self.socket,
                                             cls(ep, name.encode(), key, ms, index, timeout_s),
                                             timeout_s)

    def destroy_collective_group(self, name: str) -> bool:
        with self._comm_lock:
            comm = self._comms.pop(name, None)
        if comm is not None:
            comm.close()
        return comm is not None

    def communicator(self, name: str) -> Communicator:
        """The communicator of group ``name`` on this socket (for code inside the actor)."""
        try:
            return self._comms[name]
        except KeyError:
            raise ConfigError(f"socket {self.ident.label} is not in collective group {name!r}; "
                              f"its groups: {', '.join(sorted(self._comms)) or 'none'}") from None

    def collective_groups(self) -> list[str]:
        return sorted(self._comms)

    # -- Ray-callable wrappers ------------------------------------------------------------
    def _timed(self, fn, job: int | None) -> dict:
        self._check_job(job)
        start = self.socket.clock.now
        t0 = time.perf_counter()
        out = fn()
        return {"result": out, "start_ns": start, "end_ns": self.socket.clock.now,
                "wall_s": time.perf_counter() - t0}

    def allreduce(self, group: str, tensor: Any, op: str = "sum", dtype: str | None = None,
                  algo: str = "auto", job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: _wire(comm.allreduce(_tensor(tensor, dtype), op, algo)), job)

    def reduce_scatter(self, group: str, tensor: Any, op: str = "sum",
                       dtype: str | None = None, job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: _wire(comm.reduce_scatter(_tensor(tensor, dtype), op)), job)

    def allgather(self, group: str, tensor: Any, dtype: str | None = None,
                  job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: _wire(comm.allgather(_tensor(tensor, dtype))), job)

    def broadcast(self, group: str, tensor: Any, root: int = 0, dtype: str | None = None,
                  job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: _wire(comm.broadcast(_tensor(tensor, dtype), root)), job)

    def barrier(self, group: str, job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(comm.barrier, job)

    def p2p_send(self, group: str, tensor: Any, peer: int, dtype: str | None = None,
                 job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: comm.send(_tensor(tensor, dtype), peer), job)

    def p2p_recv(self, group: str, peer: int, job: int | None = None) -> dict:
        comm = self.communicator(group)
        return self._timed(lambda: _wire(comm.recv(peer)), job)

    def bench_allreduce(self, group: str, nbytes: int, iters: int = 5, warmup: int = 1,
                        algo: str = "auto", phantom: bool = False,
                        fresh_result: bool = False) -> dict:
        """Run ``iters`` AllReduces of ``nbytes`` (fp32) inside the actor: wall and modeled
        seconds per iteration, without Ray call overhead, plus this process's CPU seconds.

        The result goes into one receive buffer reused by every iteration, as the MPI and
        gloo baselines do (``fresh_result`` allocates a new result array each time instead).
        """
        comm = self.communicator(group)
        n = max(1, nbytes // 4)
        t = (Tensor.phantom((n,), "fp32") if phantom else
             Tensor.of(np.random.default_rng(comm.rank).standard_normal(n, dtype=np.float32)))
        out = None if phantom or fresh_result else np.empty_like(t.data)
        walls, modeled, cpus = [], [], []
        for i in range(warmup + iters):
            comm.barrier()
            start = self.socket.clock.now
            c0 = time.process_time()
            t0 = time.perf_counter()
            comm.allreduce(t, "sum", algo, out=out)
            if i >= warmup:
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                modeled.append(self.socket.clock.now - start)
        return {"wall_s": walls, "modeled_ns": modeled, "cpu_s": cpus}
