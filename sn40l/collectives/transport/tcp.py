"""Every message on TCP: one connection per (group, sender, receiver), opened on first use to the
address the receiver published through Ray at group set-up, authenticated by a challenge MACed
with the group's key, with TCP_NODELAY (a 4 KiB message must not wait for Nagle). A message
is written with one ``sendmsg`` of its buffers (header, payload, MAC), so a payload is never
copied on the way out; the receiver's reader thread reads it whole into one buffer. Ray carries
only the set-up, never a message. Data frames' MACs cover their header, the connection's
challenge covers the stream (see :mod:`sn40l.collectives.wire` for why not every payload byte).

Plain sockets rather than pyzmq: what a collective needs from the wire is ordered, reliable,
back-pressured delivery between two fixed processes, which a TCP stream is; ZeroMQ would add an
I/O thread and a copy into its own message per frame, and its dealer/router queues would hide
the peer's death behind reconnects, which must instead be named at once.
"""

from __future__ import annotations

import select
import socket as std_socket
import threading

from sn40l.collectives.endpoint import PeerGone
from sn40l.collectives.transport.base import Transport
from sn40l.collectives.types import TransportKind


class TcpTransport(Transport):
    """TCP streams straight between the members' socket actors, whichever host they are on
    (transport ``tcp``; the ``net`` transport uses these streams between nodes only). The
    connection is authenticated, so frames MAC their header alone."""

    kind = TransportKind.TCP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._conns: dict[int, std_socket.socket] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def _conn(self, dst: int) -> std_socket.socket:
        conn = self._conns.get(dst)
        if conn is None:
            member = self.members[dst]
            try:
                conn = self.endpoint.connect(member.net, self.group, self.key, self.index,
                                             self.timeout_s)
            except (ConnectionRefusedError, ConnectionResetError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise
                raise PeerGone(dst, f"is gone (its endpoint {member.net[0]}:{member.net[1]} "
                                    f"refused the connection: {exc.strerror or exc})") from None
            self._conns[dst] = conn
        return conn

    def send(self, dst: int, parts, timeout_s: float | None = None) -> None:
        with self._guard:
            lock = self._locks.setdefault(dst, threading.Lock())
        with lock:
            conn = self._conn(dst)
            if timeout_s is not None:
                conn.settimeout(timeout_s)
            try:
                bufs = [memoryview(p).cast("B") for p in parts]
                while bufs:
                    n = conn.sendmsg(bufs)
                    while n:  # drop what went out, keep the rest of a partial write
                        if n >= len(bufs[0]):
                            n -= len(bufs[0])
                            bufs.pop(0)
                        else:
                            bufs[0] = bufs[0][n:]
                            n = 0
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                raise PeerGone(dst, "is gone (it closed its connection)") from None
            finally:
                if timeout_s is not None:
                    conn.settimeout(self.timeout_s)

    def check(self) -> None:
        """A peer that died closed the connections this member sends on: their sockets turn
        readable with end of stream (the peer never writes on them)."""
        conns = dict(self._conns)
        if not conns:
            return
        ready, _, _ = select.select(list(conns.values()), [], [], 0)
        for dst, conn in conns.items():
            if conn in ready:
                try:
                    if conn.recv(1, std_socket.MSG_PEEK | std_socket.MSG_DONTWAIT) == b"":
                        raise PeerGone(dst, "is gone (it closed its connection)")
                except (BlockingIOError, InterruptedError):
                    pass
                except (ConnectionResetError, OSError):
                    raise PeerGone(dst, "is gone (its connection was reset)") from None

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.shutdown(std_socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()
