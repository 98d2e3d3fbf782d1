"""Finding the cluster a command should use: the one named, the one at a Ray address, the one
running, or none (then the command starts a private one).

``sn40l run``, ``sn40l bench allreduce`` and ``sn40l sweep`` call :func:`attach`. With
``--cluster NAME`` that cluster must be running; with ``--address`` the Ray cluster there must
hold an emulated cluster (the one named, or its only one); with neither, a cluster recorded by
``sn40l cluster up`` in the state directory is used when there is exactly one (or one named
``default``). :func:`announce` says on stderr which cluster a command uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from sn40l.cluster.cluster import NAMESPACE, Cluster, ensure_ray, local_auth_mode
from sn40l.cluster.record import read_record, state_dir
from sn40l.errors import ClusterError, ConfigError


def running_records() -> list[dict]:
    """Records of the clusters running from this state directory (dead daemons pruned)."""
    out = []
    for path in sorted((state_dir() / "clusters").glob("*.json")):
        rec = read_record(Path(path).stem)
        if rec is not None:
            out.append(rec)
    return out


def _clusters_on_ray() -> list[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"][:-len(":n0s0")] for a in names
                  if a.get("namespace") == NAMESPACE and a["name"].endswith(":n0s0"))


def attach(name: str | None = None, address: str | None = None) -> Cluster | None:
    """The running cluster to use, connected; None when none is running and none was asked
    for. Raises ClusterError naming what is running when the one asked for is not."""
    if address:
        rec = next((r for r in running_records() if r["address"] == address), None)
        ensure_ray(address, auth=rec.get("auth") if rec else local_auth_mode())
        found = _clusters_on_ray()
        if name is None:
            if len(found) != 1 and "default" not in found:
                raise ClusterError(f"the Ray cluster at {address} holds "
                                   f"{'no emulated cluster' if not found else found}; name "
                                   "one with --cluster or start one (sn40l cluster up "
                                   f"--address {address})")
            name = found[0] if len(found) == 1 else "default"
        if name not in found:
            raise ClusterError(f"no cluster named {name!r} on the Ray cluster at {address}; "
                               f"running there: {', '.join(found) or 'none'}")
        return Cluster.connect(name)
    records = running_records()
    if name is None:
        if not records:
            return None
        if len(records) > 1 and not any(r["name"] == "default" for r in records):
            raise ClusterError(f"several clusters are running "
                               f"({', '.join(r['name'] for r in records)}); choose one with "
                               "--cluster NAME")
        rec = records[0] if len(records) == 1 else next(r for r in records
                                                        if r["name"] == "default")
    else:
        rec = next((r for r in records if r["name"] == name), None)
        if rec is None:
            raise ClusterError(f"no cluster named {name!r} is running; running: "
                               f"{', '.join(r['name'] for r in records) or 'none'} (start "
                               "one with 'sn40l cluster up')")
    ensure_ray(rec["address"], auth=rec.get("auth"))
    return Cluster.connect(rec["name"])


def tp_ranks(tp: int, nodes: int, sockets_per_node: int) -> list[int]:
    """Global ranks of ``tp / nodes`` sockets on each of the first ``nodes`` nodes."""
    if nodes < 1 or tp % nodes:
        raise ConfigError(f"TP {tp} does not split evenly over {nodes} nodes")
    per = tp // nodes
    if per > sockets_per_node:
        raise ConfigError(f"TP {tp} on {nodes} node(s) needs {per} sockets per node; the "
                          f"nodes have {sockets_per_node}")
    return [n * sockets_per_node + s for n in range(nodes) for s in range(per)]


def place(cluster: Cluster, tp: int, nodes: int, profile: str | None = None) -> list[int]:
    """Ranks for a TP group on a running cluster, or a ConfigError saying why it cannot hold
    it (too few nodes, sockets per node, another profile)."""
    if profile is not None and cluster.profile.name != profile:
        raise ConfigError(f"the model is compiled for profile {profile!r}; {describe(cluster)} "
                          "is another profile")
    if cluster.spec.nodes < nodes:
        raise ConfigError(f"TP {tp} over {nodes} nodes does not fit {describe(cluster)}")
    return tp_ranks(tp, nodes, cluster.spec.sockets_per_node)


def describe(cluster: Cluster) -> str:
    s = cluster.spec
    return (f"cluster {s.name!r} ({s.nodes} node(s) x {s.sockets_per_node} sockets, "
            f"{cluster.profile.name})")


def announce(command: str, cluster: Cluster, private: bool = False) -> None:
    """Tell the user (stderr) which cluster ``command`` runs on."""
    how = "a private embedded" if private else "running"
    print(f"sn40l {command}: using {how} {describe(cluster)}", file=sys.stderr, flush=True)
