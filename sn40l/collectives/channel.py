"""P2P endpoints: each socket actor has one, with a mailbox of messages keyed by stream.

On one host, messages are Unix datagrams in Linux's abstract socket namespace (no files to clean
up): a fixed binary header (which group, op, step and sender, the modeled arrival time, where
the payload lies in the sender's shared-memory segment) and, for point-to-point sends, the
payload bytes themselves in chunks of at most :data:`CHUNK_BYTES`. The header is one
``struct`` pack and one unpack (no dicts, no msgpack on the hot path). A full receive queue
blocks the sender, which bounds the chunks in flight (flow control without extra messages); a
blocked sender keeps draining its own queue meanwhile. Between hosts the same bytes travel as
Ray actor calls (:meth:`Endpoint.deliver`).

A waiting thread reads the socket itself and files what it reads in the mailbox; other waiters
block on a condition variable with a deadline. Nothing spins.
"""

from __future__ import annotations

import logging
import select
import socket as std_socket
import struct
import threading
import time
from typing import Callable, NamedTuple

import msgpack

from sn40l.errors import CollectiveError

log = logging.getLogger("sn40l.collectives")

CHUNK_BYTES = 64 * 1024  # payload bytes per datagram (Unix datagrams carry ~200 KiB at most)
RECV_BYTES = CHUNK_BYTES + 4096  # a chunk and its header
SOCKET_BUFFER = 4 * 2**20
POLL_S = 0.2  # how often a waiter checks that its peers are alive

KIND_DATA, KIND_ABORT = 0, 1
# kind, len(dtype), len(group), len(segment), len(extra), seq, tag, src, arrival ns,
# byte offset in the segment, element count (-1: no data)
_HEAD = struct.Struct("<BBHHIqqiqqq")


class Message(NamedTuple):
    """A received message: modeled arrival, where its elements are, and what came along."""

    t: int  # modeled arrival time (ns)
    off: int  # byte offset in the sender's segment
    count: int  # elements (-1: a message without data)
    dt: bytes  # numpy dtype string of the elements, e.g. b"<f4"
    seg: bytes  # name of the sender's shared segment (empty: elements in ``payload``)
    extra: bytes  # msgpack of anything else (point-to-point metadata); empty when none
    payload: memoryview


def encode(group: bytes, seq: int, tag: int, src: int, t: int, *, off: int = 0,
           count: int = -1, dt: bytes = b"", seg: bytes = b"", extra: bytes = b"",
           payload: "bytes | memoryview" = b"", kind: int = KIND_DATA) -> bytes:
    """One datagram: the fixed header, the variable-length names, then the payload."""
    return b"".join((_HEAD.pack(kind, len(dt), len(group), len(seg), len(extra), seq, tag, src,
                                t, off, count), group, dt, seg, extra, payload))


def encode_abort(group: bytes, why: str) -> bytes:
    """The datagram that tells a member to abort ``group`` (``why`` is the error text)."""
    return encode(group, 0, 0, -1, 0, payload=why.encode(), kind=KIND_ABORT)


def pack_extra(meta: dict) -> bytes:
    """Point-to-point metadata (chunk count, shape, dtypes) as a message's extra bytes."""
    return msgpack.packb(meta, use_bin_type=True)


def unpack_extra(extra: bytes) -> dict:
    """The inverse of :func:`pack_extra`."""
    return msgpack.unpackb(extra, raw=False)


def endpoint_address(cluster: str, rank: int, pid: int) -> bytes:
    """Abstract-namespace address of a socket actor's endpoint (leading NUL: no file)."""
    return f"\0sn40l-p2p/{cluster}/{rank}/{pid}".encode()


