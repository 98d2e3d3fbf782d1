"""The binomial-tree AllReduce of small tensors: reduce up the tree to member 0, broadcast back
down it (2 log2(n) message hops on the critical path, one wake-up per hop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sn40l.collectives.types import ReduceOp
from sn40l.socket.tensor import Tensor

if TYPE_CHECKING:
    from sn40l.collectives.communicator import Communicator

DOWN = 1 << 20  # tag offset of the broadcast half


def allreduce_tree(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
                   out: np.ndarray | None) -> Tensor:
    """The result stays in member 0's segment: the way down forwards its place (on shared
    memory) and each member copies once."""
    n, r = comm.world_size, comm.rank
    w = comm.prepare(t, seq)
    full = [0, t.numel]
    if w.buf is not None:
        w.buf[:] = w.x
    d = 1
    while d < n:  # reduce: at distance d, odd multiples send to their partner below
        if r % (2 * d) == d:
            comm.post_piece(w, r - d, d, full, 0)
            break
        if r + d < n:
            view = comm.take(r + d, seq, d)
            if w.buf is not None:
                op.ufunc(w.buf, view, out=w.buf)
        d *= 2
    dest = comm.dest(t, out)
    msg = None
    d = 1 << max(0, (n - 1).bit_length() - 1)
    while d >= 1:  # broadcast back down: holders (r % 2d == 0) send to r + d
        if r % (2 * d) == 0:
            if r + d < n:
                if msg is None:  # member 0 holds the result
                    comm.post_piece(w, r + d, DOWN + d, full, 0)
                else:  # its parent has long read this member's partial in the segment
                    comm.relay(w, r + d, DOWN + d, full, 0, msg, False)
        elif r % (2 * d) == d:
            msg = comm.take_msg(r - d, seq, DOWN + d)
        d //= 2
    if dest is not None:
        dest[:] = w.buf if msg is None else comm.array(msg)
    return comm.wrap(t, dest)
