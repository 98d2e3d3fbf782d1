"""The HBM expert cache of one TP group: LRU over resident experts, with pins.

Pure bookkeeping (no Ray): the runtime asks :meth:`ExpertCache.plan_admit` which experts to
evict before copying a new one in, performs the copies and frees on the sockets, and then
records them. The HBM contents of the group's sockets always equal :meth:`resident`.
"""

from __future__ import annotations

from collections import OrderedDict

from sn40l.errors import CapacityError
from sn40l.hardware.units import format_bytes


class ExpertCache:
    """Resident experts of one group, least recently used first.

    ``budget`` is HBM bytes per socket for experts (pinned ones included);
    ``max_resident`` optionally caps the count of resident experts.
    """

    def __init__(self, budget: int, max_resident: int | None = None):
        if budget <= 0:
            raise CapacityError(f"expert cache budget must be > 0 bytes per socket, got {budget}")
        self.budget = budget
        self.max_resident = max_resident
        self._lru: OrderedDict[str, int] = OrderedDict()
        self._pinned: set[str] = set()
        self.hits = 0
        self.misses = 0

    @property
    def used(self) -> int:
        return sum(self._lru.values())

    def resident(self) -> list[str]:
        """Resident experts, least recently used first."""
        return list(self._lru)

    def __contains__(self, name: str) -> bool:
        return name in self._lru

    def pinned(self) -> set[str]:
        return set(self._pinned)

    def touch(self, name: str, count: bool = True) -> bool:
        """A request for ``name``: True (a hit, now most recent) if resident."""
        if name in self._lru:
            self._lru.move_to_end(name)
            if count:
                self.hits += 1
            return True
        if count:
            self.misses += 1
        return False

    def plan_admit(self, name: str, nbytes: int, protect: frozenset[str] = frozenset()
                   ) -> list[str]:
        """Experts to evict (LRU first, never pinned or protected) so ``name`` fits."""
        if nbytes > self.budget:
            raise CapacityError(f"expert {name!r} needs {format_bytes(nbytes)} per socket; the "
                                f"cache holds {format_bytes(self.budget)} per socket")
        victims: list[str] = []
        used, count = self.used, len(self._lru)
        for cand in list(self._lru):
            if used + nbytes <= self.budget and (self.max_resident is None
                                                 or count < self.max_resident):
                break
            if cand in self._pinned or cand in protect:
                continue
            victims.append(cand)
            used -= self._lru[cand]
            count -= 1
        if used + nbytes > self.budget or (self.max_resident is not None
                                           and count >= self.max_resident):
            raise CapacityError(f"expert {name!r} cannot enter the cache: pinned or in-use "
                                f"experts hold {format_bytes(used)} of "
                                f"{format_bytes(self.budget)} per socket")
        return victims

    def admit(self, name: str, nbytes: int, pin: bool = False) -> None:
        assert name not in self._lru, name
        self._lru[name] = nbytes
        if pin:
            self._pinned.add(name)

    def evict(self, name: str) -> None:
        assert name not in self._pinned, name
        del self._lru[name]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
