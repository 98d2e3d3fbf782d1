"""Cluster bring-up on Ray (embedded local or an existing cluster), naming, topology, health."""

from sn40l.cluster.actor import SocketActor
from sn40l.cluster.cluster import NAMESPACE, Cluster, ClusterSpec, actor_name, ensure_ray, node_name

__all__ = ["SocketActor", "Cluster", "ClusterSpec", "NAMESPACE", "actor_name", "ensure_ray",
           "node_name"]
