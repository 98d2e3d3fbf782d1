"""The emulated SN40L socket: three memory tiers, a virtual clock, DMA between tiers and host.

:class:`Socket` is plain Python with no Ray in it; :class:`sn40l.cluster.actor.SocketActor`
hosts one per Ray actor. Region names are unique across the socket's tiers, so a tensor can be
found by name wherever it lives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sn40l.errors import RegionError
from sn40l.hardware.profile import Profile
from sn40l.socket.clock import EventLog, VirtualClock
from sn40l.socket.memory import MemoryTier, Region
from sn40l.socket.tensor import Tensor
from sn40l.socket.timing import copy_ns
from sn40l.socket.types import Tier, dtype as as_dtype

DMA = "dma"
HOST = "host"


@dataclass(frozen=True)
class SocketId:
    """Identity of a socket: its cluster, node index, index within the node and global rank."""

    cluster: str
    node: int
    local: int
    sockets_per_node: int

    @property
    def rank(self) -> int:
        return self.node * self.sockets_per_node + self.local

    @property
    def label(self) -> str:
        return f"n{self.node}s{self.local}"

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "node": self.node, "local": self.local,
                "rank": self.rank, "sockets_per_node": self.sockets_per_node,
                "label": self.label}


class Socket:
    """One emulated socket. ``__init__`` only builds state; it starts nothing."""

    def __init__(self, ident: SocketId, profile: Profile, trace_capacity: int = 100_000):
        self.ident = ident
        self.profile = profile
        self.clock = VirtualClock(EventLog(trace_capacity))
        self.tiers: dict[Tier, MemoryTier] = {
            t: MemoryTier(t, self._capacity(t), socket=ident.label) for t in Tier}
        self._where: dict[str, Tier] = {}

    def _capacity(self, tier: Tier) -> int:
        if tier is Tier.HOST:  # this socket's share of the node's host memory
            return int(self.profile.value("node.host_memory")) // self.ident.sockets_per_node
        return self.profile.tier(tier.value).capacity

    # -- lookup ---------------------------------------------------------------------------
    def region(self, name: str) -> Region:
        tier = self._where.get(name)
        if tier is None:
            raise RegionError(f"no region {name!r} on socket {self.ident.label}")
        return self.tiers[tier].get(name)

    def regions(self, tier: Tier | str | None = None, owner: str | None = None) -> list[Region]:
        tiers = [Tier.from_str(tier)] if tier is not None else list(Tier)
        out = [r for t in tiers for r in self.tiers[t].regions()]
        return [r for r in out if owner is None or r.owner == owner]

    def __contains__(self, name: str) -> bool:
        return name in self._where

    # -- allocation -----------------------------------------------------------------------
    def place(self, name: str, tier: Tier | str, tensor: Tensor, owner: str = "user",
              read_only: bool = False) -> Region:
        """Allocate a region holding ``tensor`` without any transfer (device-side creation)."""
        tier = Tier.from_str(tier)
        if name in self._where:
            raise RegionError(f"region {name!r} already exists on socket {self.ident.label} "
                              f"(in {self._where[name]})")
        region = self.tiers[tier].allocate(name, tensor, owner, read_only)
        self._where[name] = tier
        return region

    def alloc(self, name: str, tier: Tier | str, shape: tuple[int, ...], dtype: str = "bf16",
              owner: str = "user", read_only: bool = False, phantom: bool = False) -> Region:
        """Allocate a zero-filled (or phantom) tensor on the device."""
        dt = as_dtype(dtype)
        tensor = (Tensor.phantom(shape, dt) if phantom
                  else Tensor.of(np.zeros(shape, dtype=dt.np), dt))
        return self.place(name, tier, tensor, owner, read_only)

    def free(self, name: str) -> Region:
        region = self.region(name)
        self.tiers[region.tier].release(name)
        del self._where[name]
        return region

    def free_owner(self, owner: str) -> int:
        """Free every region of ``owner`` in every tier; returns bytes freed."""
        freed = 0
        for region in self.regions(owner=owner):
            freed += self.free(region.name).size
        return freed

    # -- transfers ------------------------------------------------------------------------
    def write(self, name: str, tier: Tier | str, tensor: Tensor, owner: str = "user",
              read_only: bool = False, wait: bool = True) -> tuple[Region, int, int]:
        """Host -> device DMA of ``tensor`` into a new region. Returns (region, start, end)."""
        tier = Tier.from_str(tier)
        region = self.place(name, tier, tensor, owner, read_only)
        dur = copy_ns(self.profile, "host", tier, tensor.nbytes)
        op = self.clock.run if wait else self.clock.occupy
        start, end = op(HOST, dur, f"h2d {name}", "dma", bytes=tensor.nbytes, dst=str(tier))
        return region, start, end

    def read(self, name: str) -> tuple[Tensor, int, int]:
        """Device -> host DMA of a region. Returns (tensor, start, end); phantom stays phantom."""
        region = self.region(name)
        dur = copy_ns(self.profile, region.tier, "host", region.nbytes)
        start, end = self.clock.run(HOST, dur, f"d2h {name}", "dma", bytes=region.nbytes,
                                    src=str(region.tier))
        t = region.tensor
        return (t if t.is_phantom else Tensor(t.shape, t.dtype, t.data.copy())), start, end

    def update(self, name: str, tensor: Tensor) -> Region:
        """Overwrite a region's contents in place from device-side work (marks it dirty)."""
        region = self.region(name)
        if region.read_only:
            raise RegionError(f"region {name!r} on socket {self.ident.label} is read-only")
        return self.tiers[region.tier].replace(name, tensor=tensor, dirty=True)

    def copy(self, src: str, dst_tier: Tier | str, dst: str | None = None, move: bool = False,
             wait: bool = True, owner: str | None = None,
             read_only: bool | None = None) -> tuple[Region, int, int]:
        """Copy region ``src`` to tier ``dst_tier`` under name ``dst`` on the DMA engine.

        ``move`` frees the source afterwards (the destination keeps the name when ``dst`` is
        None). ``wait=False`` occupies the DMA engine without moving the socket's ``now`` (an
        asynchronous prefetch; join it with ``clock.advance_to(end)``). Materialized data is
        copied for real; the modeled time is the same for phantom and materialized tensors.
        """
        dst_tier = Tier.from_str(dst_tier)
        region = self.region(src)
        if dst is None:
            if not move:
                raise RegionError(f"copy of {src!r} needs a destination name (or move=True)")
            dst = src
        t = region.tensor
        data = t if t.is_phantom else Tensor(t.shape, t.dtype, t.data.copy())
        new_owner = region.owner if owner is None else owner
        new_ro = region.read_only if read_only is None else read_only
        if move:
            # The source range stays allocated until the copy is done, so allocate first.
            tmp = f"{dst}.__moving__" if dst == src else dst
            self.place(tmp, dst_tier, data, new_owner, new_ro)
            self.free(src)
            if tmp != dst:
                moved = self.tiers[dst_tier].release(tmp)
                del self._where[tmp]
                self.place(dst, dst_tier, moved.tensor, new_owner, new_ro)
        else:
            self.place(dst, dst_tier, data, new_owner, new_ro)
        dur = copy_ns(self.profile, region.tier, dst_tier, region.nbytes)
        op = self.clock.run if wait else self.clock.occupy
        start, end = op(DMA, dur, f"{region.tier}->{dst_tier} {src}", "dma",
                        bytes=region.nbytes, src=str(region.tier), dst=str(dst_tier))
        return self.region(dst), start, end

    def copy_segments(self, moves: list[tuple[str, str]], dst_tier: Tier | str,
                      wait: bool = True, label: str = "segments") -> tuple[int, int, int]:
        """Copy regions ``src -> dst`` as one DMA descriptor chain: one set-up latency, then
        all bytes at the path's rate (:func:`~sn40l.socket.timing.copy_ns`).

        A ``dst`` that exists is overwritten in place (same size, writable; it is then clean);
        otherwise it is allocated in ``dst_tier`` with the source's owner and read-only flag.
        Every source must sit in one tier. If an allocation fails, nothing stays allocated.
        ``wait=False`` occupies the DMA engine without moving ``now`` (a prefetch). Returns
        (bytes, start, end).
        """
        dst_tier = Tier.from_str(dst_tier)
        srcs = [self.region(s) for s, _ in moves]
        if len({r.tier for r in srcs}) > 1:
            raise RegionError(f"copy_segments: sources span tiers "
                              f"{sorted({str(r.tier) for r in srcs})}; copy one tier at a time")
        placed: list[str] = []
        try:
            for region, (_, dst) in zip(srcs, moves):
                t = region.tensor
                data = t if t.is_phantom else Tensor(t.shape, t.dtype, t.data.copy())
                if dst in self._where:
                    old = self.region(dst)
                    if old.read_only or old.nbytes != region.nbytes:
                        raise RegionError(f"cannot copy {region.name!r} over {dst!r} "
                                          f"(read-only or a different size)")
                    self.tiers[old.tier].replace(dst, tensor=data, dirty=False)
                else:
                    self.place(dst, dst_tier, data, region.owner, region.read_only)
                    placed.append(dst)
        except BaseException:
            for name in placed:
                self.free(name)
            raise
        nbytes = sum(r.nbytes for r in srcs)
        if not srcs:
            return 0, self.clock.now, self.clock.now
        dur = copy_ns(self.profile, srcs[0].tier, dst_tier, nbytes)
        op = self.clock.run if wait else self.clock.occupy
        start, end = op(DMA, dur, f"{srcs[0].tier}->{dst_tier} {label}", "dma", bytes=nbytes,
                        src=str(srcs[0].tier), dst=str(dst_tier), segments=len(moves))
        return nbytes, start, end

    def mark_dirty(self, name: str) -> Region:
        """Record that device-side work wrote region ``name`` in place (e.g. a KV cache)."""
        region = self.region(name)
        if region.read_only:
            raise RegionError(f"region {name!r} on socket {self.ident.label} is read-only")
        return self.tiers[region.tier].replace(name, dirty=True)

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"socket": self.ident.to_dict(), "clock": self.clock.state(),
                "tiers": {str(t): m.stats() for t, m in self.tiers.items()}}
