"""The star AllReduce of small tensors: every member sends to member 0, which reduces in rank
order and sends the result back (2(n-1) messages in all; 2 on a non-root member).

When every member is on this host the messages are doorbells (:mod:`~..doorbell`): each
member's input stays in its segment and its doorbell says so; member 0 reads the inputs in
place as they come, writes the result into its segment, and one ring of its doorbell (with the
arrival time of each member's copy) releases every member. Otherwise they are datagrams and TCP
frames, the elements of a tensor of at most :data:`BY_VALUE_BYTES` inside them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sn40l.collectives.types import ReduceOp
from sn40l.socket.tensor import Tensor

if TYPE_CHECKING:
    from sn40l.collectives.communicator import Communicator

# Largest tensor whose elements travel inside the star's messages. Beyond it they stay in the
# sender's segment: a datagram's MAC covers its payload, and hashing 4 KiB twice per message
# (sender and receiver, ~3.5 us each here) costs more than the segment copy and view that
# replace it (~2 us); at 64 KiB the root alone hashed 14 x 64 KiB (~45 us each) per AllReduce.
BY_VALUE_BYTES = 1024
# Largest tensor the doorbell path carries: copies this small are made with ordinary stores,
# which x86-64 makes visible in order (a copy of megabytes may use non-temporal stores, which it
# does not order), and larger AllReduces are the ring's anyway (the star limit of 8 or 16 SN40L
# sockets is about 200 KB).
BELL_MAX_BYTES = 256 * 2**10


def star_limit_bytes(n: int, latency_ns: int, bandwidth: int) -> int:
    """Largest AllReduce for which the star algorithm (2 latencies, n*S/B on the root's port)
    is cheaper than the ring (2(n-1) latencies, 2(n-1)/n * S/B), from the link's alpha and B.

    Like NCCL's tuning model this only *chooses* the algorithm; the time an AllReduce takes
    still comes from its messages. SN40L profile, 8 sockets: about 192 KB. On this emulator's
    transports the star is also the faster one in wall time for small messages (one wake-up
    per non-root member instead of 2(n-1) sequential ones).
    """
    if n <= 2:
        return 1 << 62
    return int(2 * (n - 2) * latency_ns * 1e-9 * bandwidth / (n - 2 * (n - 1) / n))


def allreduce_star(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
                   out: np.ndarray | None) -> Tensor:
    """Star through member 0; by value for tensors of at most :data:`BY_VALUE_BYTES`."""
    n, root = comm.world_size, 0
    if comm.bell is not None and (t.is_phantom or t.data.nbytes <= BELL_MAX_BYTES):
        return _by_bell(comm, t, op, seq, out)
    if not t.is_phantom and t.data.nbytes <= BY_VALUE_BYTES:
        return _by_value(comm, t, op, seq, out)
    w = comm.prepare(t, seq)
    full = [0, t.numel]
    if w.buf is not None:
        w.buf[:] = w.x
    if comm.rank != root:
        comm.post_piece(w, root, 0, full, 0)
        view = comm.take(root, seq, 1)
        dest = comm.dest(t, out)
        if dest is not None:
            dest[:] = view
        return comm.wrap(t, dest)
    views = [comm.take(src, seq, 0) for src in range(1, n)]
    if w.buf is not None:
        for view in views:  # rank order 0, 1, ..., n-1 as in every other algorithm
            op.ufunc(w.buf, view, out=w.buf)
    for dst in range(1, n):
        comm.post_piece(w, dst, 1, full, 0)
    dest = comm.dest(t, out)
    if dest is not None:
        dest[:] = w.buf
    return comm.wrap(t, dest)


def _by_value(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
              out: np.ndarray | None) -> Tensor:
    """The star for tiny tensors: the same messages, but they carry the elements themselves,
    so no shared segment is written or mapped."""
    x = np.ascontiguousarray(t.data).reshape(-1)
    code, size = comm.code(x.dtype), x.size
    if comm.rank != 0:
        comm.send_msg(0, seq, 0, t.nbytes, count=size, dt=code, payload=x.data)
        msg = comm.take_msg(0, seq, 1)
        dest = comm.dest(t, out)
        dest[:] = comm.array(msg)
        return comm.wrap(t, dest)
    msgs = [comm.take_msg(src, seq, 0) for src in range(1, comm.world_size)]
    dest = comm.dest(t, out)
    dest[:] = x
    ufunc = op.ufunc
    for msg in msgs:  # rank order 0, 1, ..., n-1 as in every other algorithm
        ufunc(dest, comm.array(msg), out=dest)
    for dst in range(1, comm.world_size):
        comm.send_msg(dst, seq, 1, t.nbytes, count=size, dt=code, payload=dest.data)
    return comm.wrap(t, dest)


def _by_bell(comm: "Communicator", t: Tensor, op: ReduceOp, seq: int,
             out: np.ndarray | None) -> Tensor:
    """The star over doorbells: the same messages, modeled the same way, in shared memory."""
    w = comm.prepare(t, seq)
    model_bytes = t.numel * w.item
    if w.buf is None:
        count, code, name = -1, b"", b""
    else:
        count, code, name = w.x.size, comm.code(w.x.dtype), w.seg.name_bytes
    if comm.rank != 0:
        if w.buf is not None:
            w.buf[:] = w.x
        got, dt, seg = comm.bell_to_root(seq, model_bytes, count, code, name)
        _check(comm, 0, got, dt, count, code)
        dest = comm.dest(t, out)
        if dest is not None:
            dest[:] = comm.peer_segment(seg).flat(0, count, w.x.dtype)
        return comm.wrap(t, dest)
    ufunc = op.ufunc
    for src, got, dt, seg in comm.bells_at_root(seq):  # rank order, as in every algorithm
        _check(comm, src, got, dt, count, code)
        if w.buf is not None:
            view = comm.peer_segment(seg).flat(0, count, w.x.dtype)
            if src == 1:
                ufunc(w.x, view, out=w.buf)
            else:
                ufunc(w.buf, view, out=w.buf)
    comm.release_from_root(seq, model_bytes, count, code, name)
    # after the ring, as with datagrams: a bad ``out`` fails this member only, not the others
    dest = comm.dest(t, out)
    if dest is not None:
        dest[:] = w.buf
    return comm.wrap(t, dest)


def _check(comm: "Communicator", src: int, count: int, dtype: bytes, want: int,
           want_dtype: bytes) -> None:
    """Refuse a peer's input or result of another size or dtype than this member's."""
    if (count, dtype) != (want, want_dtype):
        def what(c, d):
            return "no data (a phantom tensor)" if c < 0 else f"{c} elements of {d.decode()}"
        comm.fail(f"collective group {comm.name!r}: member {src} has {what(count, dtype)} "
                  f"for this AllReduce, member {comm.rank} has {what(want, want_dtype)}; "
                  "every member must pass the same shape and dtype")
