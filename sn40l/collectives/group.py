"""Driver side: declare and destroy collective groups over a cluster's sockets."""

from __future__ import annotations

import os
import secrets

import ray

from sn40l.collectives.types import TransportKind
from sn40l.collectives.wire import KEY_BYTES
from sn40l.errors import ConfigError


TRANSPORT_ENV = "SN40L_TRANSPORT"  # the default transport of groups made in this process


def create_group(cluster, ranks: list[int], name: str, timeout_s: float = 30.0,
                 transport: "str | TransportKind | None" = None) -> None:
    """Make the sockets of global ``ranks`` (in that order: member i = ranks[i]) a group.

    ``transport="auto"`` uses shared memory when every member runs on one host and ``net``
    otherwise. ``"net"`` (what a multi-host cluster uses) puts TCP between emulated nodes,
    also when they share a host, and shared memory among a node's members on one host;
    ``"tcp"`` puts every message on TCP, also inside a node. ``None`` takes
    $SN40L_TRANSPORT (so a job can run its model over TCP on one host), else ``auto``.
    Every member gets the group's fresh secret, which MACs its messages (through Ray, the
    control plane, never over the transports themselves).
    """
    ranks = list(ranks)
    if len(ranks) < 1 or len(set(ranks)) != len(ranks):
        raise ConfigError(f"a group needs distinct socket ranks, got {ranks}")
    if not name or not isinstance(name, str):
        raise ConfigError(f"group name must be a non-empty string, got {name!r}")
    if transport is None:
        transport = os.environ.get(TRANSPORT_ENV) or "auto"
        if transport.lower() not in {k.value for k in TransportKind}:
            raise ConfigError(f"{TRANSPORT_ENV}={transport!r} is not a transport; allowed: "
                              f"{', '.join(k.value for k in TransportKind)}")
    chosen = resolve_transport(transport, [])
    infos = cluster.call("p2p_info", ranks=ranks)
    chosen = resolve_transport(chosen, [i["host"] for i in infos])
    members = [{"rank": i["rank"], "node": i["node"], "host": i["host"], "pid": i["pid"],
                "address": i["address"], "net": i["net"],
                "actor_name": f"{i['cluster']}:n{i['node']}s{i['local']}"} for i in infos]
    key = secrets.token_bytes(KEY_BYTES)
    refs = [cluster.socket(r).init_collective_group.remote(name, idx, members, timeout_s,
                                                           chosen.value, key)
            for idx, r in enumerate(ranks)]
    ray.get(refs)


def resolve_transport(transport: "str | TransportKind", hosts: list[str]) -> TransportKind:
    """``auto`` -> shm when all ``hosts`` are one host, net otherwise (unknown names refused);
    with no hosts yet, ``auto`` stays ``auto``."""
    kind = TransportKind.from_str(transport)
    if kind is TransportKind.AUTO and hosts:
        return TransportKind.SHM if len(set(hosts)) == 1 else TransportKind.NET
    return kind


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
