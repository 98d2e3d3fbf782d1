"""P2P endpoints: each socket actor has one, with a mailbox of messages keyed by stream.

On one host, messages are Unix datagrams in Linux's abstract socket namespace (no files to clean
up): a few hundred bytes of msgpack header (who, which stream, modeled arrival time, where the
payload lies in the sender's shared-memory segment) and, for point-to-point sends, the payload
bytes themselves in chunks of at most :data:`CHUNK_BYTES`. A full receive queue blocks the
sender, which bounds the chunks in flight (flow control without extra messages); a blocked
sender keeps draining its own queue meanwhile. Between hosts
the same messages travel as Ray actor calls (:meth:`Endpoint.deliver`).

A waiting thread reads the socket itself and files what it reads in the mailbox; other waiters
block on a condition variable with a deadline. Nothing spins.
"""

from __future__ import annotations

import logging
import select
import socket as std_socket
import threading
import time
from typing import Any, Callable

import msgpack

from sn40l.errors import CollectiveError

log = logging.getLogger("sn40l.collectives")

CHUNK_BYTES = 64 * 1024  # payload bytes per datagram (Unix datagrams carry ~200 KiB at most)
SOCKET_BUFFER = 4 * 2**20
POLL_S = 0.2  # how often a waiter checks that its peers are alive


def endpoint_address(cluster: str, rank: int, pid: int) -> bytes:
    """Abstract-namespace address of a socket actor's endpoint (leading NUL: no file)."""
    return f"\0sn40l-p2p/{cluster}/{rank}/{pid}".encode()


class Endpoint:
    """Mailbox of one socket actor. ``__init__`` only stores; :meth:`start` binds and reads."""

    def __init__(self, address: bytes):
        self.address = address
        self._box: dict[tuple, list] = {}
        self._aborts: dict[str, dict] = {}
        self._cond = threading.Condition()
        self._rx: std_socket.socket | None = None
        self._tx: std_socket.socket | None = None
        self._reading = False

    def start(self) -> None:
        if self._rx is not None:
            return
        rx = std_socket.socket(std_socket.AF_UNIX, std_socket.SOCK_DGRAM)
        rx.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_RCVBUF, SOCKET_BUFFER)
        rx.bind(self.address)
        rx.settimeout(POLL_S)
        tx = std_socket.socket(std_socket.AF_UNIX, std_socket.SOCK_DGRAM)
        tx.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_SNDBUF, SOCKET_BUFFER)
        tx.setblocking(False)
        self._rx, self._tx = rx, tx

    # -- sending --------------------------------------------------------------------------
    def send(self, address: bytes, header: dict, payload: bytes | None = None,
             timeout_s: float = 30.0) -> None:
        """Send one datagram; raises ConnectionRefusedError when nobody listens there and
        TimeoutError when the receiver's queue stays full for ``timeout_s``.

        A full queue (Linux keeps few datagrams per Unix socket) must not block a sender that
        others are sending to: while it waits, the sender drains its own socket into its
        mailbox, so n members sending to each other at once never deadlock.
        """
        assert self._tx is not None, "endpoint not started"
        data = msgpack.packb([header, payload], use_bin_type=True)
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
            # the socket has a timeout, so recv() only after select() says a datagram is there
            while select.select([self._rx], [], [], timeout)[0]:
                got.append(self._rx.recv(CHUNK_BYTES + 4096))
                timeout = 0
        finally:
            with self._cond:
                self._reading = False
                for data in got:
                    self._file(msgpack.unpackb(data, raw=False))
                self._cond.notify_all()

    # -- receiving ------------------------------------------------------------------------
    def deliver(self, message: list) -> None:
        """Put a message in the mailbox (called by readers and by Ray calls)."""
        with self._cond:
            self._file(message)
            self._cond.notify_all()

    def _file(self, message: list) -> None:
        header, payload = message
        if header.get("kind") == "abort":
            self._aborts.setdefault(header["g"], header)
        else:
            key = (header["g"], header["s"], header["k"], header["r"])
            self._box.setdefault(key, []).append((header, payload))

    def wait(self, key: tuple, deadline: float, check: Callable[[], None]) -> tuple[dict, Any]:
        """Block until the message ``key`` = (group, seq, tag, src) arrives.

        The waiting thread itself reads the socket when no other thread does (no hand-off
        through a reader thread: one wake-up per message); other waiters sleep on the
        condition. ``check`` runs about every 200 ms (it raises when a peer has died); an
        abort of the group or the deadline raises.
        """
        group = key[0]
        next_check = time.monotonic() + POLL_S
        with self._cond:
            while True:
                queue = self._box.get(key)
                if queue:
                    item = queue.pop(0)
                    if not queue:
                        del self._box[key]
                    return item
                abort = self._aborts.get(group)
                if abort is not None:
                    raise CollectiveError(abort["why"])
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError
                if now >= next_check:
                    self._cond.release()
                    try:
                        check()
                    finally:
                        self._cond.acquire()
                    next_check = time.monotonic() + POLL_S
                    continue
                if self._reading or self._rx is None:
                    self._cond.wait(min(deadline, next_check) - now)
                    continue
                self._reading = True
                self._cond.release()
                data = None
                try:
                    data = self._rx.recv(CHUNK_BYTES + 4096)
                except (TimeoutError, std_socket.timeout):
                    pass
                finally:
                    self._cond.acquire()
                    self._reading = False
                if data is not None:
                    self._file(msgpack.unpackb(data, raw=False))
                self._cond.notify_all()

    def aborted(self, group: str) -> dict | None:
        with self._cond:
            return self._aborts.get(group)

    def forget(self, group: str) -> None:
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
