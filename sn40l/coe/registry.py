"""The CoE registry: experts and router, loaded from YAML and validated once.

Example (``deploy/coe/tiny4.yaml``)::

    name: tiny4
    weights: random            # random (materialized) | phantom (shape only)
    placement: spread          # a name from sn40l.coe.placement.POLICIES
    router: {vocab: 4096, dim: 256}         # optional 'preset': a backbone run before the head
    serving: {max_batch: 8, max_context: 64}
    cache: {max_resident: 2, pin: []}       # per TP group; default: as many as HBM holds
    experts:
      - {name: math, preset: tiny, tp: 8, domain: "algebra calculus integral equation"}

Each expert names exactly one source: ``preset`` (compiler preset), ``checkpoint`` (a Hugging
Face directory) or ``pef`` (a compiled artifact). Errors name the key path, e.g.
``experts[2].tp``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sn40l.coe.placement import POLICIES  # the policy table is the one source of names
from sn40l.coe.types import Weights
from sn40l.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ExpertSpec:
    """One expert: its name, where its model comes from, its TP size and its domain text."""

    name: str
    tp: int
    domain: str
    preset: str | None = None
    checkpoint: str | None = None
    pef: str | None = None
    replicas: int = 1  # how many TP groups hold a home copy (placement may add more if hot)
    hot: bool = False  # a hint for placement policies that replicate hot experts


@dataclass(frozen=True)
class RouterSpec:
    """The router: a compiled one-layer model whose weights come from the experts' domains
    (always materialized, small; see :mod:`sn40l.coe.router`), and optionally a ``preset``
    backbone (phantom) run over the batch first, so a large router's compute and HBM count."""

    vocab: int = 4096
    dim: int = 256
    preset: str | None = None


@dataclass(frozen=True)
class CacheSpec:
    """The HBM expert cache of each TP group: an optional cap on resident experts, and pins."""

    max_resident: int | None = None
    pin: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServingSpec:
    """Largest batch and context one expert serves; sizes each expert's KV-cache segment."""

    max_batch: int = 8
    max_context: int = 512


@dataclass(frozen=True)
class CoEConfig:
    """A validated CoE registry. Build with :func:`load_registry` or :func:`parse_registry`."""

    name: str
    experts: tuple[ExpertSpec, ...]
    router: RouterSpec = field(default_factory=RouterSpec)
    weights: Weights = Weights.PHANTOM
    placement: str = "spread"
    seed: int = 0
    cache: CacheSpec = field(default_factory=CacheSpec)
    serving: ServingSpec = field(default_factory=ServingSpec)

    @property
    def tp(self) -> int:
        return self.experts[0].tp

    def expert(self, name: str) -> ExpertSpec:
        for e in self.experts:
            if e.name == name:
                return e
        raise ConfigError(f"no expert {name!r} in CoE {self.name!r}; experts: "
                          f"{', '.join(e.name for e in self.experts[:20])}"
                          + (" ..." if len(self.experts) > 20 else ""))

    def to_dict(self) -> dict:
        return {"name": self.name, "weights": str(self.weights), "placement": self.placement,
                "seed": self.seed,
                "router": {k: v for k, v in vars(self.router).items() if v is not None},
                "serving": vars(self.serving).copy(),
                "cache": {"max_resident": self.cache.max_resident, "pin": list(self.cache.pin)},
                "experts": [{k: v for k, v in vars(e).items() if v is not None}
                            for e in self.experts]}


def synthetic(n_experts: int, preset: str = "llama2-7b", tp: int = 8,
              weights: str = "phantom", name: str | None = None, **kw: Any) -> CoEConfig:
    """A CoE of ``n_experts`` copies of one preset with distinct synthetic domains
    (``expert007`` knows the words ``topic007a topic007b topic007c``)."""
    experts = [{"name": f"expert{i:03d}", "preset": preset, "tp": tp,
                "domain": f"topic{i:03d}a topic{i:03d}b topic{i:03d}c"}
               for i in range(n_experts)]
    raw = {"name": name or f"coe-{n_experts}x{preset}", "weights": weights, "experts": experts,
           **kw}
    return parse_registry(raw, origin="synthetic CoE")


def load_registry(path: str | Path) -> CoEConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"CoE registry {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_registry(raw, origin=str(path), base=path.parent)


# -- validation ----------------------------------------------------------------------------

def _mapping(value: Any, where: str, origin: str, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: {where} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(f'{where}.{k}' if where else k for k in unknown)}"
                          f"; allowed: {', '.join(sorted(allowed))}")
    return value


def _int(value: Any, where: str, origin: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{origin}: {where} = {value!r} must be a whole number from {lo} "
                          f"to {hi}")
    return value


