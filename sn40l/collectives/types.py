"""Closed choices of the collectives layer."""

from __future__ import annotations

import numpy as np

from sn40l.choices import Choice


class ReduceOp(Choice):
    """Element-wise reduction of AllReduce and ReduceScatter."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"

    @property
    def ufunc(self) -> np.ufunc:
        return {"sum": np.add, "max": np.maximum, "min": np.minimum}[self.value]


class TransportKind(Choice):
    """How messages travel. ``shm``: Unix datagrams plus shared memory (every member on one
    host). ``net``: TCP between nodes (as between hosts), shared memory among the members of a
    node on one host. ``tcp``: every message over TCP, also inside a node (to measure and
    test the TCP path alone). ``auto`` picks shm when every member runs on one host and net
    otherwise."""

    AUTO = "auto"
    SHM = "shm"
    NET = "net"
    TCP = "tcp"


class AllReduceAlgo(Choice):
    """AllReduce algorithms: ring for large messages, star (or one-shot) for small ones,
    hierarchical when a group spans nodes."""

    AUTO = "auto"
    RING = "ring"
    ONESHOT = "oneshot"
    STAR = "star"
    TREE = "tree"
    HIERARCHICAL = "hierarchical"


class Drop(Choice):
    """Why an endpoint dropped a datagram or frame (each counted in ``Endpoint.stats``)."""

    MALFORMED = "malformed"  # too short, lengths that do not add up, unknown kind
    UNKNOWN_GROUP = "unknown_group"  # no group of that name here (foreign, or destroyed)
    BAD_MAC = "bad_mac"  # the MAC does not verify with the group's key: forged or damaged
    BAD_HELLO = "bad_hello"  # a TCP connection that did not prove it holds a group's key
