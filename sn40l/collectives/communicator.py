"""The communicator of one collective group, living inside a socket actor: the collective
verbs over a :class:`~sn40l.collectives.transport.Transport`.

Algorithms (:mod:`sn40l.collectives.algorithms`) exchange *messages*; a message says "chunk c
of op s is ready" and carries its modeled arrival time. On shared memory the chunk itself stays
in the sender's segment and the receiver reads it in place: a ring step is one fused
``np.add(my_input, left_chunk, out=my_chunk)``, with no staging copy and nothing on the driver.
Over TCP (between nodes with transport ``net``, between any two members with ``tcp``) the
chunk bytes travel inside the message, and so do the elements of a tiny star AllReduce (at
most 1 KiB, one datagram each way) on any transport; elements sent by value to a member
reached by datagrams that do not fit in one go as several datagrams of the same step. Every
datagram and frame is MACed with the group's key (:mod:`sn40l.collectives.wire`). When every
member shares this host's memory, the star AllReduce and the barrier (gather at member 0,
release from it) exchange doorbells instead (:mod:`sn40l.collectives.doorbell`): records in the
members' own 0600 segments, announced by a futex word.

Virtual time emerges from the messages. Sending ``b`` bytes occupies the sender's egress port
(engine ``p2p-tx``) for ``b / B`` and the message arrives ``alpha`` later, with ``B, alpha`` of
``links.p2p`` inside a node and ``links.internode`` across nodes; a receive completes at
``max(receiver clock, arrival)``. Reductions stream through the PCUs at link rate and add no
time (assumption: the SN40L reduces P2P streams on the fly). Phantom tensors run the same
schedule with modeled byte counts and no data. The transport does not change modeled time.

Each op alternates between two buffers (op sequence parity): a rank can only start op s+2 after
every peer has finished op s (op s+1's messages prove it), so no trailing barrier is needed.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sn40l.collectives.algorithms import allreduce_algorithm, star_limit_bytes
from sn40l.collectives.algorithms.ring import ring
from sn40l.collectives import doorbell
from sn40l.collectives.doorbell import Bell, bell_name
from sn40l.collectives.endpoint import POLL_S, PeerGone
from sn40l.collectives.shm import Segment, pid_alive, segment_name
from sn40l.collectives.transport import Member, Transport
from sn40l.collectives.types import AllReduceAlgo, ReduceOp
from sn40l.collectives.wire import CHUNK_BYTES, Message, encode, encode_abort, pack_extra, \
    unpack_extra
from sn40l.errors import CollectiveError, ConfigError
from sn40l.socket.device import Socket
from sn40l.socket.tensor import Tensor
from sn40l.socket.timing import transfer_ns

log = logging.getLogger("sn40l.collectives")

_DTYPES: dict[bytes, np.dtype] = {}  # dtype string of a message -> numpy dtype
_CODES: dict[np.dtype, bytes] = {}  # and back
_OPS = {o.value: o for o in ReduceOp}
_ALGOS = {a.value: a for a in AllReduceAlgo}
# sequence numbers of agree_max, apart from the ops' (from 0 up) and the P2P streams' (negative)
AGREE_SEQ = 1 << 62
BELL_POLL_S = 0.05  # how often a doorbell waiter files datagrams that came (aborts among them)


def _dtype(code: bytes) -> np.dtype:
    dt = _DTYPES.get(code)
    if dt is None:
        dt = _DTYPES[code] = np.dtype(bytes(code).decode())
    return dt


@dataclass
class Work:
    """Buffers of one collective op: this member's input, its shared segment and the array
    over it (all None for phantom tensors), host and modeled bytes per element."""

    seq: int
    x: np.ndarray | None
    seg: Segment | None
    buf: np.ndarray | None
    isz: int
    item: int


class Communicator:
    """Collectives of one group, called from inside the member's socket actor.

    ``trace_messages`` logs every message's egress-port interval and every receive wait in the
    socket's trace (as ``p2p`` events); by default only one event per collective op is logged
    (with its bytes and message count), which keeps the per-message path short. Modeled times
    are the same either way.
    """

    def __init__(self, name: str, index: int, members: list[Member], socket: Socket,
                 transport: Transport, timeout_s: float = 30.0, trace_messages: bool = False):
        if not 0 < timeout_s <= 3600:
            raise ConfigError(f"collective timeout {timeout_s!r} s is out of range; "
                              "allowed (0, 3600]")
        self.name = name
        self.rank = index
        self.members = members
        self.world_size = len(members)
        self.socket = socket
        self.transport = transport
        self.timeout_s = timeout_s
        self.trace_messages = trace_messages
        self._key = transport.key
        self._gname = name.encode()
        self._seq = itertools.count()
        self._pair_seq: dict[tuple[int, int], itertools.count] = {}
        self._agree_seq = itertools.count(AGREE_SEQ)
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
        # members reached by datagrams (MACed whole), whose messages may name a place in
        # this member's shared segment; the others are reached over TCP
        self._by_shm = {m.index for m in members if transport.maps_segments(m.index)}
        profile = socket.profile
        self._p2p, self._net = profile.link("p2p"), profile.link("internode")
        self._links = [self._p2p if m.node == me.node else self._net for m in members]
        slow = max(self._links, key=lambda lk: lk.latency_ns)
        self._star_limit = star_limit_bytes(self.world_size, slow.latency_ns, slow.bandwidth)
        self.layout = self.node_layout()
        # doorbells (small messages as shared-memory records, :mod:`~.doorbell`) when every
        # member is reached through shared memory
        self.bell: Bell | None = None
        self._bells: dict[int, Bell] = {}
        self._next_check = 0.0
        if len(self._by_shm) == self.world_size and doorbell.available():
            self.bell = Bell(bell_name(socket.ident.cluster, me.rank, me.pid, self._key),
                             self.world_size, own=True)

    # -- message verbs for the algorithms --------------------------------------------------
    @staticmethod
    def code(dt: np.dtype) -> bytes:
        """The dtype string a message carries for numpy dtype ``dt``."""
        code = _CODES.get(dt)
        if code is None:
            code = _CODES[dt] = dt.str.encode()
        return code

    def _buffer(self, parity: int, nbytes: int) -> Segment:
        seg = self._own.get(parity)
        if seg is None or seg.size < nbytes:
            if seg is not None:
                self._retired.append(seg)  # peers may still read it: closed with the group
            size = max(4096, 1 << max(0, (nbytes - 1).bit_length()))
            # the owner pid in the name lets a sweep remove what a killed socket left behind
            seg = Segment(segment_name(self.socket.ident.cluster, self.members[self.rank].rank,
                                       f"{id(self):x}.{next(self._generation)}"),
                          size, create=True)
            self._own[parity] = seg
        return seg

    def peer_segment(self, name: bytes) -> Segment:
        seg = self._peers.get(name)
        if seg is None:
            seg = self._peers[name] = Segment(bytes(name).decode(), 0, create=False)
        return seg

    def send_msg(self, dst: int, seq: int, tag: int, model_bytes: int, *, count: int = -1,
                 dt: bytes = b"", seg: bytes = b"", off: int = 0,
                 payload: "bytes | memoryview" = b"", extra: bytes = b"") -> int:
        """Model one message on this member's egress port, send it to member ``dst``, and
        return its modeled arrival time."""
        arrival = self.model_send(dst, tag, model_bytes)
        whole = dst in self._by_shm  # a datagram: MACed whole
        if isinstance(payload, memoryview) and payload.format != "B":
            payload = payload.cast("B")
        if whole and len(payload) > CHUNK_BYTES:  # elements too many for one datagram
            for start in range(0, len(payload), CHUNK_BYTES):
                self._deliver(dst, encode(self._key, self._gname, seq, tag, self.rank,
                                          arrival, off=start, count=count, dt=dt,
                                          payload=payload[start:start + CHUNK_BYTES]))
            return arrival
        self._deliver(dst, encode(self._key, self._gname, seq, tag, self.rank, arrival,
                                  off=off, count=count, dt=dt, seg=seg, extra=extra,
                                  payload=payload, mac_payload=whole))
        return arrival

    def model_send(self, dst: int, tag: int, model_bytes: int) -> int:
        """Occupy this member's egress port with a message of ``model_bytes`` to ``dst``;
        the message's modeled arrival time. Every sent message is modeled here, whatever
        carries it (datagram, TCP frame or doorbell)."""
        link = self._links[dst]
        clock = self.socket.clock
        duration = transfer_ns(model_bytes, link.bandwidth, 0)
        if self.trace_messages:
            _, end = clock.occupy("p2p-tx", duration, f"{self.name} send {tag} -> {dst}", "p2p",
                                  bytes=model_bytes)
        else:
            _, end = clock.reserve("p2p-tx", duration)
        self._sent += 1
        return end + link.latency_ns

    def model_recv(self, src: int, tag: int, arrival: int) -> None:
        """Complete the receive of a message from ``src`` that arrives at ``arrival``: the
        clock moves to it (a receive never moves the clock back)."""
        clock = self.socket.clock
        if self.trace_messages:
            before = clock.now
            arrival = clock.advance_to(arrival)
            if arrival > before:
                clock.record(f"{self.name} recv {tag} <- {src}", "p2p", "p2p-rx", before,
                             arrival)
        else:
            clock.advance_to(arrival)

    def post(self, dst: int, seq: int, tag: int, model_bytes: int, *,
             seg: Segment | None = None, offset: int = 0,
             data: np.ndarray | None = None) -> None:
        """Send one message to member ``dst``: ``data`` (a 1-D view at byte ``offset`` of
        ``seg``) by its place in ``seg`` on shared memory, by value otherwise; or no data."""
        if data is None:
            self.send_msg(dst, seq, tag, model_bytes)
        elif seg is not None and dst in self._by_shm:
            self.send_msg(dst, seq, tag, model_bytes, count=data.size,
                          dt=self.code(data.dtype), seg=seg.name_bytes, off=offset)
        else:
            self.send_msg(dst, seq, tag, model_bytes, count=data.size,
                          dt=self.code(data.dtype), payload=data.data)

    def post_piece(self, w: Work, dst: int, tag: int, b: list[int], c: int) -> None:
        """Send piece ``c`` (elements ``b[c]:b[c+1]``) of this op's buffer to ``dst``."""
        data = None if w.buf is None else w.buf[b[c]:b[c + 1]]
        self.post(dst, w.seq, tag, (b[c + 1] - b[c]) * w.item, seg=w.seg,
                  offset=b[c] * w.isz, data=data)

    def forward(self, dst: int, seq: int, tag: int, model_bytes: int, msg: Message) -> None:
        """Pass a received message's data on to ``dst`` (its place in the owner's segment
        when ``dst`` can map it, else its bytes): nothing is copied to forward a piece."""
        if msg.seg and dst not in self._by_shm:
            data = self.array(msg)
            self.send_msg(dst, seq, tag, model_bytes, count=msg.count, dt=msg.dt,
                          payload=data.data)
            return
        self.send_msg(dst, seq, tag, model_bytes, count=msg.count, dt=msg.dt, seg=msg.seg,
                      off=msg.off, payload=msg.payload)

    def relay(self, w: Work, dst: int, tag: int, b: list[int], c: int, msg: Message,
              held: bool) -> None:
        """Pass piece ``c`` (elements ``b[c]:b[c+1]``) of a received message on to ``dst``.
        A piece that came by value (over TCP) goes on to a member on shared memory by its
        place in this member's segment, copied there first unless ``held`` (it already is),
        rather than as datagrams of elements. The caller knows that nobody still reads that
        part of the segment."""
        if msg.seg or dst not in self._by_shm or w.buf is None:
            self.forward(dst, w.seq, tag, (b[c + 1] - b[c]) * w.item, msg)
            return
        if not held:
            w.buf[b[c]:b[c + 1]] = self.array(msg)
        self.post_piece(w, dst, tag, b, c)

    def _deliver(self, dst: int, parts: list, timeout_s: float | None = None) -> None:
        try:
            self.transport.send(dst, parts, timeout_s)
        except PeerGone as exc:
            self.fail(f"collective group {self.name!r}: peer {self._who(exc.index)} "
                      f"{exc.why}")
        except TimeoutError:
            self.fail(f"collective group {self.name!r}: peer {self._who(dst)} did "
                      f"not accept a message within {self.timeout_s:g} s")

    def take_msg(self, src: int, seq: int, tag: int) -> Message:
        """Wait for message (seq, tag) from ``src``; advance the clock to its arrival."""
        msg = self._wait(src, seq, tag)
        self.model_recv(src, tag, msg.t)
        return msg

    def _wait(self, src: int, seq: int, tag: int) -> Message:
        """Message (seq, tag) from ``src``, or the group's failure raised."""
        deadline = time.monotonic() + self.timeout_s
        try:
            msg = self.transport.wait(src, seq, tag, deadline, self._check_peers)
            if msg.count > 0 and not msg.seg and len(msg.payload) < msg.count * _dtype(
                    msg.dt).itemsize:  # the first datagram of elements sent in several
                msg = self._rest(msg, deadline)
        except (TimeoutError, PeerGone) as exc:
            self._waited_in_vain(exc, src, seq, tag)
        except CollectiveError as exc:
            self._broken = str(exc)
            raise
        return msg

    def _waited_in_vain(self, exc: Exception, src: int, seq: int, tag: int) -> None:
        """Fail the group for a wait on ``src`` (op ``seq``, step ``tag``) that ended in
        ``exc``, naming the member: gone, aborted, not this user's, or silent too long."""
        where = f"collective group {self.name!r}: peer"
        if isinstance(exc, PeerGone):
            self.fail(f"{where} {self._who(exc.index)} {exc.why}")
        if isinstance(exc, ConnectionAbortedError):
            self.fail(f"{where} {self._who(src)} aborted it")
        if isinstance(exc, PermissionError):
            self.fail(f"collective group {self.name!r}: {exc}")
        self.fail(f"{where} {self._who(src)} did not answer within {self.timeout_s:g} s "
                  f"(op {seq}, step {tag})")

    def wait_bell(self, src: int, seq: int, tag: int) -> tuple[Bell, int, bytes, bytes]:
        """``src``'s doorbell once it rang for op ``seq``: (its bell, element count, dtype,
        data segment name); the group's failure raised as :meth:`_wait` raises it."""
        deadline = time.monotonic() + self.timeout_s
        try:
            bell = self._bells.get(src) or self._open_bell(src, deadline)
            return (bell, *bell.wait(seq, deadline, self._bell_poll, BELL_POLL_S))
        except (TimeoutError, ConnectionAbortedError, PermissionError) as exc:
            self._waited_in_vain(exc, src, seq, tag)
        except CollectiveError as exc:
            self._broken = str(exc)
            raise

    def bell_to_root(self, seq: int, model_bytes: int, count: int, dtype: bytes,
                     seg: bytes) -> tuple[int, bytes, bytes]:
        """A member other than 0 in a star over doorbells: ring member 0 with this member's
        record (``model_bytes`` modeled), wait for member 0's answer and receive it in modeled
        time. Member 0's (count, dtype, data segment)."""
        bell = self.bell
        bell.stamps[0] = self.model_send(0, 0, model_bytes)
        bell.ring(seq, count, dtype, seg)
        root, got, dt, name = self.wait_bell(0, seq, 1)
        self.model_recv(0, 1, int(root.stamps[self.rank]))
        return got, dt, name

    def bells_at_root(self, seq: int) -> Iterator[tuple[int, int, bytes, bytes]]:
        """Member 0 in a star over doorbells: every other member's record as it rings, in rank
        order, received in modeled time: (member, count, dtype, data segment)."""
        for src in range(1, self.world_size):
            peer, got, dt, name = self.wait_bell(src, seq, 0)
            self.model_recv(src, 0, int(peer.stamps[0]))
            yield src, got, dt, name

    def release_from_root(self, seq: int, model_bytes: int, count: int, dtype: bytes,
                          seg: bytes) -> int:
        """Member 0 in a star over doorbells: answer every member with one ring, each message
        modeled on member 0's port in rank order. The last modeled arrival."""
        stamps = self.bell.stamps
        for dst in range(1, self.world_size):
            stamps[dst] = self.model_send(dst, 1, model_bytes)
        self.bell.ring(seq, count, dtype, seg)
        return int(stamps[1:].max(initial=0))  # a group of one has nobody to answer

    def _open_bell(self, src: int, deadline: float) -> Bell:
        """Map member ``src``'s doorbell (it makes it when it joins the group)."""
        m = self.members[src]
        name = bell_name(self.socket.ident.cluster, m.rank, m.pid, self._key)
        while True:
            try:
                bell = self._bells[src] = Bell(name, self.world_size, own=False)
                return bell
            except FileNotFoundError:
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                self._bell_poll()
                time.sleep(0.001)

    def _bell_poll(self) -> None:
        """While waiting on a doorbell: file datagrams that came meanwhile (an abort among
        them raises), and every POLL_S check that the peers live."""
        ep = self.transport.endpoint
        ep.drain()
        why = ep.aborted(self._gname)
        if why is not None:
            raise CollectiveError(why)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + POLL_S
            self._check_peers()

    def _rest(self, first: Message, deadline: float) -> Message:
        """The whole message whose first datagram is ``first``: the other datagrams of its
        step follow it in order, each carrying its byte offset."""
        data = bytearray(first.count * _dtype(first.dt).itemsize)
        got = 0
        msg = first
        while True:
            end = msg.off + len(msg.payload)
            if msg.off != got or end > len(data):
                raise CollectiveError(f"collective group {self.name!r}: peer "
                                      f"{self._who(first.src)} sent a piece at byte "
                                      f"{msg.off} of step {first.tag}, expected byte {got}")
            data[got:end] = msg.payload
            got = end
            if got == len(data):
                return first._replace(payload=memoryview(data))
            msg = self.transport.wait(first.src, first.seq, first.tag, deadline,
                                      self._check_peers)

    def array(self, msg: Message) -> np.ndarray | None:
        """The elements a message carries (a view into the sender's segment), or None."""
        if msg.count < 0:
            return None
        if msg.seg:
            return self.peer_segment(msg.seg).flat(msg.off, msg.count, _dtype(msg.dt))
        return np.frombuffer(msg.payload, _dtype(msg.dt), msg.count)

    def take(self, src: int, seq: int, tag: int) -> np.ndarray | None:
        """The elements of message (seq, tag) from ``src`` (see :meth:`take_msg`)."""
        return self.array(self.take_msg(src, seq, tag))

    def prepare(self, t: Tensor, seq: int) -> Work:
        """This op's buffers: the input flattened and a segment half of the parity pair."""
        if t.is_phantom:
            return Work(seq, None, None, None, 0, t.dtype.itemsize)
        x = np.ascontiguousarray(t.data).reshape(-1)
        seg = self._buffer(seq % 2, x.nbytes)
        return Work(seq, x, seg, seg.flat(0, x.size, x.dtype), x.dtype.itemsize,
                    t.dtype.itemsize)

    @staticmethod
    def dest(t: Tensor, out: np.ndarray | None) -> np.ndarray | None:
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
    def wrap(t: Tensor, dest: np.ndarray | None) -> Tensor:
        """The result tensor over ``dest`` (phantom when ``dest`` is None)."""
        if dest is None:
            return Tensor(t.shape, t.dtype, None)
        return Tensor(t.shape, t.dtype, dest.reshape(t.shape))

    # -- failure ----------------------------------------------------------------------------
    def _who(self, index: int) -> str:
        m = self.members[index]
        return f"rank {index} (socket {m.actor_name}, pid {m.pid})"

    def _check_peers(self) -> None:
        """Raise when a member on this host has died or the transport lost one."""
        for m in self.members:
            if m.index in self._same_host and m.index != self.rank and not pid_alive(m.pid):
                self.fail(f"collective group {self.name!r}: peer {self._who(m.index)} died")
        try:
            self.transport.check()
        except PeerGone as exc:
            self.fail(f"collective group {self.name!r}: peer {self._who(exc.index)} "
                      f"{exc.why}")

    def fail(self, why: str) -> None:
        """Tell every member to abort this group, then raise."""
        self._broken = why
        data = encode_abort(self._key, self._gname, self.rank, why)
        for m in self.members:
            if m.index == self.rank:
                continue
            try:
                self.transport.send(m.index, data, timeout_s=1.0)
            except Exception:  # noqa: BLE001 - best effort: that peer may be the dead one
                pass
        if self.bell is not None:  # members asleep on this doorbell wake and read the abort
            self.bell.abort()
        raise CollectiveError(why)

    def _start(self) -> int:
        if self._broken:
            raise CollectiveError(f"collective group {self.name!r} is broken ({self._broken}); "
                                  "create a new group")
        seq = next(self._seq)
        due = self._acks.pop(seq % 2, None)
        if due is not None:  # op seq-2 was a broadcast from here: its readers must be done
            for src in due[1]:  # before this op writes the same buffer again
                self.take_msg(src, due[0], 1)
        return seq

    def _record(self, what: str, t0: int, sent0: int, nbytes: int) -> None:
        """One trace event per collective op: modeled interval, bytes, messages posted."""
        clock = self.socket.clock
        clock.record(f"{self.name} {what}", "collective", "collective", t0, clock.now,
                     bytes=nbytes, world=self.world_size, messages=self._sent - sent0)

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
                elif self.layout is not None:
                    algo = AllReduceAlgo.HIERARCHICAL
                else:
                    algo = AllReduceAlgo.RING
            t0, sent0 = self.socket.clock.now, self._sent
            if self.world_size == 1:
                dest = self.dest(t, out)
                if dest is not None:
                    dest[:] = t.data.reshape(-1)
                result = self.wrap(t, dest)
            else:
                result = allreduce_algorithm(algo)(self, t, op, seq, out)
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
            result = ring(self, t, op, seq, False, None)
            self._record("reduce_scatter", t0, sent0, t.nbytes)
            return result

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
            w = self.prepare(t, seq)
            dest = None
            if w.buf is not None:
                w.buf[:] = w.x
                dest = np.empty(n * block, w.x.dtype)
                dest[r * block:(r + 1) * block] = w.x
            self.post_piece(w, right, 0, [0, block], 0)
            for k in range(n - 1):
                msg = self.take_msg(left, seq, k)
                c = (r - 1 - k) % n
                if dest is not None:
                    dest[c * block:(c + 1) * block] = self.array(msg)
                if k < n - 2:
                    self.forward(right, seq, k + 1, t.nbytes, msg)
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
                w = self.prepare(t, seq)
                if w.buf is not None:
                    w.buf[:] = w.x
                readers = [dst for dst in range(self.world_size) if dst != root]
                for dst in readers:
                    self.post_piece(w, dst, 0, [0, t.numel], 0)
                self._acks[seq % 2] = (seq, readers)
                result = t
            else:
                view = self.take(root, seq, 0)
                result = t.like(None if view is None else view.reshape(t.shape).copy())
                self.send_msg(root, seq, 1, 0)  # done reading the root's buffer
            self._record("broadcast", t0, sent0, t.nbytes)
            return result

    def barrier(self) -> None:
        """Return once every member has entered the barrier: each member tells member 0,
        which releases them all (2(n-1) messages, not the n(n-1) of all-to-all). In modeled
        time every member leaves together, when the last release arrives."""
        with self._lock:
            seq = self._start()
            t0, sent0 = self.socket.clock.now, self._sent
            if self.bell is not None and self.rank != 0:
                self.bell_to_root(seq, 0, -1, b"", b"")
            elif self.bell is not None:
                for _ in self.bells_at_root(seq):
                    pass
                self.socket.clock.advance_to(self.release_from_root(seq, 0, -1, b"", b""))
            elif self.rank != 0:
                self.send_msg(0, seq, 0, 0)
                self.take_msg(0, seq, 1)
            else:
                for src in range(1, self.world_size):
                    self.take_msg(src, seq, 0)
                last = max((self.send_msg(dst, seq, 1, 0)
                            for dst in range(1, self.world_size)), default=0)
                self.socket.clock.advance_to(last)
            self._record("barrier", t0, sent0, 0)

    def agree_max(self, value: int) -> int:
        """The largest of the members' ``value``, returned to every member: the step where a
        driver collects the members' modeled ends and moves them all to the latest, taken among
        the sockets instead (each member tells member 0, which answers them all). Control
        traffic, not modeled: no port time, no clock move, no trace event; the caller decides
        what the agreed time means."""
        with self._lock:
            if self._broken:
                raise CollectiveError(f"collective group {self.name!r} is broken "
                                      f"({self._broken}); create a new group")
            seq, value = next(self._agree_seq), int(value)
            if self.world_size == 1:
                return value
            if self.rank != 0:
                self._deliver(0, encode(self._key, self._gname, seq, 0, self.rank, value,
                                        mac_payload=0 in self._by_shm))
                return self._wait(0, seq, 1).t
            top = max([value] + [self._wait(src, seq, 0).t
                                 for src in range(1, self.world_size)])
            for dst in range(1, self.world_size):
                self._deliver(dst, encode(self._key, self._gname, seq, 1, self.rank, top,
                                          mac_payload=dst in self._by_shm))
            return top

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
            self._deliver(peer, encode(self._key, self._gname, seq, i, self.rank,
                                       end + link.latency_ns, extra=extra,
                                       payload=raw[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES],
                                       mac_payload=peer in self._by_shm))

    def recv(self, peer: int) -> Tensor:
        """Receive the next tensor that member ``peer`` sent to this member."""
        self._check_member(peer)
        seq = self._next_pair(peer, self.rank)
        parts = []
        i, chunks = 0, 1
        msg = meta = None
        while i < chunks:
            msg = self.take_msg(peer, seq, i)
            if i == 0:
                meta = unpack_extra(msg.extra)
                chunks = meta["n"]
            parts.append(msg.payload)
            i += 1
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
        for bell in [self.bell, *self._bells.values()]:
            if bell is not None:
                bell.close()
        self.bell = None
        self._own.clear()
        self._peers.clear()
        self._bells.clear()
        self.transport.close()
        self.transport.endpoint.forget(self._gname)

