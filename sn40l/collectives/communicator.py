"""The communicator of one collective group, living inside a socket actor.

Algorithms exchange *messages*; a message says "chunk c of op s is ready" and carries its modeled
arrival time. On one host (transport ``shm``) the chunk itself stays in the sender's shared
memory segment and the receiver reads it in place: a ring step is one fused
``np.add(my_input, left_chunk, out=my_chunk)``, with no staging copy, no pickling and nothing on
the driver. Between hosts (transport ``ray``) the chunk bytes travel inside the message.

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
from typing import Any, Callable

import numpy as np

from sn40l.collectives.channel import CHUNK_BYTES, Endpoint
from sn40l.collectives.shm import Segment
from sn40l.collectives.types import AllReduceAlgo, ReduceOp, Transport
from sn40l.errors import CollectiveError, ConfigError
from sn40l.socket.device import Socket
from sn40l.socket.tensor import Tensor
from sn40l.socket.timing import transfer_ns

log = logging.getLogger("sn40l.collectives")



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
    """Collectives of one group, called from inside the member's socket actor."""

    def __init__(self, name: str, index: int, members: list[Member], socket: Socket,
                 endpoint: Endpoint, transport: Transport, timeout_s: float = 30.0,
                 deliver_remote: Callable[[Member, list], None] | None = None):
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
        self._deliver_remote = deliver_remote
        self._seq = itertools.count()
        self._pair_seq: dict[tuple[int, int], itertools.count] = {}
        self._own: dict[int, Segment] = {}
        self._retired: list[Segment] = []
        self._peers: dict[str, Segment] = {}
        self._generation = itertools.count()
        self._broken: str | None = None
        self._lock = threading.Lock()  # one collective at a time per communicator
        me = members[index]
        self._same_host = {m.index for m in members if m.host == me.host}
        profile = socket.profile
        self._p2p, self._net = profile.link("p2p"), profile.link("internode")

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

    def _peer_segment(self, name: str) -> Segment:
        seg = self._peers.get(name)
        if seg is None:
            seg = self._peers[name] = Segment(name, 0, create=False)
        return seg

    def _link(self, dst: int):
        same_node = self.members[dst].node == self.members[self.rank].node
        return self._p2p if same_node else self._net

    def _post(self, dst: int, seq: int, tag: Any, model_bytes: int, *,
              seg: Segment | None = None, offset: int = 0, data: np.ndarray | None = None,
              extra: dict | None = None) -> None:
        """Send one message to member ``dst``; ``data`` (a view into ``seg``) or no data."""
        link = self._link(dst)
        clock = self.socket.clock
        _, end = clock.occupy("p2p-tx", transfer_ns(model_bytes, link.bandwidth, 0),
                              f"{self.name} send {tag} -> {dst}", "p2p", bytes=model_bytes)
        header: dict[str, Any] = {"g": self.name, "s": seq, "k": tag, "r": self.rank,
                                  "t": end + link.latency_ns}
        if extra:
            header.update(extra)
        payload = None
        if data is not None:
            header["shape"], header["dt"] = list(data.shape), data.dtype.str
            if self.transport is Transport.SHM and dst in self._same_host and seg is not None:
                header["seg"], header["off"] = seg.name, offset
            else:
                payload = data.tobytes()
        self._deliver(self.members[dst], [header, payload])

    def _deliver(self, member: Member, message: list) -> None:
        if self.transport is Transport.RAY and self._deliver_remote is not None:
            self._deliver_remote(member, message)
            return
        try:
            self.endpoint.send(member.address, message[0], message[1], self.timeout_s)
        except (ConnectionRefusedError, FileNotFoundError):
            self._fail(f"collective group {self.name!r}: peer {self._who(member.index)} is "
                       "gone (its socket actor no longer listens)")
        except TimeoutError:
            self._fail(f"collective group {self.name!r}: peer {self._who(member.index)} did "
                       f"not accept a message within {self.timeout_s:g} s")

    def _take(self, src: int, seq: int, tag: Any) -> np.ndarray | None:
        """Wait for message (seq, tag) from ``src``; advance the clock to its arrival."""
        deadline = time.monotonic() + self.timeout_s
        try:
            header, payload = self.endpoint.wait((self.name, seq, tag, src), deadline,
                                                 self._check_peers)
        except TimeoutError:
            self._fail(f"collective group {self.name!r}: peer {self._who(src)} did not answer "
                       f"within {self.timeout_s:g} s (op {seq}, step {tag})")
        except CollectiveError as exc:
            self._broken = str(exc)
            raise
        clock = self.socket.clock
        before = clock.now
        arrival = clock.advance_to(header["t"])
        if arrival > before:
            clock.record(f"{self.name} recv {tag} <- {src}", "p2p", "p2p-rx", before, arrival)
        if "shape" not in header:
            return None
        shape, dtype = tuple(header["shape"]), np.dtype(header["dt"])
        if "seg" in header:
            return self._peer_segment(header["seg"]).view(header["off"], shape, dtype)
        return np.frombuffer(payload, dtype=dtype).reshape(shape)

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
        header = {"kind": "abort", "g": self.name, "why": why}
        for m in self.members:
            if m.index == self.rank:
                continue
            try:
                if self.transport is Transport.RAY and self._deliver_remote is not None:
                    self._deliver_remote(m, [header, None])
                else:
                    self.endpoint.send(m.address, header, None, timeout_s=1.0)
            except Exception:  # noqa: BLE001 - best effort: that peer may be the dead one
                pass
        raise CollectiveError(why)

    def _start(self) -> int:
        if self._broken:
            raise CollectiveError(f"collective group {self.name!r} is broken ({self._broken}); "
                                  "create a new group")
        return next(self._seq)

    # -- collectives ----------------------------------------------------------------------
    def allreduce(self, t: Tensor, op: "str | ReduceOp" = "sum",
                  algo: "str | AllReduceAlgo" = "auto") -> Tensor:
        """Element-wise reduction over the group; every member gets the same (bit-identical)
        result. Ring for large tensors, one-shot for small ones."""
        op, algo = ReduceOp.from_str(op), AllReduceAlgo.from_str(algo)
        with self._lock:
            seq = self._start()
            if algo is AllReduceAlgo.AUTO:
                link = max((self._link(i) for i in range(self.world_size)),
                           key=lambda lk: lk.latency_ns)
                small = t.nbytes <= star_limit_bytes(self.world_size, link.latency_ns,
                                                     link.bandwidth)
                if small:
                    algo = AllReduceAlgo.STAR
                elif self.node_layout() is not None:
                    algo = AllReduceAlgo.HIERARCHICAL
                else:
                    algo = AllReduceAlgo.RING
            t0 = self.socket.clock.now
            if self.world_size == 1:
                out = t
            elif algo is AllReduceAlgo.ONESHOT:
                out = self._oneshot(t, op, seq)
            elif algo is AllReduceAlgo.STAR:
                out = self._star(t, op, seq)
            elif algo is AllReduceAlgo.TREE:
                out = self._tree(t, op, seq)
            elif algo is AllReduceAlgo.HIERARCHICAL:
                if self.node_layout() is None:
                    raise ConfigError(f"group {self.name!r} does not span several nodes with "
                                      "equal members per node; use ring or star")
                out = self._hierarchical(t, op, seq)
            else:
                out = self._ring(t, op, seq, gather=True)
            self.socket.clock.record(f"{self.name} allreduce {algo}", "collective", "collective",
                                     t0, self.socket.clock.now, bytes=t.nbytes,
                                     world=self.world_size)
            return out

    def reduce_scatter(self, t: Tensor, op: "str | ReduceOp" = "sum") -> Tensor:
        """Reduce over the group and keep piece ``rank`` of ``world_size`` (split on axis 0)."""
        op = ReduceOp.from_str(op)
        if not t.shape:
            raise ConfigError("reduce_scatter needs a tensor with at least one dimension")
        with self._lock:
            seq = self._start()
            if self.world_size == 1:
                return t
            return self._ring(t, op, seq, gather=False)

    def _prepare(self, t: Tensor, seq: int) -> "_Work":
        if t.is_phantom:
            return _Work(seq, None, None, None, 0, t.dtype.itemsize)
        x = np.ascontiguousarray(t.data).reshape(-1)
        seg = self._buffer(seq % 2, x.nbytes)
        return _Work(seq, x, seg, seg.view(0, (x.size,), x.dtype), x.dtype.itemsize,
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
        for k in range(n - 1):  # piece pos-k-2 gets the left neighbour's partial
            view = self._take(left, w.seq, tag + k)
            c = (pos - k - 2) % n
            if w.buf is not None:
                op.ufunc(src[b[c]:b[c + 1]], view, out=w.buf[b[c]:b[c + 1]])
            if k < n - 2:
                self._post_piece(w, right, tag + k + 1, b, c)

    def _ring_ag(self, w: "_Work", peers: list[int], b: list[int], tag: int) -> None:
        """Ring allgather: every member's reduced piece travels around the ring."""
        n, pos = len(peers), peers.index(self.rank)
        right, left = peers[(pos + 1) % n], peers[(pos - 1) % n]
        self._post_piece(w, right, tag, b, pos)
        for k in range(n - 1):
            view = self._take(left, w.seq, tag + k)
            c = (pos - 1 - k) % n
            if w.buf is not None:
                w.buf[b[c]:b[c + 1]] = view
            if k < n - 2:
                self._post_piece(w, right, tag + k + 1, b, c)

    def _post_piece(self, w: "_Work", dst: int, tag: int, b: list[int], c: int) -> None:
        data = None if w.buf is None else w.buf[b[c]:b[c + 1]]
        self._post(dst, w.seq, tag, (b[c + 1] - b[c]) * w.item, seg=w.seg,
                   offset=b[c] * w.isz, data=data)

    def _ring(self, t: Tensor, op: ReduceOp, seq: int, gather: bool) -> Tensor:
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
            return t.like(w.buf[b[r]:b[r + 1]].reshape(shape).copy())
        self._ring_ag(w, peers, b, tag=n)
        return t if w.buf is None else t.like(w.buf.reshape(t.shape).copy())

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

    def _hierarchical(self, t: Tensor, op: ReduceOp, seq: int) -> Tensor:
        """Across nodes: ring reduce-scatter inside each node (P2P links), ring AllReduce of
        each piece among the members holding it on every node (network links), ring allgather
        inside each node. The network carries 2(m-1)/m of S/k per member instead of the
        flat ring's every-step crossing."""
        layout = self.node_layout()
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
        self._ring_ag(w, across, sub, tag=20_000)
        self._ring_ag(w, mine, b, tag=30_000)
        return t if w.buf is None else t.like(w.buf.reshape(t.shape).copy())

    def _oneshot(self, t: Tensor, op: ReduceOp, seq: int) -> Tensor:
        n = self.world_size
        if t.is_phantom:
            for dst in range(n):
                if dst != self.rank:
                    self._post(dst, seq, 0, t.nbytes)
            for src in range(n):
                if src != self.rank:
                    self._take(src, seq, 0)
            return t
        x = np.ascontiguousarray(t.data).reshape(-1)
        seg = self._buffer(seq % 2, x.nbytes)
        buf = seg.view(0, (x.size,), x.dtype)
        buf[:] = x
        for dst in range(n):
            if dst != self.rank:
                self._post(dst, seq, 0, t.nbytes, seg=seg, data=buf)
        views = {self.rank: buf}
        for src in range(n):
            if src != self.rank:
                views[src] = self._take(src, seq, 0)
        acc = views[0].copy()  # the same rank order everywhere: bit-identical results
        for src in range(1, n):
            op.ufunc(acc, views[src], out=acc)
        return t.like(acc.reshape(t.shape))

    def _star(self, t: Tensor, op: ReduceOp, seq: int) -> Tensor:
        """Small tensors: every member sends to member 0, which reduces in rank order and
        sends the result back (2(n-1) messages in all; 2 on a non-root member)."""
        n, root = self.world_size, 0
        x = None if t.is_phantom else np.ascontiguousarray(t.data).reshape(-1)
        seg = None if x is None else self._buffer(seq % 2, x.nbytes)
        buf = None if seg is None else seg.view(0, (x.size,), x.dtype)
        if self.rank != root:
            if buf is not None:
                buf[:] = x
            self._post(root, seq, 0, t.nbytes, seg=seg, data=buf)
            view = self._take(root, seq, 1)
            return t.like(None if view is None else view.reshape(t.shape).copy())
        views = [self._take(src, seq, 0) for src in range(1, n)]
        if buf is not None:
            buf[:] = x
            for view in views:  # rank order 0, 1, ..., n-1 as in every other algorithm
                op.ufunc(buf, view, out=buf)
        for dst in range(1, n):
            self._post(dst, seq, 1, t.nbytes, seg=seg, data=buf)
        return t.like(None if buf is None else buf.reshape(t.shape).copy())

    def _tree(self, t: Tensor, op: ReduceOp, seq: int) -> Tensor:
        """Small tensors: reduce up a binomial tree to member 0, broadcast back down it
        (2 log2(n) message hops on the critical path, one wake-up per hop)."""
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
        d = 1 << max(0, (n - 1).bit_length() - 1)
        while d >= 1:  # broadcast back down: holders (r % 2d == 0) send to r + d
            if r % (2 * d) == 0:
                if r + d < n:
                    self._post_piece(w, r + d, _DOWN + d, full, 0)
            elif r % (2 * d) == d:
                view = self._take(r - d, seq, _DOWN + d)
                if w.buf is not None:
                    w.buf[:] = view
            d //= 2
        return t if w.buf is None else t.like(w.buf.reshape(t.shape).copy())

    def allgather(self, t: Tensor) -> Tensor:
        """Concatenate every member's tensor (same shape on all) along axis 0, in rank order."""
        with self._lock:
            seq = self._start()
            n, r = self.world_size, self.rank
            shape = (n * (t.shape[0] if t.shape else 1),) + tuple(t.shape[1:])
            if n == 1:
                return t.like(None if t.is_phantom else t.data.reshape(shape))
            right, left = (r + 1) % n, (r - 1) % n
            block = t.numel
            seg = buf = None
            if not t.is_phantom:
                x = np.ascontiguousarray(t.data).reshape(-1)
                seg = self._buffer(seq % 2, n * x.nbytes)
                buf = seg.view(0, (n * block,), x.dtype)
                buf[r * block:(r + 1) * block] = x
            isz = 0 if buf is None else buf.dtype.itemsize

            def post(tag: int, c: int) -> None:
                data = None if buf is None else buf[c * block:(c + 1) * block]
                self._post(right, seq, tag, t.nbytes, seg=seg, offset=c * block * isz, data=data)

            post(0, r)
            for k in range(n - 1):
                view = self._take(left, seq, k)
                c = (r - 1 - k) % n
                if buf is not None:
                    buf[c * block:(c + 1) * block] = view
                if k < n - 2:
                    post(k + 1, c)
            if buf is None:
                return Tensor.phantom(shape, t.dtype)
            return Tensor(shape, t.dtype, buf.reshape(shape).copy())

    def broadcast(self, t: Tensor, root: int = 0) -> Tensor:
        """Every member gets the root's tensor (the others' ``t`` gives shape and dtype)."""
        if not 0 <= root < self.world_size:
            raise ConfigError(f"broadcast root {root} out of range 0..{self.world_size - 1}")
        with self._lock:
            seq = self._start()
            if self.rank == root:
                seg = data = None
                if not t.is_phantom:
                    x = np.ascontiguousarray(t.data).reshape(-1)
                    seg = self._buffer(seq % 2, x.nbytes)
                    data = seg.view(0, (x.size,), x.dtype)
                    data[:] = x
                for dst in range(self.world_size):
                    if dst != root:
                        self._post(dst, seq, 0, t.nbytes, seg=seg, data=data)
                return t
            view = self._take(root, seq, 0)
            return t.like(None if view is None else view.reshape(t.shape).copy())

    def barrier(self) -> None:
        """Return once every member has entered the barrier."""
        with self._lock:
            seq = self._start()
            for dst in range(self.world_size):
                if dst != self.rank:
                    self._post(dst, seq, 0, 0)
            for src in range(self.world_size):
                if src != self.rank:
                    self._take(src, seq, 0)

    # -- point to point -------------------------------------------------------------------
    def _next_pair(self, src: int, dst: int) -> int:
        return next(self._pair_seq.setdefault((src, dst), itertools.count()))

    def send(self, t: Tensor, peer: int) -> None:
        """Stream ``t`` to member ``peer`` in chunks of at most 64 KiB (ordered, no loss)."""
        self._check_member(peer)
        seq = f"p2p{self._next_pair(self.rank, peer)}"
        data = None if t.is_phantom else np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
        raw = b"" if data is None else data.tobytes()
        chunks = max(1, math.ceil(len(raw) / CHUNK_BYTES))
        link = self._link(peer)
        _, end = self.socket.clock.occupy("p2p-tx", transfer_ns(t.nbytes, link.bandwidth, 0),
                                          f"{self.name} send -> {peer}", "p2p", bytes=t.nbytes)
        meta = {"g": self.name, "s": seq, "r": self.rank, "t": end + link.latency_ns,
                "n": chunks, "shape": list(t.shape), "edt": t.dtype.name,
                "dt": None if t.is_phantom else t.data.dtype.str}
        for i in range(chunks):
            self._deliver(self.members[peer],
                          [{**meta, "k": i}, raw[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES]])

    def recv(self, peer: int) -> Tensor:
        """Receive the next tensor that member ``peer`` sent to this member."""
        self._check_member(peer)
        seq = f"p2p{self._next_pair(peer, self.rank)}"
        deadline = time.monotonic() + self.timeout_s
        parts = []
        header: dict = {}
        i = 0
        while True:
            try:
                header, payload = self.endpoint.wait((self.name, seq, i, peer), deadline,
                                                     self._check_peers)
            except TimeoutError:
                self._fail(f"collective group {self.name!r}: peer {self._who(peer)} sent "
                           f"nothing within {self.timeout_s:g} s")
            parts.append(payload)
            i += 1
            if i >= header["n"]:
                break
        self.socket.clock.advance_to(header["t"])
        if header["dt"] is None:
            return Tensor.phantom(header["shape"], header["edt"])
        arr = np.frombuffer(b"".join(parts), dtype=np.dtype(header["dt"]))
        return Tensor.of(arr.reshape(header["shape"]).copy(), header["edt"])

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
        self.endpoint.forget(self.name)


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
