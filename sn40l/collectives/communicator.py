"""The communicator of one collective group, living inside a socket actor.

Algorithms exchange *messages*; a message says "chunk c of op s is ready" and carries its modeled
arrival time. On one host (transport ``shm``) the chunk itself stays in the sender's shared
memory segment and the receiver reads it in place: a ring step is one fused
``np.add(my_input, left_chunk, out=my_chunk)``, with no staging copy, no pickling and nothing on
the driver. Between hosts (transport ``ray``) the chunk bytes travel inside the message, and
so do the elements of a small star AllReduce (one datagram each way) on any transport. The ring
allgather forwards *where* a piece lies in its owner's segment, so every member copies each
piece once, straight into its result.

Virtual time emerges from the messages. Sending ``b`` bytes occupies the sender's egress port
(engine ``p2p-tx``) for ``b / B`` and the message arrives ``alpha`` later, with ``B, alpha`` of
``links.p2p`` inside a node and ``links.internode`` across nodes; a receive completes at
``max(receiver clock, arrival)``. Reductions stream through the PCUs at link rate and add no
time (assumption: the SN40L reduces P2P streams on the fly). Phantom tensors run the same
schedule with modeled byte counts and no data.

Each op alternates between two buffers (op sequence parity): a rank can only start op s+2 after
every peer has finished op s (op s+1's messages prove it), so no trailing barrier is needed.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sn40l.collectives.channel import (CHUNK_BYTES, Endpoint, Message, encode, encode_abort,
                                       pack_extra, unpack_extra)
from sn40l.collectives.shm import Segment
from sn40l.collectives.types import AllReduceAlgo, ReduceOp, Transport
from sn40l.errors import CollectiveError, ConfigError
from sn40l.socket.device import Socket
from sn40l.socket.tensor import Tensor
from sn40l.socket.timing import transfer_ns

log = logging.getLogger("sn40l.collectives")

_DTYPES: dict[bytes, np.dtype] = {}  # dtype string of a message -> numpy dtype
_CODES: dict[np.dtype, bytes] = {}  # and back


def _dtype(code: bytes) -> np.dtype:
    dt = _DTYPES.get(code)
    if dt is None:
        dt = _DTYPES[code] = np.dtype(bytes(code).decode())
    return dt


def _code(dt: np.dtype) -> bytes:
    code = _CODES.get(dt)
    if code is None:
        code = _CODES[dt] = dt.str.encode()
    return code


def star_limit_bytes(n: int, latency_ns: int, bandwidth: int) -> int:
    """Largest AllReduce for which the star algorithm (2 latencies, n*S/B on the root's port)
    is cheaper than the ring (2(n-1) latencies, 2(n-1)/n * S/B), from the link's alpha and B.

    Like NCCL's tuning model this only *chooses* the algorithm; the time an AllReduce takes
    still comes from its messages. SN40L profile, 8 sockets: about 192 KB. On this emulator's
    shared-memory transport the star is also the faster one in wall time for small messages
    (one wake-up per non-root member instead of 2(n-1) sequential ones).
    """
    if n <= 2:
        return 1 << 62
    return int(2 * (n - 2) * latency_ns * 1e-9 * bandwidth / (n - 2 * (n - 1) / n))


@dataclass(frozen=True)
class Member:
    """A member of a group: its index in the group and where its socket actor runs."""

    index: int
    rank: int  # global socket rank in the cluster
    node: int
    host: str
    pid: int
    address: bytes
    actor_name: str


_DOWN = 1 << 20  # tag offset of the broadcast half of the tree algorithm


@dataclass
class _Work:
    """Buffers of one collective op: this member's input, its shared segment and the array
    over it (all None for phantom tensors), host and modeled bytes per element."""

    seq: int
    x: np.ndarray | None
    seg: Segment | None
    buf: np.ndarray | None
    isz: int
    item: int


def _bounds(rows: int, parts: int) -> list[int]:
    """Row boundaries of ``parts`` near-equal pieces (pieces may be empty)."""
    return [i * rows // parts for i in range(parts + 1)]


class Communicator:
    """Collectives of one group, called from inside the member's socket actor.

    ``trace_messages`` logs every message's egress-port interval and every receive wait in the
    socket's trace (as ``p2p`` events); by default only one event per collective op is logged
    (with its bytes and message count), which keeps the per-message path short. Modeled times
    are the same either way.
    """

    def __init__(self, name: str, index: int, members: list[Member], socket: Socket,
                 endpoint: Endpoint, transport: Transport, timeout_s: float = 30.0,
                 deliver_remote: Callable[[Member, bytes], None] | None = None,
                 trace_messages: bool = False):
        if not 0 < timeout_s <= 3600:
            raise ConfigError(f"collective timeout {timeout_s!r} s is out of range; "
                              "allowed (0, 3600]")
        self.name = name
        self.rank = index
        self.members = members
        self.world_size = len(members)
        self.socket = socket
        self.endpoint = endpoint
        self.transport = transport
        self.timeout_s = timeout_s
        self.trace_messages = trace_messages
        self._deliver_remote = deliver_remote
        self._gname = name.encode()
        self._seq = itertools.count()
        self._pair_seq: dict[tuple[int, int], itertools.count] = {}
        self._own: dict[int, Segment] = {}
        self._retired: list[Segment] = []
        self._peers: dict[bytes, Segment] = {}
        self._generation = itertools.count()
        self._broken: str | None = None
        self._sent = 0  # messages posted, for the per-op trace event
        # parity -> (op, members): a broadcast from here whose readers have not acked yet
        self._acks: dict[int, tuple[int, list[int]]] = {}
        self._lock = threading.Lock()  # one collective at a time per communicator
        me = members[index]
        self._same_host = {m.index for m in members if m.host == me.host}
        # members whose messages name a place in this member's shared segment
        self._by_shm = (self._same_host if transport is Transport.SHM else set())
        self._by_ray = transport is Transport.RAY and deliver_remote is not None
        profile = socket.profile
        self._p2p, self._net = profile.link("p2p"), profile.link("internode")
        self._links = [self._p2p if m.node == me.node else self._net for m in members]
        slow = max(self._links, key=lambda lk: lk.latency_ns)
        self._star_limit = star_limit_bytes(self.world_size, slow.latency_ns, slow.bandwidth)
        self._layout = self.node_layout()

    # -- plumbing -------------------------------------------------------------------------
    def _buffer(self, parity: int, nbytes: int) -> Segment:
        seg = self._own.get(parity)
        if seg is None or seg.size < nbytes:
            if seg is not None:
                self._retired.append(seg)  # peers may still read it: closed with the group
            size = max(4096, 1 << max(0, (nbytes - 1).bit_length()))
            # the pid prefix lets Cluster.stop sweep what a killed socket left behind
            seg = Segment(f"sn40l-{os.getpid()}-{self.members[self.rank].rank}-{id(self):x}-"
                          f"{next(self._generation)}", size, create=True)
            self._own[parity] = seg
        return seg

    def _peer_segment(self, name: bytes) -> Segment:
        seg = self._peers.get(name)
        if seg is None:
            seg = self._peers[name] = Segment(bytes(name).decode(), 0, create=False)
        return seg

    def _link(self, dst: int):
        return self._links[dst]

    def _send(self, dst: int, seq: int, tag: int, model_bytes: int, *, count: int = -1,
              dt: bytes = b"", seg: bytes = b"", off: int = 0,
              payload: "bytes | memoryview" = b"", extra: bytes = b"") -> int:
        """Model one message on this member's egress port, send it to member ``dst``, and
        return its modeled arrival time."""
        link = self._links[dst]
        clock = self.socket.clock
        duration = transfer_ns(model_bytes, link.bandwidth, 0)
        if self.trace_messages:
            _, end = clock.occupy("p2p-tx", duration, f"{self.name} send {tag} -> {dst}", "p2p",
                                  bytes=model_bytes)
        else:
            _, end = clock.reserve("p2p-tx", duration)
        self._sent += 1
        arrival = end + link.latency_ns
        self._deliver(dst, encode(self._gname, seq, tag, self.rank, arrival, off=off,
                                  count=count, dt=dt, seg=seg, extra=extra, payload=payload))
        return arrival

    def _post(self, dst: int, seq: int, tag: int, model_bytes: int, *,
              seg: Segment | None = None, offset: int = 0,
              data: np.ndarray | None = None) -> None:
        """Send one message to member ``dst``: ``data`` (a 1-D view at byte ``offset`` of
        ``seg``) by its place in ``seg`` on one host, by value otherwise; or no data."""
        if data is None:
            self._send(dst, seq, tag, model_bytes)
        elif seg is not None and dst in self._by_shm:
            self._send(dst, seq, tag, model_bytes, count=data.size, dt=_code(data.dtype),
                       seg=seg.name_bytes, off=offset)
        else:
            self._send(dst, seq, tag, model_bytes, count=data.size, dt=_code(data.dtype),
                       payload=data.data)

    def _forward(self, dst: int, seq: int, tag: int, model_bytes: int, msg: Message) -> None:
        """Pass a received message's data on to ``dst`` (its place in the owner's segment
        when ``dst`` can map it, else its bytes): nothing is copied to forward a piece."""
        if msg.seg and dst not in self._by_shm:
            data = self._array(msg)
            self._send(dst, seq, tag, model_bytes, count=msg.count, dt=msg.dt,
                       payload=data.data)
            return
        self._send(dst, seq, tag, model_bytes, count=msg.count, dt=msg.dt, seg=msg.seg,
                   off=msg.off, payload=msg.payload)

    def _deliver(self, dst: int, data: bytes) -> None:
        member = self.members[dst]
        if self._by_ray:
            self._deliver_remote(member, data)  # type: ignore[misc]
            return
        try:
            self.endpoint.send(member.address, data, self.timeout_s)
        except (ConnectionRefusedError, FileNotFoundError):
            self._fail(f"collective group {self.name!r}: peer {self._who(dst)} is "
                       "gone (its socket actor no longer listens)")
        except TimeoutError:
            self._fail(f"collective group {self.name!r}: peer {self._who(dst)} did "
                       f"not accept a message within {self.timeout_s:g} s")

    def _take_msg(self, src: int, seq: int, tag: int) -> Message:
        """Wait for message (seq, tag) from ``src``; advance the clock to its arrival."""
        deadline = time.monotonic() + self.timeout_s
        try:
            msg = self.endpoint.wait((self._gname, seq, tag, src), deadline, self._check_peers)
        except TimeoutError:
            self._fail(f"collective group {self.name!r}: peer {self._who(src)} did not answer "
                       f"within {self.timeout_s:g} s (op {seq}, step {tag})")
        except CollectiveError as exc:
            self._broken = str(exc)
            raise
        clock = self.socket.clock
        if self.trace_messages:
            before = clock.now
            arrival = clock.advance_to(msg.t)
            if arrival > before:
                clock.record(f"{self.name} recv {tag} <- {src}", "p2p", "p2p-rx", before,
                             arrival)
        else:
            clock.advance_to(msg.t)
        return msg

    def _array(self, msg: Message) -> np.ndarray | None:
        """The elements a message carries (a view into the sender's segment), or None."""
        if msg.count < 0:
            return None
        if msg.seg:
            return self._peer_segment(msg.seg).flat(msg.off, msg.count, _dtype(msg.dt))
        return np.frombuffer(msg.payload, _dtype(msg.dt), msg.count)

    def _take(self, src: int, seq: int, tag: int) -> np.ndarray | None:
        return self._array(self._take_msg(src, seq, tag))

    def _who(self, index: int) -> str:
        m = self.members[index]
        return f"rank {index} (socket {m.actor_name}, pid {m.pid})"

    def _check_peers(self) -> None:
        """Raise when a member on this host has died (checked while waiting)."""
        for m in self.members:
            if m.index in self._same_host and m.index != self.rank and not _alive(m.pid):
                self._fail(f"collective group {self.name!r}: peer {self._who(m.index)} died")

    def _fail(self, why: str) -> None:
        """Tell every member to abort this group, then raise."""
        self._broken = why
        data = encode_abort(self._gname, why)
        for m in self.members:
            if m.index == self.rank:
                continue
            try:
                if self._by_ray:
                    self._deliver_remote(m, data)  # type: ignore[misc]
                else:
                    self.endpoint.send(m.address, data, timeout_s=1.0)
            except Exception:  # noqa: BLE001 - best effort: that peer may be the dead one
                pass
        raise CollectiveError(why)

    def _start(self) -> int:
        if self._broken:
            raise CollectiveError(f"collective group {self.name!r} is broken ({self._broken}); "
                                  "create a new group")
        seq = next(self._seq)
        due = self._acks.pop(seq % 2, None)
        if due is not None:  # op seq-2 was a broadcast from here: its readers must be done
            for src in due[1]:  # before this op writes the same buffer again
                self._take_msg(src, due[0], 1)
        return seq

    def _record(self, what: str, t0: int, sent0: int, nbytes: int) -> None:
        """One trace event per collective op: modeled interval, bytes, messages posted."""
        clock = self.socket.clock
        clock.record(f"{self.name} {what}", "collective", "collective", t0, clock.now,
                     bytes=nbytes, world=self.world_size, messages=self._sent - sent0)

    @staticmethod
    def _dest(t: Tensor, out: np.ndarray | None) -> np.ndarray | None:
        """Where the result goes: ``out`` (flat view) when given, else a new array."""
        if t.is_phantom:
            return None
        if out is None:
            return np.empty(t.numel, t.data.dtype)
        if (not isinstance(out, np.ndarray) or out.shape != t.shape
                or out.dtype != t.data.dtype or not out.flags.c_contiguous):
            got = (f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray)
                   else type(out).__name__)
            raise ConfigError(f"out must be a C-contiguous array of shape {t.shape} and dtype "
                              f"{t.data.dtype} like the input; got {got}")
        return out.reshape(-1)

    @staticmethod
    def _wrap(t: Tensor, dest: np.ndarray | None) -> Tensor:
        if dest is None:
            return Tensor(t.shape, t.dtype, None)
        return Tensor(t.shape, t.dtype, dest.reshape(t.shape))

    # -- collectives ----------------------------------------------------------------------
    def allreduce(self, t: Tensor, op: "str | ReduceOp" = "sum",
                  algo: "str | AllReduceAlgo" = "auto", out: np.ndarray | None = None) -> Tensor:
        """Element-wise reduction over the group; every member gets the same (bit-identical)
        result. Ring for large tensors, star for small ones, hierarchical across nodes.

        ``out`` (an array of the input's shape and numpy dtype, may be the input's own data)
        receives the result instead of a new array, as MPI's receive buffer does.
        """
        op, algo = _OPS.get(op) or ReduceOp.from_str(op), (_ALGOS.get(algo)
                                                          or AllReduceAlgo.from_str(algo))
        with self._lock:
            seq = self._start()
            if algo is AllReduceAlgo.AUTO:
                if t.nbytes <= self._star_limit:
                    algo = AllReduceAlgo.STAR
                elif self._layout is not None:
                    algo = AllReduceAlgo.HIERARCHICAL
                else:
                    algo = AllReduceAlgo.RING
            t0, sent0 = self.socket.clock.now, self._sent
            if self.world_size == 1:
                dest = self._dest(t, out)
                if dest is not None:
                    dest[:] = t.data.reshape(-1)
                result = self._wrap(t, dest)
            elif algo is AllReduceAlgo.ONESHOT:
                result = self._oneshot(t, op, seq, out)
            elif algo is AllReduceAlgo.STAR:
                result = self._star(t, op, seq, out)
            elif algo is AllReduceAlgo.TREE:
                result = self._tree(t, op, seq, out)
            elif algo is AllReduceAlgo.HIERARCHICAL:
                if self._layout is None:
                    raise ConfigError(f"group {self.name!r} does not span several nodes with "
                                      "equal members per node; use ring or star")
                result = self._hierarchical(t, op, seq, out)
            else:
                result = self._ring(t, op, seq, True, out)
            self._record(f"allreduce {algo.value}", t0, sent0, t.nbytes)
            return result

    def reduce_scatter(self, t: Tensor, op: "str | ReduceOp" = "sum") -> Tensor:
        """Reduce over the group and keep piece ``rank`` of ``world_size`` (split on axis 0)."""
        op = ReduceOp.from_str(op)
        if not t.shape:
            raise ConfigError("reduce_scatter needs a tensor with at least one dimension")
        with self._lock:
            seq = self._start()
            if self.world_size == 1:
                return t
            t0, sent0 = self.socket.clock.now, self._sent
            result = self._ring(t, op, seq, False, None)
            self._record("reduce_scatter", t0, sent0, t.nbytes)
            return result

    def _prepare(self, t: Tensor, seq: int) -> "_Work":
        if t.is_phantom:
            return _Work(seq, None, None, None, 0, t.dtype.itemsize)
        x = np.ascontiguousarray(t.data).reshape(-1)
        seg = self._buffer(seq % 2, x.nbytes)
        return _Work(seq, x, seg, seg.flat(0, x.size, x.dtype), x.dtype.itemsize,
                     t.dtype.itemsize)

    def _ring_rs(self, w: "_Work", op: ReduceOp, peers: list[int], b: list[int],
                 src: np.ndarray | None, tag: int) -> None:
        """Ring reduce-scatter over members ``peers`` (ring order) of the elements split at
        bounds ``b``; afterwards this member's piece (its position in ``peers``) is reduced
        in ``w.buf``. ``src`` holds this member's contribution (may be ``w.buf`` itself)."""
        n, pos = len(peers), peers.index(self.rank)
        right, left = peers[(pos + 1) % n], peers[(pos - 1) % n]
        c = (pos - 1) % n
        if w.buf is not None and src is not w.buf:
            w.buf[b[c]:b[c + 1]] = src[b[c]:b[c + 1]]
        self._post_piece(w, right, tag, b, c)
        ufunc = op.ufunc
        for k in range(n - 1):  # piece pos-k-2 gets the left neighbour's partial
            view = self._take(left, w.seq, tag + k)
            c = (pos - k - 2) % n
            if w.buf is not None:
                ufunc(src[b[c]:b[c + 1]], view, out=w.buf[b[c]:b[c + 1]])
            if k < n - 2:
                self._post_piece(w, right, tag + k + 1, b, c)

    def _ring_ag(self, w: "_Work", peers: list[int], b: list[int], tag: int,
                 dest: np.ndarray | None) -> None:
        """Ring allgather of the reduced pieces into ``dest`` (``w.buf`` or the result).

        The messages follow the ring (n-1 steps, each piece passing every member), but a
        message names where its piece lies in its *owner's* segment, so each member copies
        each piece once, straight into ``dest``, and forwarding copies nothing.
        """
        n, pos = len(peers), peers.index(self.rank)
        right, left = peers[(pos + 1) % n], peers[(pos - 1) % n]
        if dest is not None and dest is not w.buf:
            dest[b[pos]:b[pos + 1]] = w.buf[b[pos]:b[pos + 1]]
        self._post_piece(w, right, tag, b, pos)
        for k in range(n - 1):
            msg = self._take_msg(left, w.seq, tag + k)
            c = (pos - 1 - k) % n
            if dest is not None:
                dest[b[c]:b[c + 1]] = self._array(msg)
            if k < n - 2:
                self._forward(right, w.seq, tag + k + 1, (b[c + 1] - b[c]) * w.item, msg)

    def _post_piece(self, w: "_Work", dst: int, tag: int, b: list[int], c: int) -> None:
        data = None if w.buf is None else w.buf[b[c]:b[c + 1]]
        self._post(dst, w.seq, tag, (b[c + 1] - b[c]) * w.item, seg=w.seg,
                   offset=b[c] * w.isz, data=data)

    def _ring(self, t: Tensor, op: ReduceOp, seq: int, gather: bool,
              out: np.ndarray | None) -> Tensor:
        n, r = self.world_size, self.rank
        peers = list(range(n))
        if gather:  # allreduce: split the flat tensor as finely as possible
            rows, row = t.numel, 1
        else:  # reduce-scatter: split on axis 0
            rows = t.shape[0]
            row = t.numel // rows if rows else 0
        b = [x * row for x in _bounds(rows, n)]
        w = self._prepare(t, seq)
        self._ring_rs(w, op, peers, b, w.x, tag=0)
        if not gather:  # this rank owns the fully reduced piece r
            shape = ((b[r + 1] - b[r]) // row if row else 0,) + tuple(t.shape[1:])
            if w.buf is None:
                return Tensor.phantom(shape, t.dtype)
            return Tensor(shape, t.dtype, w.buf[b[r]:b[r + 1]].reshape(shape).copy())
        dest = self._dest(t, out)
        self._ring_ag(w, peers, b, n, dest)
        return self._wrap(t, dest)

    def node_layout(self) -> list[list[int]] | None:
        """Members by emulated node (each list in member order) when the group spans several
        nodes with the same number of members on each; otherwise None."""
        by_node: dict[int, list[int]] = {}
        for m in self.members:
            by_node.setdefault(m.node, []).append(m.index)
        layout = [by_node[k] for k in sorted(by_node)]
        if len(layout) < 2 or len({len(g) for g in layout}) != 1:
            return None
        return layout

    def _hierarchical(self, t: Tensor, op: ReduceOp, seq: int,
                      out: np.ndarray | None) -> Tensor:
        """Across nodes: ring reduce-scatter inside each node (P2P links), ring AllReduce of
        each piece among the members holding it on every node (network links), ring allgather
        inside each node. The network carries 2(m-1)/m of S/k per member instead of the
        flat ring's every-step crossing."""
        layout = self._layout
        assert layout is not None
        mine = next(g for g in layout if self.rank in g)
        k, pos = len(mine), mine.index(self.rank)
        across = [g[pos] for g in layout]  # same position on every node
        m = len(across)
        b = _bounds(t.numel, k)
        w = self._prepare(t, seq)
        self._ring_rs(w, op, mine, b, w.x, tag=0)
        lo, hi = b[pos], b[pos + 1]
        sub = [lo + i * (hi - lo) // m for i in range(m + 1)]
        self._ring_rs(w, op, across, sub, w.buf, tag=10_000)
        self._ring_ag(w, across, sub, 20_000, w.buf)  # this piece, whole, in the segment
        dest = self._dest(t, out)
        self._ring_ag(w, mine, b, 30_000, dest)
        return self._wrap(t, dest)

    def _oneshot(self, t: Tensor, op: ReduceOp, seq: int, out: np.ndarray | None) -> Tensor:
        n = self.world_size
        if t.is_phantom:
            for dst in range(n):
                if dst != self.rank:
                    self._post(dst, seq, 0, t.nbytes)
            for src in range(n):
                if src != self.rank:
                    self._take(src, seq, 0)
            return t
        w = self._prepare(t, seq)
        w.buf[:] = w.x
        for dst in range(n):
            if dst != self.rank:
                self._post(dst, seq, 0, t.nbytes, seg=w.seg, data=w.buf)
        views = {self.rank: w.buf}
        for src in range(n):
            if src != self.rank:
                views[src] = self._take(src, seq, 0)
        dest = self._dest(t, out)
        dest[:] = views[0]  # the same rank order everywhere: bit-identical results
        for src in range(1, n):
            op.ufunc(dest, views[src], out=dest)
        return self._wrap(t, dest)

    def _star(self, t: Tensor, op: ReduceOp, seq: int, out: np.ndarray | None) -> Tensor:
        """Small tensors: every member sends to member 0, which reduces in rank order and
        sends the result back (2(n-1) messages in all; 2 on a non-root member)."""
        n, root = self.world_size, 0
        if not t.is_phantom and t.data.nbytes <= CHUNK_BYTES:
            return self._star_by_value(t, op, seq, out)
        w = self._prepare(t, seq)
        full = [0, t.numel]
        if w.buf is not None:
            w.buf[:] = w.x
        if self.rank != root:
            self._post_piece(w, root, 0, full, 0)
            view = self._take(root, seq, 1)
            dest = self._dest(t, out)
            if dest is not None:
                dest[:] = view
            return self._wrap(t, dest)
        views = [self._take(src, seq, 0) for src in range(1, n)]
        if w.buf is not None:
            for view in views:  # rank order 0, 1, ..., n-1 as in every other algorithm
                op.ufunc(w.buf, view, out=w.buf)
        for dst in range(1, n):
            self._post_piece(w, dst, 1, full, 0)
        dest = self._dest(t, out)
        if dest is not None:
            dest[:] = w.buf
        return self._wrap(t, dest)

    def _star_by_value(self, t: Tensor, op: ReduceOp, seq: int,
                       out: np.ndarray | None) -> Tensor:
        """The star for tensors that fit in one datagram: the same messages, but they carry
        the elements themselves, so no shared segment is written or mapped."""
        x = np.ascontiguousarray(t.data).reshape(-1)
        code, size, dtype = _code(x.dtype), x.size, x.dtype
        if self.rank != 0:
            self._send(0, seq, 0, t.nbytes, count=size, dt=code, payload=x.data)
            msg = self._take_msg(0, seq, 1)
            dest = self._dest(t, out)
            dest[:] = np.frombuffer(msg.payload, dtype, size)
            return self._wrap(t, dest)
        msgs = [self._take_msg(src, seq, 0) for src in range(1, self.world_size)]
        dest = self._dest(t, out)
        dest[:] = x
        ufunc = op.ufunc
        for msg in msgs:  # rank order 0, 1, ..., n-1 as in every other algorithm
            ufunc(dest, np.frombuffer(msg.payload, dtype, size), out=dest)
        for dst in range(1, self.world_size):
            self._send(dst, seq, 1, t.nbytes, count=size, dt=code, payload=dest.data)
        return self._wrap(t, dest)

    def _tree(self, t: Tensor, op: ReduceOp, seq: int, out: np.ndarray | None) -> Tensor:
        """Small tensors: reduce up a binomial tree to member 0, broadcast back down it
        (2 log2(n) message hops on the critical path, one wake-up per hop). The result stays
        in member 0's segment: the way down forwards its place and each member copies once."""
        n, r = self.world_size, self.rank
        w = self._prepare(t, seq)
        full = [0, t.numel]
        if w.buf is not None:
            w.buf[:] = w.x
        d = 1
        while d < n:  # reduce: at distance d, odd multiples send to their partner below
            if r % (2 * d) == d:
                self._post_piece(w, r - d, d, full, 0)
                break
            if r + d < n:
                view = self._take(r + d, seq, d)
                if w.buf is not None:
                    op.ufunc(w.buf, view, out=w.buf)
            d *= 2
        dest = self._dest(t, out)
        msg = None
        d = 1 << max(0, (n - 1).bit_length() - 1)
        while d >= 1:  # broadcast back down: holders (r % 2d == 0) send to r + d
            if r % (2 * d) == 0:
                if r + d < n:
                    if msg is None:  # member 0 holds the result
                        self._post_piece(w, r + d, _DOWN + d, full, 0)
                    else:
                        self._forward(r + d, seq, _DOWN + d, t.nbytes, msg)
            elif r % (2 * d) == d:
                msg = self._take_msg(r - d, seq, _DOWN + d)
            d //= 2
        if dest is not None:
            dest[:] = w.buf if msg is None else self._array(msg)
        return self._wrap(t, dest)

    def allgather(self, t: Tensor) -> Tensor:
        """Concatenate every member's tensor (same shape on all) along axis 0, in rank order.

        A ring: each block is copied once, from its owner's segment into the result."""
        with self._lock:
            seq = self._start()
            n, r = self.world_size, self.rank
            shape = (n * (t.shape[0] if t.shape else 1),) + tuple(t.shape[1:])
            if n == 1:
                return t.like(None if t.is_phantom else t.data.reshape(shape))
            t0, sent0 = self.socket.clock.now, self._sent
            right, left = (r + 1) % n, (r - 1) % n
            block = t.numel
            w = self._prepare(t, seq)
            dest = None
            if w.buf is not None:
                w.buf[:] = w.x
                dest = np.empty(n * block, w.x.dtype)
                dest[r * block:(r + 1) * block] = w.x
            self._post_piece(w, right, 0, [0, block], 0)
            for k in range(n - 1):
                msg = self._take_msg(left, seq, k)
                c = (r - 1 - k) % n
                if dest is not None:
                    dest[c * block:(c + 1) * block] = self._array(msg)
                if k < n - 2:
                    self._forward(right, seq, k + 1, t.nbytes, msg)
            self._record("allgather", t0, sent0, t.nbytes)
            if dest is None:
                return Tensor.phantom(shape, t.dtype)
            return Tensor(shape, t.dtype, dest.reshape(shape))

    def broadcast(self, t: Tensor, root: int = 0) -> Tensor:
        """Every member gets the root's tensor (the others' ``t`` gives shape and dtype).

        The root hears from nobody, so unlike the other collectives its next-but-one op does
        not prove that the readers are done with its buffer: each reader acks, and the root
        collects the acks before it writes that buffer again."""
        if not 0 <= root < self.world_size:
            raise ConfigError(f"broadcast root {root} out of range 0..{self.world_size - 1}")
        with self._lock:
            seq = self._start()
            t0, sent0 = self.socket.clock.now, self._sent
            if self.rank == root:
                w = self._prepare(t, seq)
                if w.buf is not None:
                    w.buf[:] = w.x
                readers = [dst for dst in range(self.world_size) if dst != root]
                for dst in readers:
                    self._post_piece(w, dst, 0, [0, t.numel], 0)
                self._acks[seq % 2] = (seq, readers)
                result = t
            else:
                view = self._take(root, seq, 0)
                result = t.like(None if view is None else view.reshape(t.shape).copy())
                self._send(root, seq, 1, 0)  # done reading the root's buffer
            self._record("broadcast", t0, sent0, t.nbytes)
            return result

    def barrier(self) -> None:
        """Return once every member has entered the barrier: each member tells member 0,
        which releases them all (2(n-1) messages, not the n(n-1) of all-to-all). In modeled
        time every member leaves together, when the last release arrives."""
        with self._lock:
            seq = self._start()
            t0, sent0 = self.socket.clock.now, self._sent
            if self.rank != 0:
                self._send(0, seq, 0, 0)
                self._take_msg(0, seq, 1)
            else:
                for src in range(1, self.world_size):
                    self._take_msg(src, seq, 0)
                last = max((self._send(dst, seq, 1, 0) for dst in range(1, self.world_size)),
                           default=0)
                self.socket.clock.advance_to(last)
            self._record("barrier", t0, sent0, 0)

    # -- point to point -------------------------------------------------------------------
    def _next_pair(self, src: int, dst: int) -> int:
        """Stream number of the next src -> dst tensor: negative, apart from op sequences."""
        return -1 - next(self._pair_seq.setdefault((src, dst), itertools.count()))

    def send(self, t: Tensor, peer: int) -> None:
        """Stream ``t`` to member ``peer`` in chunks of at most 64 KiB (ordered, no loss)."""
        self._check_member(peer)
        seq = self._next_pair(self.rank, peer)
        data = None if t.is_phantom else np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
        raw = memoryview(b"" if data is None else data)
        chunks = max(1, math.ceil(len(raw) / CHUNK_BYTES))
        link = self._links[peer]
        _, end = self.socket.clock.occupy("p2p-tx", transfer_ns(t.nbytes, link.bandwidth, 0),
                                          f"{self.name} send -> {peer}", "p2p", bytes=t.nbytes)
        extra = pack_extra({"n": chunks, "shape": list(t.shape), "edt": t.dtype.name,
                            "dt": None if t.is_phantom else t.data.dtype.str})
        for i in range(chunks):
            self._deliver(peer, encode(self._gname, seq, i, self.rank, end + link.latency_ns,
                                       extra=extra,
                                       payload=raw[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES]))

    def recv(self, peer: int) -> Tensor:
        """Receive the next tensor that member ``peer`` sent to this member."""
        self._check_member(peer)
        seq = self._next_pair(peer, self.rank)
        deadline = time.monotonic() + self.timeout_s
        parts = []
        i, chunks = 0, 1
        msg = None
        while i < chunks:
            try:
                msg = self.endpoint.wait((self._gname, seq, i, peer), deadline,
                                         self._check_peers)
            except TimeoutError:
                self._fail(f"collective group {self.name!r}: peer {self._who(peer)} sent "
                           f"nothing within {self.timeout_s:g} s")
            if i == 0:
                meta = unpack_extra(msg.extra)
                chunks = meta["n"]
            parts.append(msg.payload)
            i += 1
        self.socket.clock.advance_to(msg.t)
        if meta["dt"] is None:
            return Tensor.phantom(meta["shape"], meta["edt"])
        arr = np.frombuffer(b"".join(parts), dtype=np.dtype(meta["dt"]))
        return Tensor.of(arr.reshape(meta["shape"]).copy(), meta["edt"])

    def _check_member(self, peer: int) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise ConfigError(f"peer {peer} is not another member of group {self.name!r} "
                              f"(members 0..{self.world_size - 1}, this is {self.rank})")

    def close(self) -> None:
        for seg in list(self._own.values()) + self._retired:
            seg.close()
        for seg in self._peers.values():
            seg.close()
        self._own.clear()
        self._peers.clear()
        self.endpoint.forget(self._gname)


_OPS = {o.value: o for o in ReduceOp}
_ALGOS = {a.value: a for a in AllReduceAlgo}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
