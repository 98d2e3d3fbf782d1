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
    """How messages travel: Unix datagrams plus shared memory on one host, TCP between hosts;
    ``auto`` picks shm when every member runs on one host and net otherwise."""

    AUTO = "auto"
    SHM = "shm"
    NET = "net"


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
