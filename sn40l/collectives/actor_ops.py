"""Collective operations that SocketActor gains as a mixin (P2P channels, communicators).

Filled in by the P2P/collectives work; until then the socket actor has no collective methods.
"""

from __future__ import annotations


class CollectiveOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor`: communicator and P2P methods."""

    def __init__(self) -> None:
        super().__init__()
