"""The one-shot AllReduce: every member sends its whole tensor to every other and reduces all
of them itself, in rank order (one message hop, n-1 messages out per member)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sn40l.collectives.types import ReduceOp
from sn40l.socket.tensor import Tensor

if TYPE_CHECKING:
    from sn40l.collectives.communicator import Communicator


def allreduce_oneshot(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
                      out: np.ndarray | None) -> Tensor:
    n = comm.world_size
    others = [m for m in range(n) if m != comm.rank]
    if t.is_phantom:
        for dst in others:
            comm.post(dst, seq, 0, t.nbytes)
        for src in others:
            comm.take(src, seq, 0)
        return t
    w = comm.prepare(t, seq)
    w.buf[:] = w.x
    for dst in others:
        comm.post(dst, seq, 0, t.nbytes, seg=w.seg, data=w.buf)
    views = {comm.rank: w.buf}
    for src in others:
        views[src] = comm.take(src, seq, 0)
    dest = comm.dest(t, out)
    dest[:] = views[0]  # the same rank order everywhere: bit-identical results
    for src in range(1, n):
        op.ufunc(dest, views[src], out=dest)
    return comm.wrap(t, dest)
