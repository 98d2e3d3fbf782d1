"""The scheduler's nodes and partitions: capacity, what running jobs hold on each node, the
admin state (DOWN/DRAIN, set by ``scontrol update NodeName=``) and the rows ``sinfo`` shows.

Resources per node: CPUs (the host's cores), RDU sockets (``--gres=rdu:N``, per node as in
Slurm) and memory when ``--mem`` is given. A node is ``alloc`` when its CPUs are all allocated
(or an exclusive job holds it), ``mix`` when some are, as Slurm reports it. Ray-free, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sn40l.scheduler.job import Alloc, Job


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

    def row(self) -> dict:
        """The partition as sinfo's client reads it."""
        return {"name": self.name, "nodes": self.nodes, "default": self.default,
                "max_time": self.max_time, "default_time": self.default_time,
                "max_nodes": self.max_nodes, "state": self.state}


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

    def free_sockets(self) -> list[int]:
        return [s for s in range(self.rdus) if s not in self.sockets_used]

    def take(self, job: Job, a: Alloc) -> None:
        """``job`` holds ``a`` on this node."""
        self.cpus_used += a.cpus
        self.sockets_used |= set(a.sockets)
        self.mem_used += a.mem
        self.jobs.add(job.id)
        if job.req.exclusive:
            self.exclusive = job.id

    def give_back(self, job: Job, a: Alloc) -> None:
        """``job`` no longer holds ``a`` here (nothing happens if it held nothing)."""
        if job.id not in self.jobs:
            return
        self.cpus_used -= a.cpus
        self.sockets_used -= set(a.sockets)
        self.mem_used -= a.mem
        self.jobs.discard(job.id)
        if self.exclusive == job.id:
            self.exclusive = None

    def row(self, completing: bool, partitions: list[str]) -> dict:
        """The node as sinfo's client reads it."""
        return {"name": self.name, "state": self.state(completing),
                "cpus": self.cpus, "cpus_alloc": self.cpus_used, "rdus": self.rdus,
                "rdus_alloc": len(self.sockets_used), "mem_mb": self.mem_mb,
                "mem_alloc": self.mem_used, "reason": self.reason,
                "since": self.since, "jobs": sorted(self.jobs), "partitions": partitions}


def allocate(job: Job, nodes: list[NodeInfo]) -> dict[str, Alloc]:
    """What ``job`` gets on each of ``nodes``: its per-node need (all of a node if exclusive),
    the first free sockets."""
    cpus, rdus, mem = job.need
    excl = job.req.exclusive
    alloc = {}
    for node in nodes:
        free = node.free_sockets()
        alloc[node.name] = Alloc(node.cpus if excl else cpus, tuple(free if excl else free[:rdus]),
                                 node.mem_mb if excl else mem)
    return alloc


NODE_STATES = ("down", "drain", "resume", "idle", "undrain")
