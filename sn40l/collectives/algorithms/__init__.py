"""AllReduce algorithms, looked up by :class:`AllReduceAlgo` in one table. Each is a function
``(communicator, tensor, op, seq, out) -> Tensor`` built from the communicator's message verbs
(post, take, forward); a new algorithm is one new module, one enum member and one row here."""

from __future__ import annotations

from typing import Callable

from sn40l.collectives.algorithms.oneshot import allreduce_oneshot
from sn40l.collectives.algorithms.ring import allreduce_hierarchical, allreduce_ring
from sn40l.collectives.algorithms.star import allreduce_star, star_limit_bytes
from sn40l.collectives.algorithms.tree import allreduce_tree
from sn40l.collectives.types import AllReduceAlgo
from sn40l.errors import ConfigError
from sn40l.socket.tensor import Tensor

AllReduceFn = Callable[..., Tensor]  # (Communicator, Tensor, ReduceOp, int, ndarray | None)

ALLREDUCE: dict[AllReduceAlgo, AllReduceFn] = {
    AllReduceAlgo.RING: allreduce_ring,
    AllReduceAlgo.HIERARCHICAL: allreduce_hierarchical,
    AllReduceAlgo.STAR: allreduce_star,
    AllReduceAlgo.TREE: allreduce_tree,
    AllReduceAlgo.ONESHOT: allreduce_oneshot,
}


def allreduce_algorithm(algo: AllReduceAlgo) -> AllReduceFn:
    """The function of ``algo`` (``auto`` is chosen by size before this is asked)."""
    try:
        return ALLREDUCE[algo]
    except KeyError:
        raise ConfigError(f"AllReduce algorithm {algo.value!r} has no implementation; "
                          f"allowed: {', '.join(a.value for a in ALLREDUCE)}") from None


__all__ = ["ALLREDUCE", "AllReduceFn", "allreduce_algorithm", "star_limit_bytes"]
