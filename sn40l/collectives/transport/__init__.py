"""Transports of a group, looked up by kind in one table: a new transport is one new module
implementing :class:`Transport` and one row here."""

from __future__ import annotations

from sn40l.collectives.transport.base import Member, Transport
from sn40l.collectives.transport.net import NetTransport
from sn40l.collectives.transport.shm import ShmTransport
from sn40l.collectives.transport.tcp import TcpTransport
from sn40l.collectives.types import TransportKind

TRANSPORTS: dict[TransportKind, type[Transport]] = {
    TransportKind.SHM: ShmTransport,
    TransportKind.NET: NetTransport,
    TransportKind.TCP: TcpTransport,
}


def transport_class(kind: "str | TransportKind") -> type[Transport]:
    """The class of transport ``kind`` (``auto`` is resolved by the driver, not here)."""
    kind = TransportKind.from_str(kind)
    if kind not in TRANSPORTS:
        from sn40l.errors import ConfigError

        raise ConfigError(f"transport {kind.value!r} must be resolved before a group is made; "
                          f"allowed: {', '.join(k.value for k in TRANSPORTS)}")
    return TRANSPORTS[kind]


__all__ = ["Member", "Transport", "TRANSPORTS", "transport_class", "ShmTransport",
           "NetTransport", "TcpTransport"]
