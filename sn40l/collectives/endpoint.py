"""The P2P endpoint of one socket actor: a mailbox of verified messages, keyed by stream, fed
by a Unix datagram socket (one host) and by TCP connections (between hosts).

On one host, messages are Unix datagrams in Linux's abstract socket namespace (no files to
clean up). A full receive queue blocks the sender, which bounds the chunks in flight (flow
control without extra messages); a blocked sender keeps draining its own queue meanwhile. A
waiting thread reads the datagram socket itself, keeps the message it awaits and files the others
(no hand-off through a reader thread: one wake-up per message); other waiters block on a
condition with a deadline.

Between hosts, each sending member opens one TCP connection per group to each peer it sends
to; the listener sends a random challenge, and the connection counts only once the other side
has MACed it with the group's key (:mod:`sn40l.collectives.wire`). A thread per accepted
connection reads whole messages, verifies them outside the mailbox lock and files them; while
more than :data:`NET_WINDOW` bytes from one connection wait unclaimed it stops reading, so TCP's
own window pushes back on the sender (the same bounded-buffer flow control as the datagrams).
A connection that closes marks its sender lost: a waiter for that sender fails at once, naming
it. Nothing spins.

Every datagram and frame is verified before it is believed; one that fails is dropped and
counted by reason (:meth:`Endpoint.stats`), never raised to anyone.
"""

from __future__ import annotations

import logging
import os
import select
import socket as std_socket
import struct
import threading
import time
from typing import Callable

from sn40l.collectives.types import Drop
from sn40l.collectives.wire import (CHUNK_BYTES, HEAD, KIND_ABORT, KIND_DATA, KIND_HELLO,
                                    Dropped, Message, encode, frame_length, verify)
from sn40l.errors import CollectiveError

log = logging.getLogger("sn40l.collectives")

RECV_BYTES = CHUNK_BYTES + 8192  # a chunk, its header and names, and the MAC
SOCKET_BUFFER = 4 * 2**20
POLL_S = 0.2  # how often a waiter checks that its peers are alive
NET_WINDOW = 64 * 2**20  # unclaimed bytes per TCP connection before its reader pauses
CHALLENGE_BYTES = 16
HELLO_TIMEOUT_S = 10.0  # an accepted connection must authenticate within this


class PeerGone(Exception):
    """Member ``index`` of a group cannot be reached or closed its connection."""

    def __init__(self, index: int, why: str):
        super().__init__(why)
        self.index, self.why = index, why


def endpoint_address(cluster: str, rank: int, pid: int) -> bytes:
    """Abstract-namespace address of a socket actor's endpoint (leading NUL: no file)."""
    return f"\0sn40l-p2p/{cluster}/{rank}/{pid}".encode()


def _recv_exact(conn: std_socket.socket, buf: "bytearray | memoryview") -> bool:
    """Fill ``buf`` from ``conn``; False when the peer closed before the first byte."""
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = conn.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise ConnectionResetError("connection closed inside a message")
        got += n
    return True


def read_frame(conn: std_socket.socket) -> bytearray | None:
    """One whole message from a TCP stream (None at a clean end of stream)."""
    head = bytearray(HEAD.size)
    if not _recv_exact(conn, head):
        return None
    total = frame_length(head)
    data = bytearray(total)
    data[:HEAD.size] = head
    _recv_exact(conn, memoryview(data)[HEAD.size:])
    return data


