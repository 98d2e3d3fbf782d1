"""Emulated memory tiers: a first-fit allocator of named regions with coalescing free.

A :class:`MemoryTier` hands out aligned address ranges of its capacity. Regions are named (the
name is unique within the tier's socket), carry an owner and a read-only flag, and hold a
:class:`~sn40l.socket.tensor.Tensor` that is either materialized (numpy data) or phantom (no
data). Host memory therefore grows with the number of regions, not with their size: a phantom
1.4 TiB region costs a few hundred bytes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

from sn40l.errors import ConfigError, OutOfDeviceMemory, RegionError
from sn40l.socket.tensor import Tensor
from sn40l.socket.types import Tier

DEFAULT_ALIGNMENT = 256  # assumption: DMA descriptors address 256-byte aligned bursts


@dataclass(frozen=True)
class Region:
    """A named, allocated address range of one tier."""

    name: str
    tier: Tier
    offset: int
    size: int  # allocated bytes (aligned)
    owner: str
    read_only: bool
    tensor: Tensor
    dirty: bool = False  # written on the device since it was loaded

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor (the requested size, before alignment)."""
        return self.tensor.nbytes

    def describe(self) -> dict:
        """Plain data for listings."""
        return {"name": self.name, "tier": str(self.tier), "offset": self.offset,
                "size": self.size, "nbytes": self.nbytes, "owner": self.owner,
                "read_only": self.read_only, "dirty": self.dirty,
                "phantom": self.tensor.is_phantom, "shape": list(self.tensor.shape),
                "dtype": self.tensor.dtype.name}


class MemoryTier:
    """Capacity, level and a first-fit allocator of one memory tier of one socket.

    Invariants (checked by :meth:`check`): free blocks are sorted, disjoint, never adjacent
    (coalesced), and used + free bytes == capacity.
    """

    def __init__(self, tier: Tier, capacity: int, socket: str = "?",
                 alignment: int = DEFAULT_ALIGNMENT):
        if capacity < 0:
            raise ConfigError(f"capacity of {tier} must be >= 0 bytes, got {capacity}")
        if alignment <= 0 or alignment & (alignment - 1):
            raise ConfigError(f"alignment must be a power of two, got {alignment}")
        self.tier = tier
        self.capacity = capacity
        self.socket = socket
        self.alignment = alignment
        self._free_offsets: list[int] = [0] if capacity else []
        self._free_sizes: dict[int, int] = {0: capacity} if capacity else {}
        self._regions: dict[str, Region] = {}
        self._used = 0

    # -- capacity -------------------------------------------------------------------------
    @property
    def used(self) -> int:
        return self._used

    @property
    def free(self) -> int:
        return self.capacity - self._used

    @property
    def largest_free(self) -> int:
        return max(self._free_sizes.values(), default=0)

    def aligned(self, nbytes: int) -> int:
        a = self.alignment
        return max(a, (nbytes + a - 1) // a * a)

    def can_allocate(self, nbytes: int) -> bool:
        need = self.aligned(nbytes)
        return any(size >= need for size in self._free_sizes.values())

    # -- regions --------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._regions

    def __len__(self) -> int:
        return len(self._regions)

    def get(self, name: str) -> Region:
        try:
            return self._regions[name]
        except KeyError:
            raise RegionError(f"no region {name!r} in {self.tier} of socket {self.socket}") from None

    def regions(self) -> list[Region]:
        return sorted(self._regions.values(), key=lambda r: r.offset)

    def allocate(self, name: str, tensor: Tensor, owner: str = "user",
                 read_only: bool = False) -> Region:
        """Place ``tensor`` in the first free block that fits; raise OutOfDeviceMemory if none."""
        if name in self._regions:
            raise RegionError(f"region {name!r} already exists in {self.tier} of socket "
                              f"{self.socket}")
        need = self.aligned(tensor.nbytes)
        for offset in self._free_offsets:
            size = self._free_sizes[offset]
            if size >= need:
                self._take(offset, size, need)
                region = Region(name, self.tier, offset, need, owner, read_only, tensor)
                self._regions[name] = region
                self._used += need
                return region
        raise OutOfDeviceMemory(self.socket, str(self.tier), tensor.nbytes, self.free,
                                self.largest_free, what=name)

    def replace(self, name: str, **changes) -> Region:
        """Update a region's tensor (same size), dirty flag or read-only flag."""
        old = self.get(name)
        tensor = changes.get("tensor")
        if tensor is not None and self.aligned(tensor.nbytes) != old.size:
            raise RegionError(f"region {name!r} holds {old.nbytes} bytes; cannot store "
                              f"{tensor.nbytes} bytes in it")
        new = replace(old, **changes)
        self._regions[name] = new
        return new

    def release(self, name: str) -> Region:
        """Free a region and coalesce its range with free neighbours."""
        region = self._regions.pop(name, None)
        if region is None:
            raise RegionError(f"no region {name!r} in {self.tier} of socket {self.socket}")
        self._used -= region.size
        self._give(region.offset, region.size)
        return region

    def release_owner(self, owner: str) -> int:
        """Free every region of ``owner``; returns the bytes freed."""
        names = [r.name for r in self._regions.values() if r.owner == owner]
        return sum(self.release(n).size for n in names)

    # -- free list ------------------------------------------------------------------------
    def _take(self, offset: int, size: int, need: int) -> None:
        i = bisect.bisect_left(self._free_offsets, offset)
        del self._free_offsets[i]
        del self._free_sizes[offset]
        if size > need:
            rest = offset + need
            self._free_offsets.insert(i, rest)
            self._free_sizes[rest] = size - need

    def _give(self, offset: int, size: int) -> None:
        i = bisect.bisect_left(self._free_offsets, offset)
        # merge with the following block
        if i < len(self._free_offsets) and self._free_offsets[i] == offset + size:
            nxt = self._free_offsets.pop(i)
            size += self._free_sizes.pop(nxt)
        # merge with the preceding block
        if i > 0:
            prev = self._free_offsets[i - 1]
            if prev + self._free_sizes[prev] == offset:
                self._free_sizes[prev] += size
                return
        self._free_offsets.insert(i, offset)
        self._free_sizes[offset] = size

    def free_blocks(self) -> list[tuple[int, int]]:
        """(offset, size) of every free block, by offset."""
        return [(o, self._free_sizes[o]) for o in self._free_offsets]

    def check(self) -> None:
        """Assert the allocator's invariants (a test hook)."""
        blocks = self.free_blocks()
        for (o1, s1), (o2, _) in zip(blocks, blocks[1:]):
            assert o1 + s1 < o2, f"free blocks overlap or touch: {(o1, s1)} {o2}"
        assert sum(s for _, s in blocks) + self._used == self.capacity
        spans = sorted((r.offset, r.size) for r in self._regions.values()) + blocks
        spans.sort()
        pos = 0
        for o, s in spans:
            assert o == pos, f"gap or overlap at {pos} (next span at {o})"
            pos = o + s
        assert pos == self.capacity

    def stats(self) -> dict:
        return {"tier": str(self.tier), "capacity": self.capacity, "used": self._used,
                "free": self.free, "largest_free": self.largest_free,
                "regions": len(self._regions)}
