"""Across nodes: TCP between the nodes, shared memory inside a node. Members on the same
emulated node and the same host reach each other as :mod:`~.shm` does (Unix datagrams, data
read in place from the sender's segment); every other pair talks over the TCP streams of
:mod:`~.tcp`. On a real cluster a node's sockets run on one host, so this is what a
multi-host group uses; on one host with several emulated nodes it exercises the same
boundaries (TCP exactly where hosts would meet). The hierarchical AllReduce, chosen for groups
that span nodes, puts only its middle phase (one ring per shard, across the nodes) on TCP.

The two kinds of waits are kept apart: a waiter for a datagram member reads the datagram
socket itself, a waiter for a TCP member sleeps until the stream's reader files the message.
Datagrams that arrive meanwhile wait in the socket's queue; the algorithms keep few of them in
flight, and the periodic :meth:`check` drains them, so a sender blocked on a full queue is
never left waiting on a member that sleeps on TCP.
"""

from __future__ import annotations

from sn40l.collectives.transport.base import Transport
from sn40l.collectives.transport.shm import ShmTransport
from sn40l.collectives.transport.tcp import TcpTransport
from sn40l.collectives.types import TransportKind


class NetTransport(Transport):
    """Shared memory with the members of this member's node on its host, TCP with the rest."""

    kind = TransportKind.NET

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        me = self.members[self.index]
        self._local = frozenset(m.index for m in self.members
                                if m.node == me.node and m.host == me.host)
        self._shm = ShmTransport(*args, **kwargs)
        self._tcp = TcpTransport(*args, **kwargs)

    def maps_segments(self, member: int) -> bool:
        return member in self._local

    def send(self, dst: int, parts, timeout_s: float | None = None) -> None:
        (self._shm if dst in self._local else self._tcp).send(dst, parts, timeout_s)

    def check(self) -> None:
        self.endpoint.drain()
        self._tcp.check()

    def close(self) -> None:
        self._tcp.close()