class Endpoint:
    """Mailbox of one socket actor. ``__init__`` only stores; :meth:`start` binds and reads."""

    def __init__(self, address: bytes, host_ip: str = "127.0.0.1"):
        self.address = address
        self.host_ip = host_ip
        self.net_address: tuple[str, int] | None = None
        self._keys: dict[bytes, bytes] = {}  # group -> its secret
        self._box: dict[tuple, list[Message]] = {}
        self._aborts: dict[bytes, str] = {}
        self._lost: dict[tuple[bytes, int], str] = {}  # (group, src) -> why
        self._pending: dict[tuple[bytes, int], int] = {}  # TCP bytes filed, not yet taken
        self._drops = {d: 0 for d in Drop}
        self._accepted = 0
        self._cond = threading.Condition(threading.Lock())
        self._rx: std_socket.socket | None = None
        self._tx: std_socket.socket | None = None
        self._listener: std_socket.socket | None = None
        self._conns: set[std_socket.socket] = set()
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
        lis = std_socket.create_server((self.host_ip, 0), backlog=256)
        self.net_address = (self.host_ip, lis.getsockname()[1])
        self._rx, self._tx, self._listener = rx, tx, lis
        threading.Thread(target=self._accept_loop, name="p2p-accept", daemon=True).start()

    # -- groups ---------------------------------------------------------------------------
    def register(self, group: bytes, key: bytes) -> None:
        """Accept messages of ``group`` that carry a valid MAC under ``key``."""
        with self._cond:
            self._keys[group] = key

    def forget(self, group: bytes) -> None:
        """Drop a destroyed group: its key, its pending messages, its lost peers."""
        with self._cond:
            self._keys.pop(group, None)
            self._aborts.pop(group, None)
            for key in [k for k in self._box if k[0] == group]:
                del self._box[key]
            for link in [k for k in self._lost if k[0] == group]:
                del self._lost[link]
            for link in [k for k in self._pending if k[0] == group]:
                del self._pending[link]
            self._cond.notify_all()

    def stats(self) -> dict:
        """Dropped datagrams and frames by reason, and the TCP connections accepted (datagrams
        still waiting in the socket are read first: a group whose collectives go by doorbell
        may not read its socket for a while)."""
        if self._rx is not None:
            self.drain()
        with self._cond:
            return {"dropped": {d.value: n for d, n in self._drops.items()},
                    "accepted_connections": self._accepted}

    # -- verifying and filing -------------------------------------------------------------
    def _verify(self, data: "bytes | bytearray", mac_payload: bool = True) -> Message | Drop:
        try:
            return verify(data, self._keys.get, mac_payload)
        except Dropped as exc:
            return exc.reason
        except Exception:  # noqa: BLE001 - whatever a crafted datagram does, it is dropped
            return Drop.MALFORMED

    def _file(self, msg: "Message | Drop", link: tuple[bytes, int] | None = None) -> None:
        """File a verified message (caller holds the condition); count a dropped one."""
        if isinstance(msg, Drop):
            self._drops[msg] += 1
            return
        if msg.kind == KIND_ABORT:
            self._aborts.setdefault(msg.group, bytes(msg.payload).decode(errors="replace"))
            return
        if msg.kind != KIND_DATA or (link is not None and link != (msg.group, msg.src)):
            self._drops[Drop.MALFORMED] += 1  # a hello on a datagram, a sender in disguise
            return
        if link is not None:
            self._pending[link] = self._pending.get(link, 0) + len(msg.payload)
        key = (msg.group, msg.seq, msg.tag, msg.src)
        queue = self._box.get(key)
        if queue is None:
            self._box[key] = [msg]
        else:
            queue.append(msg)

    # -- Unix datagrams -------------------------------------------------------------------
    def send_datagram(self, address: bytes, parts: "list[bytes | memoryview]",
                      timeout_s: float = 30.0) -> None:
        """Send one datagram gathered from ``parts`` (no joined copy); raises ConnectionRefusedError when nobody listens there and
        TimeoutError when the receiver's queue stays full for ``timeout_s``.

        A full queue (Linux keeps few datagrams per Unix socket) must not block a sender that
        others are sending to: while it waits, the sender drains its own socket into its
        mailbox, so n members sending to each other at once never deadlock.
        """
        assert self._tx is not None, "endpoint not started"
        deadline = None
        while True:
            try:
                self._tx.sendmsg(parts, (), 0, address)
                return
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + timeout_s
                if now >= deadline:
                    raise TimeoutError from None
                self._drain(0.001)

    def drain(self) -> None:
        """File whatever waits in the datagram socket now (unless a waiter is reading it)."""
        self._drain(0)

    def _drain(self, wait_s: float) -> None:
        """File whatever waits in the datagram socket (waiting up to ``wait_s`` for it)."""
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
                got.append(self._verify(self._rx.recv(RECV_BYTES)))
                timeout = 0
        finally:
            with self._cond:
                self._reading = False
                for msg in got:
                    self._file(msg)
                self._cond.notify_all()

    def wait(self, key: tuple, deadline: float, check: Callable[[], None],
             read_datagrams: bool = True) -> Message:
        """Block until the message ``key`` = (group bytes, seq, tag, src) arrives.

        With ``read_datagrams`` the waiting thread itself reads the datagram socket when no
        other thread does; otherwise (TCP groups, whose readers file for them) it sleeps on the
        condition. ``check`` runs about every 200 ms (it raises when a peer has died); an abort
        of the group, a lost sender (:class:`PeerGone`) or the deadline (TimeoutError) raise.
        """
        group, src = key[0], key[3]
        next_check = time.monotonic() + POLL_S
        cond = self._cond
        with cond:
            while True:
                queue = self._box.get(key)
                if queue:
                    item = queue.pop(0)
                    if not queue:
                        del self._box[key]
                    link = (group, src)
                    if link in self._pending:
                        self._pending[link] -= len(item.payload)
                        cond.notify_all()  # its reader may be pausing for the window
                    return item
                why = self._aborts.get(group)
                if why is not None:
                    raise CollectiveError(why)
                lost = self._lost.get((group, src))
                if lost is not None:
                    raise PeerGone(src, lost)
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
                if not read_datagrams or self._reading or self._rx is None:
                    cond.wait(min(deadline, next_check) - now)
                    continue
                self._reading = True
                cond.release()
                msg = None
                try:
                    msg = self._verify(self._rx.recv(RECV_BYTES))
                except (BlockingIOError, TimeoutError):
                    pass  # SO_RCVTIMEO: nothing came within POLL_S
                finally:
                    cond.acquire()
                    self._reading = False
                cond.notify_all()  # another waiter may take over reading
                if msg is None:
                    continue
                if (msg.__class__ is Message and msg.kind == KIND_DATA and msg[1:5] == key
                        and key not in self._box):
                    return msg  # the one awaited, and nothing of its stream filed before it
                self._file(msg)

    def aborted(self, group: bytes) -> str | None:
        """Why group ``group`` was aborted, or None."""
        with self._cond:
            return self._aborts.get(group)

    # -- TCP ------------------------------------------------------------------------------
    def connect(self, address: tuple[str, int], group: bytes, key: bytes, src: int,
                timeout_s: float) -> std_socket.socket:
        """A TCP connection to a peer's endpoint, authenticated for ``group`` as member
        ``src``: read the listener's challenge, answer it with a MACed hello."""
        conn = std_socket.create_connection(tuple(address), timeout=timeout_s)
        try:
            conn.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
            conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, SOCKET_BUFFER)
            challenge = bytearray(CHALLENGE_BYTES)
            if not _recv_exact(conn, challenge):
                raise ConnectionResetError("the peer closed the connection before its challenge")
            conn.sendall(b"".join(encode(key, group, 0, 0, src, 0, payload=bytes(challenge),
                                         kind=KIND_HELLO)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _accept_loop(self) -> None:
        lis = self._listener
        while lis is not None:
            try:
                conn, _ = lis.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="p2p-conn",
                             daemon=True).start()

    def _hello(self, conn: std_socket.socket) -> tuple[bytes, int]:
        """Challenge a new connection; its (group, member) once it answers with the key."""
        challenge = os.urandom(CHALLENGE_BYTES)
        conn.settimeout(HELLO_TIMEOUT_S)
        try:
            conn.sendall(challenge)
            data = read_frame(conn)
        except (OSError, Dropped):
            data = None
        if data is None:  # closed, cut short or silent before proving anything
            raise Dropped(Drop.BAD_HELLO)
        msg = self._verify(data)
        if isinstance(msg, Drop) or msg.kind != KIND_HELLO or bytes(msg.payload) != challenge:
            raise Dropped(msg if isinstance(msg, Drop) else Drop.BAD_HELLO)
        conn.settimeout(None)
        return msg.group, msg.src

    def _serve(self, conn: std_socket.socket) -> None:
        """Read one accepted connection: authenticate it, then file its messages."""
        link = None
        with self._cond:
            self._conns.add(conn)
        try:
            conn.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
            conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, SOCKET_BUFFER)
            link = self._hello(conn)
            with self._cond:
                self._accepted += 1
            while True:
                with self._cond:
                    while self._pending.get(link, 0) > NET_WINDOW and link[0] in self._keys:
                        self._cond.wait(POLL_S)
                data = read_frame(conn)
                if data is None:
                    break
                msg = self._verify(data, mac_payload=False)  # the stream is authenticated
                with self._cond:
                    self._file(msg, link)
                    self._cond.notify_all()
                if isinstance(msg, Drop):
                    break  # a stream that carried one bad message is not trusted further
        except Dropped as exc:
            with self._cond:
                self._drops[exc.reason] += 1
        except (OSError, ValueError, struct.error):
            pass
        finally:
            with self._cond:
                self._conns.discard(conn)
                if link is not None and link[0] in self._keys:
                    self._lost.setdefault(link, "closed its connection")
                    self._cond.notify_all()
            conn.close()

    def close(self) -> None:
        for s in (self._rx, self._tx, self._listener, *list(self._conns)):
            if s is not None:
                try:
                    s.shutdown(std_socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self._listener = None
