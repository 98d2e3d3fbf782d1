"""Driver side: declare and destroy collective groups over a cluster's sockets."""

from __future__ import annotations

import ray

from sn40l.collectives.types import Transport
from sn40l.errors import ConfigError


def create_group(cluster, ranks: list[int], name: str, timeout_s: float = 30.0,
                 transport: str = "auto") -> None:
    """Make the sockets of global ``ranks`` (in that order: member i = ranks[i]) a group.

    ``transport="auto"`` uses shared memory when every member runs on one host and Ray
    otherwise; ``"ray"`` forces the Ray transport (what a multi-host cluster uses).
    """
    ranks = list(ranks)
    if len(ranks) < 1 or len(set(ranks)) != len(ranks):
        raise ConfigError(f"a group needs distinct socket ranks, got {ranks}")
    if not name or not isinstance(name, str):
        raise ConfigError(f"group name must be a non-empty string, got {name!r}")
    chosen = Transport.from_str(transport)
    infos = cluster.call("p2p_info", ranks=ranks)
    if chosen is Transport.AUTO:
        chosen = Transport.SHM if len({i["host"] for i in infos}) == 1 else Transport.RAY
    members = [{"rank": i["rank"], "node": i["node"], "host": i["host"], "pid": i["pid"],
                "address": i["address"],
                "actor_name": f"{i['cluster']}:n{i['node']}s{i['local']}"} for i in infos]
    refs = [cluster.socket(r).init_collective_group.remote(name, idx, members, timeout_s,
                                                           chosen.value)
            for idx, r in enumerate(ranks)]
    ray.get(refs)


def destroy_group(cluster, ranks: list[int], name: str) -> None:
    """Remove group ``name`` from the given sockets (dead sockets are skipped)."""
    refs = []
    for r in ranks:
        handle = cluster.handles[r]
        if handle is not None:
            refs.append(handle.destroy_collective_group.remote(name))
    for ref in refs:
        try:
            ray.get(ref, timeout=30)
        except ray.exceptions.RayError:
            pass