def _str(value: Any, where: str, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: {where} = {value!r} must be a non-empty string")
    return value


def parse_registry(raw: Any, origin: str = "CoE registry", base: Path | None = None
                   ) -> CoEConfig:
    """Validate plain data (parsed YAML) into a :class:`CoEConfig`."""
    top = _mapping(raw, "", origin, {"name", "experts", "router", "weights", "placement", "seed",
                                      "cache", "serving"})
    if raw is None:
        raise ConfigError(f"{origin}: empty registry; it needs 'name' and 'experts'")
    name = _str(top.get("name"), "name", origin)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{origin}: name = {name!r} must be letters, digits, '_', '.', '-'")
    weights = Weights.from_str(top.get("weights", "phantom"), "weights")
    placement = top.get("placement", "spread")
    if placement not in POLICIES:
        raise ConfigError(f"{origin}: placement = {placement!r} is not a policy; policies: "
                          f"{', '.join(POLICIES)}")
    seed = _int(top.get("seed", 0), "seed", origin, 0, 2**32 - 1)

    r = _mapping(top.get("router"), "router", origin, {"vocab", "dim", "preset"})
    router = RouterSpec(_int(r.get("vocab", 4096), "router.vocab", origin, 2, 1 << 20),
                        _int(r.get("dim", 256), "router.dim", origin, 1, 4096),
                        None if r.get("preset") is None
                        else _str(r.get("preset"), "router.preset", origin))
    s = _mapping(top.get("serving"), "serving", origin, {"max_batch", "max_context"})
    serving = ServingSpec(_int(s.get("max_batch", 8), "serving.max_batch", origin, 1, 4096),
                          _int(s.get("max_context", 512), "serving.max_context", origin,
                               1, 1 << 20))

    experts_raw = top.get("experts")
    if not isinstance(experts_raw, list) or not experts_raw:
        raise ConfigError(f"{origin}: experts must be a non-empty list, got {experts_raw!r}")
    experts: list[ExpertSpec] = []
    seen: set[str] = set()
    for i, e in enumerate(experts_raw):
        where = f"experts[{i}]"
        e = _mapping(e, where, origin, {"name", "preset", "checkpoint", "pef", "tp", "domain",
                                        "replicas", "hot"})
        ename = _str(e.get("name"), f"{where}.name", origin)
        if not _NAME_RE.match(ename):
            raise ConfigError(f"{origin}: {where}.name = {ename!r} must be letters, digits, "
                              "'_', '.', '-' (it names memory regions)")
        if ename in seen:
            raise ConfigError(f"{origin}: {where}.name = {ename!r} is used twice; expert names "
                              "are unique")
        seen.add(ename)
        sources = [k for k in ("preset", "checkpoint", "pef") if e.get(k) is not None]
        if len(sources) != 1:
            raise ConfigError(f"{origin}: {where} names {len(sources)} model sources "
                              f"({', '.join(sources) or 'none'}); give exactly one of preset, "
                              "checkpoint, pef")
        tp = _int(e.get("tp", 8), f"{where}.tp", origin, 1, 64)
        if tp & (tp - 1):
            raise ConfigError(f"{origin}: {where}.tp = {tp} must be a power of two")
        if experts and tp != experts[0].tp:
            raise ConfigError(f"{origin}: {where}.tp = {tp} differs from experts[0].tp = "
                              f"{experts[0].tp}; all experts of one CoE share a TP size")
        paths = {}
        for key in ("checkpoint", "pef"):
            if e.get(key) is not None:
                p = Path(_str(e[key], f"{where}.{key}", origin))
                if base is not None and not p.is_absolute():
                    p = base / p
                if not p.exists():
                    raise ConfigError(f"{origin}: {where}.{key} = {str(p)!r} does not exist")
                paths[key] = str(p)
        experts.append(ExpertSpec(
            ename, tp, _str(e.get("domain"), f"{where}.domain", origin),
            preset=None if e.get("preset") is None else _str(e["preset"], f"{where}.preset",
                                                             origin),
            checkpoint=paths.get("checkpoint"), pef=paths.get("pef"),
            replicas=_int(e.get("replicas", 1), f"{where}.replicas", origin, 1, 256),
            hot=bool(e.get("hot", False))))

    c = _mapping(top.get("cache"), "cache", origin, {"max_resident", "pin"})
    max_res = c.get("max_resident")
    if max_res is not None:
        max_res = _int(max_res, "cache.max_resident", origin, 1, 1 << 20)
    pins = c.get("pin", []) or []
    if not isinstance(pins, list):
        raise ConfigError(f"{origin}: cache.pin must be a list of expert names, got {pins!r}")
    for j, p in enumerate(pins):
        if p not in seen:
            raise ConfigError(f"{origin}: cache.pin[{j}] = {p!r} is not an expert; experts: "
                              f"{', '.join(sorted(seen)[:20])}")
    if max_res is not None and len(pins) >= max_res:
        raise ConfigError(f"{origin}: cache.pin holds {len(pins)} experts but "
                          f"cache.max_resident = {max_res}; pins must leave room for one more")
    cache = CacheSpec(max_res, tuple(pins))
    return CoEConfig(name, tuple(experts), router, weights, placement, seed, cache, serving)
