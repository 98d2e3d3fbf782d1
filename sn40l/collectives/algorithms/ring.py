"""Ring algorithms: reduce-scatter and allgather over any ring of members, the flat ring
AllReduce/ReduceScatter of large tensors, and the hierarchical AllReduce across nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sn40l.collectives.types import ReduceOp
from sn40l.errors import ConfigError
from sn40l.socket.tensor import Tensor

if TYPE_CHECKING:
    from sn40l.collectives.communicator import Communicator, Work


def bounds(rows: int, parts: int) -> list[int]:
    """Row boundaries of ``parts`` near-equal pieces (pieces may be empty)."""
    return [i * rows // parts for i in range(parts + 1)]


def reduce_scatter_ring(comm: "Communicator", w: "Work", op: ReduceOp, peers: list[int],
                        b: list[int], src: np.ndarray | None, tag: int) -> None:
    """Ring reduce-scatter over members ``peers`` (ring order) of the elements split at
    bounds ``b``; afterwards this member's piece (its position in ``peers``) is reduced in
    ``w.buf``. ``src`` holds this member's contribution (may be ``w.buf`` itself)."""
    n, pos = len(peers), peers.index(comm.rank)
    right, left = peers[(pos + 1) % n], peers[(pos - 1) % n]
    c = (pos - 1) % n
    if w.buf is not None and src is not w.buf:
        w.buf[b[c]:b[c + 1]] = src[b[c]:b[c + 1]]
    comm.post_piece(w, right, tag, b, c)
    ufunc = op.ufunc
    for k in range(n - 1):  # piece pos-k-2 gets the left neighbour's partial
        view = comm.take(left, w.seq, tag + k)
        c = (pos - k - 2) % n
        if w.buf is not None:
            ufunc(src[b[c]:b[c + 1]], view, out=w.buf[b[c]:b[c + 1]])
        if k < n - 2:
            comm.post_piece(w, right, tag + k + 1, b, c)


def allgather_ring(comm: "Communicator", w: "Work", peers: list[int], b: list[int], tag: int,
                   dest: np.ndarray | None) -> None:
    """Ring allgather of the reduced pieces into ``dest`` (``w.buf`` or the result).

    The messages follow the ring (n-1 steps, each piece passing every member), but on shared
    memory a message names where its piece lies in its *owner's* segment, so each member
    copies each piece once, straight into ``dest``, and forwarding copies nothing. A piece
    that came over TCP goes on to a member on shared memory from this member's segment.
    """
    n, pos = len(peers), peers.index(comm.rank)
    right, left = peers[(pos + 1) % n], peers[(pos - 1) % n]
    if dest is not None and dest is not w.buf:
        dest[b[pos]:b[pos + 1]] = w.buf[b[pos]:b[pos + 1]]
    comm.post_piece(w, right, tag, b, pos)
    for k in range(n - 1):
        msg = comm.take_msg(left, w.seq, tag + k)
        c = (pos - 1 - k) % n
        if dest is not None:
            dest[b[c]:b[c + 1]] = comm.array(msg)
        if k < n - 2:  # the right neighbour has read this member's partial of piece c
            comm.relay(w, right, tag + k + 1, b, c, msg, dest is w.buf)


def ring(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int, gather: bool,
         out: np.ndarray | None) -> Tensor:
    """Ring AllReduce (``gather``) or ReduceScatter on axis 0 over the whole group."""
    n, r = comm.world_size, comm.rank
    peers = list(range(n))
    if gather:  # allreduce: split the flat tensor as finely as possible
        rows, row = t.numel, 1
    else:  # reduce-scatter: split on axis 0
        rows = t.shape[0]
        row = t.numel // rows if rows else 0
    b = [x * row for x in bounds(rows, n)]
    w = comm.prepare(t, seq)
    reduce_scatter_ring(comm, w, op, peers, b, w.x, tag=0)
    if not gather:  # this rank owns the fully reduced piece r
        shape = ((b[r + 1] - b[r]) // row if row else 0,) + tuple(t.shape[1:])
        if w.buf is None:
            return Tensor.phantom(shape, t.dtype)
        return Tensor(shape, t.dtype, w.buf[b[r]:b[r + 1]].reshape(shape).copy())
    dest = comm.dest(t, out)
    allgather_ring(comm, w, peers, b, n, dest)
    return comm.wrap(t, dest)


def allreduce_ring(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
                   out: np.ndarray | None) -> Tensor:
    """Large tensors: ring reduce-scatter then ring allgather, 2(n-1) steps of S/n."""
    return ring(comm, t, op, seq, True, out)


def allreduce_hierarchical(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
                           out: np.ndarray | None) -> Tensor:
    """Across nodes: ring reduce-scatter inside each node (P2P links), ring AllReduce of
    each piece among the members holding it on every node (network links), ring allgather
    inside each node. The network carries 2(m-1)/m of S/k per member instead of the flat
    ring's every-step crossing."""
    layout = comm.layout
    if layout is None:
        raise ConfigError(f"group {comm.name!r} does not span several nodes with equal "
                          "members per node; use ring or star")
    mine = next(g for g in layout if comm.rank in g)
    k, pos = len(mine), mine.index(comm.rank)
    across = [g[pos] for g in layout]  # same position on every node
    m = len(across)
    b = bounds(t.numel, k)
    w = comm.prepare(t, seq)
    reduce_scatter_ring(comm, w, op, mine, b, w.x, tag=0)
    lo, hi = b[pos], b[pos + 1]
    sub = [lo + i * (hi - lo) // m for i in range(m + 1)]
    reduce_scatter_ring(comm, w, op, across, sub, w.buf, tag=10_000)
    allgather_ring(comm, w, across, sub, 20_000, w.buf)  # this piece, whole, in the segment
    dest = comm.dest(t, out)
    allgather_ring(comm, w, mine, b, 30_000, dest)
    return comm.wrap(t, dest)
