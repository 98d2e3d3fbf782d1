"""Hardware profiles: the numbers every timing and capacity decision reads.

A profile is a YAML file. Each number is a mapping ``{value: <quantity>, source: <text>}`` or
``{value: <quantity>, assumption: <text>}`` so that every modeled figure can be traced to a
published number or to a stated assumption. :func:`load_profile` validates the file once against
:data:`SCHEMA` and returns a frozen :class:`Profile`; errors name the key path, the value and the
allowed range.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from sn40l.errors import ProfileError, UnitError
from sn40l.hardware.units import parse_bandwidth, parse_bytes, parse_flops, parse_time_ns


def _parse_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnitError(f"{value!r} is not a whole number")
    return value


def _parse_ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnitError(f"{value!r} is not a number")
    return float(value)


# key path -> the words a choice-valued key allows (kind "choice")
CHOICES: dict[str, tuple[str, ...]] = {
    # How much of a decoder layer one kernel may hold: "decoder" (a dataflow socket fuses the
    # whole layer) or "operator" (a GPU runs the layer as several kernels, one per operator or
    # per GEMM with its fused epilogue).
    "execution.fusion_scope": ("decoder", "operator"),
}


def _parse_word(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise UnitError(f"{value!r} is not a word")
    return value


# kind -> (parser, unit shown in messages)
_KINDS: dict[str, tuple[Callable[[object], Any], str]] = {
    "bytes": (parse_bytes, "bytes"),
    "bandwidth": (parse_bandwidth, "bytes/s"),
    "flops": (parse_flops, "FLOP/s"),
    "time": (parse_time_ns, "ns"),
    "count": (_parse_count, ""),
    "ratio": (_parse_ratio, ""),
    "choice": (_parse_word, ""),
}

# key path -> (kind, minimum, maximum). Every key is required; minimum/maximum are inclusive and
# in the parsed unit. A DDR capacity of 0 means the device has no DDR (GPU baselines).
SCHEMA: dict[str, tuple[str, float, float]] = {
    "node.sockets_per_node": ("count", 1, 64),
    "node.host_memory": ("bytes", 0, 2**60),
    "node.host_cpus": ("count", 1, 4096),
    "compute.bf16": ("flops", 1, 10**18),
    "compute.units": ("count", 1, 10**6),
    "memory.sram.capacity": ("bytes", 1, 2**40),
    "memory.sram.bandwidth": ("bandwidth", 1, 10**16),
    "memory.sram.latency": ("time", 0, 10**9),
    "memory.hbm.capacity": ("bytes", 1, 2**44),
    "memory.hbm.bandwidth": ("bandwidth", 1, 10**15),
    "memory.hbm.latency": ("time", 0, 10**9),
    "memory.ddr.capacity": ("bytes", 0, 2**46),
    "memory.ddr.bandwidth": ("bandwidth", 1, 10**15),
    "memory.ddr.latency": ("time", 0, 10**9),
    "copy.ddr_to_hbm.bandwidth": ("bandwidth", 1, 10**15),
    "copy.ddr_to_hbm.latency": ("time", 0, 10**9),
    "links.p2p.bandwidth": ("bandwidth", 1, 10**15),
    "links.p2p.latency": ("time", 0, 10**9),
    "links.internode.bandwidth": ("bandwidth", 1, 10**15),
    "links.internode.latency": ("time", 0, 10**9),
    "links.host.bandwidth": ("bandwidth", 1, 10**15),
    "links.host.latency": ("time", 0, 10**9),
    "efficiency.hbm_fused": ("ratio", 0.01, 1.0),
    "efficiency.hbm_unfused": ("ratio", 0.01, 1.0),
    "efficiency.compute_fused": ("ratio", 0.01, 1.0),
    "efficiency.compute_unfused": ("ratio", 0.01, 1.0),
    "launch.hardware": ("time", 0, 10**9),
    "execution.fusion_scope": ("choice", 0, 0),
    # Software orchestration: what the host's Program Load, Argument Load and Kernel Execute
    # commands move per kernel (see sn40l.compiler.cost.software_launch_ns).
    "orchestration.config_bytes_per_unit": ("bytes", 0, 2**30),
    "orchestration.program_load_bandwidth": ("bandwidth", 1, 10**15),
    "orchestration.argument_bytes": ("bytes", 0, 2**30),
    "orchestration.kernel_execute": ("time", 0, 10**9),
}

PROFILE_NAMES = ("sn40l", "dgx-a100", "dgx-h100", "dgx-a100-pcie", "dgx-h100-pcie")


@dataclass(frozen=True)
class Quantity:
    """One profile number: its parsed value, the text it was written as, and where it comes from."""

    path: str
    value: int | float
    text: str | int | float  # as written in the YAML file
    source: str | None = None
    assumption: str | None = None

    @property
    def provenance(self) -> str:
        return f"source: {self.source}" if self.source else f"assumption: {self.assumption}"


@dataclass(frozen=True)
class TierSpec:
    """Capacity, peak bandwidth and access latency of one memory tier of one socket."""

    name: str
    capacity: int
    bandwidth: int
    latency_ns: int


@dataclass(frozen=True)
class LinkSpec:
    """Bandwidth (bytes/s, one direction) and latency of one link."""

    name: str
    bandwidth: int
    latency_ns: int


@dataclass(frozen=True)
class Profile:
    """A validated hardware profile. Build it with :func:`load_profile`; never mutate it."""

    name: str
    device: str
    description: str
    sockets_per_node: int
    layouts: tuple[int, ...]
    quantities: dict[str, Quantity] = field(repr=False, compare=False)

    def value(self, path: str) -> int | float:
        """The parsed value at a schema key path, e.g. ``"memory.hbm.capacity"``."""
        try:
            return self.quantities[path].value
        except KeyError:
            raise ProfileError(f"profile {self.name!r} has no key {path!r}; keys: "
                               f"{', '.join(sorted(self.quantities))}") from None

    def tier(self, name: str) -> TierSpec:
        """The spec of tier 'sram', 'hbm' or 'ddr'."""
        if name not in ("sram", "hbm", "ddr"):
            raise ProfileError(f"unknown memory tier {name!r}; tiers: sram, hbm, ddr")
        return TierSpec(name, int(self.value(f"memory.{name}.capacity")),
                        int(self.value(f"memory.{name}.bandwidth")),
                        int(self.value(f"memory.{name}.latency")))

    def link(self, name: str) -> LinkSpec:
        """The spec of link 'p2p', 'internode' or 'host'."""
        if name not in ("p2p", "internode", "host"):
            raise ProfileError(f"unknown link {name!r}; links: p2p, internode, host")
        return LinkSpec(name, int(self.value(f"links.{name}.bandwidth")),
                        int(self.value(f"links.{name}.latency")))

    @property
    def bf16_flops(self) -> int:
        return int(self.value("compute.bf16"))

    @property
    def ddr_to_hbm(self) -> LinkSpec:
        """Sustained DDR->HBM copy rate of one socket (below the DDR peak)."""
        return LinkSpec("ddr_to_hbm", int(self.value("copy.ddr_to_hbm.bandwidth")),
                        int(self.value("copy.ddr_to_hbm.latency")))

    @property
    def fusion_scope(self) -> str:
        """``decoder`` (a whole decoder layer per kernel) or ``operator`` (GPU kernels)."""
        return str(self.value("execution.fusion_scope"))

    def with_sockets_per_node(self, n: int) -> "Profile":
        """The same profile with another node layout; ``n`` must be one of :attr:`layouts`."""
        if n not in self.layouts:
            raise ProfileError(f"sockets per node {n} is not a layout of profile {self.name!r}; "
                               f"allowed: {', '.join(map(str, self.layouts))}")
        q = dict(self.quantities)
        old = q["node.sockets_per_node"]
        q["node.sockets_per_node"] = dataclasses.replace(old, value=n, text=n)
        return dataclasses.replace(self, sockets_per_node=n, quantities=q)

    def to_dict(self) -> dict:
        """Plain data (for msgpack/JSON and for sending to socket actors)."""
        return {"name": self.name, "device": self.device, "description": self.description,
                "layouts": list(self.layouts),
                "quantities": {p: [q.text, q.source, q.assumption]
                               for p, q in self.quantities.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        raw: dict[str, Any] = {"name": data["name"], "device": data["device"],
                               "description": data["description"], "layouts": data["layouts"]}
        for path, (text, source, assumption) in data["quantities"].items():
            node = raw
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            entry = {"value": text}
            if source:
                entry["source"] = source
            if assumption:
                entry["assumption"] = assumption
            node[leaf] = entry
        return _validate(raw, origin=f"profile {data['name']!r}")


def _lookup(raw: dict, path: str, origin: str) -> Any:
    node: Any = raw
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(node, dict) or part not in node:
            raise ProfileError(f"{origin}: missing key {'.'.join(walked)!r} (required: {path})")
        node = node[part]
    return node


def _refuse_unknown_nested(raw: dict, origin: str) -> None:
    """A key below a known section that the schema does not know (e.g. a stale
    ``launch.software``) is refused by name, never ignored."""
    known = {".".join(p.split(".")[:i]) for p in SCHEMA for i in range(1, p.count(".") + 2)}

    def walk(node: dict, prefix: str) -> None:
        for key, sub in node.items():
            path = f"{prefix}{key}"
            if path in SCHEMA:
                continue
            if path not in known:
                siblings = sorted(k.split(".")[-1] for k in known
                                  if k.startswith(prefix) and k.count(".") == path.count("."))
                raise ProfileError(f"{origin}: unknown key {path!r}; allowed here: "
                                   f"{', '.join(siblings)}")
            if isinstance(sub, dict):
                walk(sub, path + ".")

    for top in raw:
        if top in {p.split(".")[0] for p in SCHEMA} and isinstance(raw[top], dict):
            walk(raw[top], top + ".")


def _validate(raw: Any, origin: str) -> Profile:
    if not isinstance(raw, dict):
        raise ProfileError(f"{origin}: a profile is a YAML mapping, got {type(raw).__name__}")
    for key in ("name", "device", "description"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            raise ProfileError(f"{origin}: key {key!r} must be a non-empty string, "
                               f"got {raw.get(key)!r}")
    known_top = {"name", "device", "description", "layouts"} | {p.split(".")[0] for p in SCHEMA}
    unknown = sorted(set(raw) - known_top)
    if unknown:
        raise ProfileError(f"{origin}: unknown key(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(known_top))}")
    _refuse_unknown_nested(raw, origin)
    quantities: dict[str, Quantity] = {}
    for path, (kind, lo, hi) in SCHEMA.items():
        entry = _lookup(raw, path, origin)
        if not isinstance(entry, dict) or "value" not in entry:
            raise ProfileError(f"{origin}: key {path!r} must be a mapping with 'value' and "
                               f"'source' or 'assumption', got {entry!r}")
        extra = sorted(set(entry) - {"value", "source", "assumption"})
        if extra:
            raise ProfileError(f"{origin}: key {path!r} has unknown field(s) {', '.join(extra)}; "
                               "allowed: value, source, assumption")
        source, assumption = entry.get("source"), entry.get("assumption")
        if bool(source) == bool(assumption):
            raise ProfileError(f"{origin}: key {path!r} needs exactly one of 'source' or "
                               f"'assumption' saying where {entry['value']!r} comes from")
        parser, unit = _KINDS[kind]
        try:
            value = parser(entry["value"])
        except UnitError as exc:
            raise ProfileError(f"{origin}: key {path!r}: {exc}") from None
        if kind == "choice":
            if value not in CHOICES[path]:
                raise ProfileError(f"{origin}: key {path!r} = {value!r} is not allowed; "
                                   f"allowed: {', '.join(CHOICES[path])}")
        elif not lo <= value <= hi:
            raise ProfileError(f"{origin}: key {path!r} = {entry['value']!r} is out of range; "
                               f"allowed {lo:g} to {hi:g} {unit}".rstrip())
        quantities[path] = Quantity(path, value, entry["value"], source, assumption)
    layouts = raw.get("layouts", [quantities["node.sockets_per_node"].value])
    if (not isinstance(layouts, list) or not layouts
            or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 64
                       for x in layouts)):
        raise ProfileError(f"{origin}: key 'layouts' must be a list of sockets-per-node counts "
                           f"from 1 to 64, got {layouts!r}")
    spn = int(quantities["node.sockets_per_node"].value)
    if spn not in layouts:
        raise ProfileError(f"{origin}: node.sockets_per_node = {spn} is not in layouts {layouts}")
    return Profile(raw["name"], raw["device"], raw["description"], spn, tuple(layouts), quantities)


def load_profile(name_or_path: str | Path = "sn40l") -> Profile:
    """Load a shipped profile by name (see :data:`PROFILE_NAMES`) or a YAML path. A shipped
    profile is parsed once per process (profiles are never mutated); a path is read anew."""
    text_name = str(name_or_path)
    if text_name in PROFILE_NAMES:
        return _shipped(text_name)
    return _load(text_name)


@functools.lru_cache(maxsize=None)
def _shipped(name: str) -> Profile:
    return _load(name)


def _load(text_name: str) -> Profile:
    if text_name in PROFILE_NAMES:
        text = resources.files("sn40l.hardware").joinpath(f"profiles/{text_name}.yaml").read_text()
        origin = f"profile {text_name!r}"
    else:
        path = Path(text_name)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise ProfileError(f"unknown profile {text_name!r}; shipped profiles: "
                               f"{', '.join(PROFILE_NAMES)}, or give the path of a .yaml file")
        text = path.read_text()
        origin = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{origin}: not valid YAML: {exc}") from None
    return _validate(raw, origin)