class Endpoint:
    """Mailbox of one socket actor. ``__init__`` only stores; :meth:`start` binds and reads."""

    def __init__(self, address: bytes):
        self.address = address
        self._box: dict[tuple, list[Message]] = {}
        self._aborts: dict[bytes, str] = {}
        self._cond = threading.Condition(threading.Lock())
        self._rx: std_socket.socket | None = None
        self._tx: std_socket.socket | None = None
        self._reading = False

    def start(self) -> None:
        if self._rx is not None:
            return
        rx = std_socket.socket(std_socket.AF_UNIX, std_socket.SOCK_DGRAM)
        rx.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, SOCKET_BUFFER)
        rx.bind(self.address)
        # a blocking socket whose receive times out in the kernel: one recv() syscall per
        # datagram (Python's own timeout would poll() before every recv())
        rx.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVTIMEO,
                      struct.pack("ll", 0, int(POLL_S * 1e6)))
        tx = std_socket.socket(std_socket.AF_UNIX, std_socket.SOCK_DGRAM)
        tx.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, SOCKET_BUFFER)
        tx.setblocking(False)
        self._rx, self._tx = rx, tx

    # -- sending --------------------------------------------------------------------------
    def send(self, address: bytes, data: bytes, timeout_s: float = 30.0) -> None:
        """Send one datagram (from :func:`encode`); raises ConnectionRefusedError when nobody
        listens there and TimeoutError when the receiver's queue stays full for ``timeout_s``.

        A full queue (Linux keeps few datagrams per Unix socket) must not block a sender that
        others are sending to: while it waits, the sender drains its own socket into its
        mailbox, so n members sending to each other at once never deadlock.
        """
        assert self._tx is not None, "endpoint not started"
        deadline = None
        while True:
            try:
                self._tx.sendto(data, address)
                return
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + timeout_s
                if now >= deadline:
                    raise TimeoutError from None
                self._drain(0.001)

    def _drain(self, wait_s: float) -> None:
        """File whatever waits in this endpoint's socket (waiting up to ``wait_s`` for it)."""
        with self._cond:
            if self._reading or self._rx is None:
                self._cond.wait(wait_s)
                return
            self._reading = True
        got = []
        try:
            timeout = wait_s
            # recv() only after select() says a datagram is there (it would block otherwise)
            while select.select([self._rx], [], [], timeout)[0]:
                got.append(self._rx.recv(RECV_BYTES))
                timeout = 0
        finally:
            with self._cond:
                self._reading = False
                for data in got:
                    self._file(data)
                self._cond.notify_all()

    # -- receiving ------------------------------------------------------------------------
    def deliver(self, data: bytes) -> None:
        """Put a datagram in the mailbox (called by readers and by Ray calls)."""
        with self._cond:
            self._file(data)
            self._cond.notify_all()

    def _file(self, data: bytes) -> None:
        kind, dlen, glen, slen, xlen, seq, tag, src, t, off, count = _HEAD.unpack_from(data)
        p = _HEAD.size
        group = data[p:p + glen]
        p += glen
        if kind == KIND_ABORT:
            self._aborts.setdefault(group, bytes(data[p:]).decode())
            return
        dt = data[p:p + dlen]
        p += dlen
        seg = data[p:p + slen]
        p += slen
        extra = data[p:p + xlen]
        p += xlen
        message = Message(t, off, count, dt, seg, extra, memoryview(data)[p:])
        key = (group, seq, tag, src)
        queue = self._box.get(key)
        if queue is None:
            self._box[key] = [message]
        else:
            queue.append(message)

    def wait(self, key: tuple, deadline: float, check: Callable[[], None]) -> Message:
        """Block until the message ``key`` = (group bytes, seq, tag, src) arrives.

        The waiting thread itself reads the socket when no other thread does (no hand-off
        through a reader thread: one wake-up per message); other waiters sleep on the
        condition. ``check`` runs about every 200 ms (it raises when a peer has died); an
        abort of the group or the deadline raises.
        """
        group = key[0]
        next_check = time.monotonic() + POLL_S
        cond = self._cond
        with cond:
            while True:
                queue = self._box.get(key)
                if queue:
                    item = queue.pop(0)
                    if not queue:
                        del self._box[key]
                    return item
                why = self._aborts.get(group)
                if why is not None:
                    raise CollectiveError(why)
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError
                if now >= next_check:
                    cond.release()
                    try:
                        check()
                    finally:
                        cond.acquire()
                    next_check = time.monotonic() + POLL_S
                    continue
                if self._reading or self._rx is None:
                    cond.wait(min(deadline, next_check) - now)
                    continue
                self._reading = True
                cond.release()
                data = None
                try:
                    data = self._rx.recv(RECV_BYTES)
                except (BlockingIOError, TimeoutError):
                    pass  # SO_RCVTIMEO: nothing came within POLL_S
                finally:
                    cond.acquire()
                    self._reading = False
                if data is not None:
                    self._file(data)
                cond.notify_all()

    def aborted(self, group: bytes) -> str | None:
        """Why group ``group`` was aborted, or None."""
        with self._cond:
            return self._aborts.get(group)

    def forget(self, group: bytes) -> None:
        """Drop a destroyed group's pending messages."""
        with self._cond:
            for key in [k for k in self._box if k[0] == group]:
                del self._box[key]

    def close(self) -> None:
        for s in (self._rx, self._tx):
            if s is not None:
                try:
                    s.shutdown(std_socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
