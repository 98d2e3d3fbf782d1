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


class Transport(Choice):
    """How payloads travel: shared memory on one host, Ray actor calls between hosts."""

    AUTO = "auto"
    SHM = "shm"
    RAY = "ray"


class AllReduceAlgo(Choice):
    """AllReduce algorithms: ring for large messages, star (or one-shot) for small ones,
    hierarchical when a group spans nodes."""

    AUTO = "auto"
    RING = "ring"
    ONESHOT = "oneshot"
    STAR = "star"
    TREE = "tree"
    HIERARCHICAL = "hierarchical"
