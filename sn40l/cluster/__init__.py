"""Cluster bring-up on Ray (embedded local or an existing cluster), naming, topology, health.

The names below are imported on first use, so that a submodule without Ray (``record``, the
``sn40l cluster`` command's refusals of bad input) does not pay for importing Ray and numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"SocketActor": "sn40l.cluster.actor", "Cluster": "sn40l.cluster.cluster",
          "ClusterSpec": "sn40l.cluster.cluster", "NAMESPACE": "sn40l.cluster.cluster",
          "actor_name": "sn40l.cluster.cluster", "ensure_ray": "sn40l.cluster.cluster",
          "node_name": "sn40l.cluster.cluster"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sn40l.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
