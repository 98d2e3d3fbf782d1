"""The controller's ``nodes`` reply as the Slurm commands read it (sinfo, scontrol show
node|partition): frozen :class:`NodeInfo`, :class:`PartitionInfo` and :class:`ClusterInfo`.
Kept apart from :mod:`sn40l.scheduler.replies` so that squeue and sacct do not define them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sn40l.scheduler.replies import ReplyError, typed_record


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``sinfo``/``scontrol show node`` see it."""

    name: str
    state: str  # IDLE, MIXED, ALLOCATED, DOWN, DOWN*, DRAINED, DRAINING, COMPLETING
    cpus: int
    cpus_alloc: int
    rdus: int
    rdus_alloc: int
    mem_mb: int
    mem_alloc: int
    reason: str | None = None
    since: float | None = None
    jobs: tuple[int, ...] = ()
    partitions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as ``sinfo``/``scontrol show partition`` see it."""

    name: str
    nodes: tuple[str, ...]
    default: bool
    state: str  # UP | DOWN
    max_time: int | None = None  # seconds; None = infinite
    default_time: int | None = None
    max_nodes: int | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """The ``nodes`` reply: every node and partition."""

    nodes: tuple[NodeInfo, ...]
    partitions: tuple[PartitionInfo, ...]
    cluster: str = ""
    sockets_per_node: int = 0

    def only(self, names: set[str]) -> "ClusterInfo":
        """The nodes in ``names`` only, partitions cut to them (``sinfo -n``)."""
        return replace(self, nodes=tuple(n for n in self.nodes if n.name in names),
                       partitions=tuple(replace(p, nodes=tuple(n for n in p.nodes if n in names))
                                        for p in self.partitions))


def cluster_from_wire(reply: dict) -> ClusterInfo:
    """The ``nodes`` reply as a :class:`ClusterInfo`."""
    try:
        return ClusterInfo(tuple(typed_record(NodeInfo, n, "node") for n in reply["nodes"]),
                           tuple(typed_record(PartitionInfo, p, "partition")
                                 for p in reply["partitions"]),
                           reply.get("cluster", ""), reply.get("sockets_per_node", 0))
    except (ValueError, TypeError, KeyError) as exc:
        raise ReplyError(f"unreadable node information from the controller: {exc}") from None
