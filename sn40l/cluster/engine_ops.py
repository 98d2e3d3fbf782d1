"""Tile-engine operations that SocketActor gains as a mixin (load a .pef, run kernels).

Filled in by the compiler/tile-engine work; until then the socket actor runs no kernels.
"""

from __future__ import annotations


class EngineOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor`: compiled-kernel execution."""

    def __init__(self) -> None:
        super().__init__()
