"""Closed choices of the CoE runtime."""

from __future__ import annotations

import enum

from sn40l.errors import ConfigError


class _NamedEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, name: "str | _NamedEnum", what: str = "value"):
        """The member named ``name`` (case-insensitive); unknown names list the allowed ones."""
        by_value = {m.value: m for m in cls}
        key = name.value if isinstance(name, cls) else str(name).lower()
        if key not in by_value:
            raise ConfigError(f"unknown {what} {name!r}; allowed: {', '.join(by_value)}")
        return by_value[key]


class SegmentRole(_NamedEnum):
    """What a per-socket segment of an expert holds: read-only weights (never copied back on
    eviction) or writable state such as a KV cache (copied back to its home when dirty)."""

    WEIGHT = "weight"
    STATE = "state"


class Weights(_NamedEnum):
    """How expert weights are created: real random numbers (small models) or phantom
    (shape and dtype only, for 7B-scale experts)."""

    RANDOM = "random"
    PHANTOM = "phantom"


class Home(_NamedEnum):
    """Where an expert lives when it is not HBM-resident: socket DDR (SN40L) or the node's
    host memory (GPU baselines, whose DDR capacity is 0)."""

    DDR = "ddr"
    HOST = "host"
