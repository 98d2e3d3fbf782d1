"""Checks of a decoded .pef plan before it costs anything: no allocation, no weight generation.

Three steps, each naming the field path and what was expected:

1. **Decoding is bounded**: msgpack limits on string, binary, array and map sizes (a 2 KB file
   cannot claim a 4 GB string) and a nesting limit; a plan nests 4 levels deep.
2. **The inputs are typed**: ``config`` and ``model`` are checked field by field against the
   dataclasses :class:`~sn40l.compiler.plan.CompileConfig` and
   :class:`~sn40l.compiler.models.ModelConfig` themselves (their fields and annotations, so a
   field added there is checked here without a second list), with every whole number within
   :data:`INT_LIMITS`; then the dataclasses' own checks run (heads divide hidden, TP fits the
   profile, ...).
3. **Everything else is what the compiler derives**: ``shards``, ``kernels``, ``memory``,
   ``estimate`` and ``profile`` are recomputed from the checked inputs (cheap: metadata only,
   linear in the layers) and must equal the stored ones, so a crafted or stale artifact is
   refused at the first field that differs, and an unknown field is refused by name.

:func:`check_load` then checks a plan against the sockets' capacities and the host memory that
materialized weights would take, before anything is placed.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any

import msgpack

from sn40l.compiler.models import ModelConfig
from sn40l.compiler.plan import CompileConfig, compile_plan
from sn40l.errors import CapacityError, CompileError, ConfigError
from sn40l.hardware.profile import load_profile
from sn40l.hardware.units import format_bytes

# Whole-number fields of config/model and their allowed ranges; any other whole number in
# them is held to DEFAULT_INT_LIMIT. `layers` bounds the cost of recomputing a plan;
# the rest keeps every product of two dimensions exact in int64.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "layers": (1, 1024),        # Llama 3.1 405B has 126
    "tp": (1, 1024),
    "nodes": (1, 256),          # as `cluster up --nodes`
    "batch": (1, 1 << 20),
    "seq_len": (1, 1 << 24),
    "max_position": (1, 1 << 24),
}
DEFAULT_INT_LIMIT = (0, (1 << 31) - 1)

# Materialized weights are drawn (or read) in full on each socket as float32 and its shards
# kept beside them; assumption: materialized runs are for small models checked against a
# reference, so 1 GiB of host memory per socket is plenty (larger models run phantom).
MAX_MATERIALIZED_BYTES = 1 << 30

MAX_NESTING = 16  # a plan nests 4 deep (memory.symbols[i].shape)
_UNPACK_LIMITS = dict(max_str_len=1 << 20, max_bin_len=1 << 20, max_array_len=1 << 22,
                      max_map_len=1 << 16, max_ext_len=0)


def decode(payload: bytes, origin: str) -> dict:
    """The msgpack payload of a .pef as a plan dict, within the decoding limits."""
    limits = (f"a .pef holds strings and byte strings up to {_UNPACK_LIMITS['max_str_len']} "
              f"bytes, lists up to {_UNPACK_LIMITS['max_array_len']} items, nesting up to "
              f"{MAX_NESTING} levels")
    try:
        plan = msgpack.unpackb(payload, raw=False, strict_map_key=True, **_UNPACK_LIMITS)
    except msgpack.exceptions.StackError:
        raise CompileError(f"{origin}: payload nests deeper than the decoder's stack; "
                           f"{limits}") from None
    except msgpack.exceptions.FormatError:
        raise CompileError(f"{origin}: payload is not valid msgpack (a byte that starts no "
                           "msgpack value)") from None
    except msgpack.exceptions.ExtraData:
        raise CompileError(f"{origin}: payload has bytes after the plan") from None
    except ValueError as exc:  # msgpack's size limits, a truncated value
        raise CompileError(f"{origin}: payload exceeds the decoding limits or claims more "
                           f"bytes than it holds ({exc or type(exc).__name__}); "
                           f"{limits}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a corrupt file
        raise CompileError(f"{origin}: payload is not valid msgpack: "
                           f"{exc or type(exc).__name__}") from None
    depth = _depth(plan)
    if depth > MAX_NESTING:
        raise CompileError(f"{origin}: payload nests {depth} levels deep; a .pef plan nests "
                           f"at most {MAX_NESTING}")
    if not isinstance(plan, dict):
        raise CompileError(f"{origin}: payload is a {_kind(plan)}; expected a map (the plan)")
    return plan


def _depth(obj: Any) -> int:
    """Nesting depth of lists and maps, without recursion (a crafted value may be deep)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, d)
        if d > MAX_NESTING:
            return d
        stack.extend((c, d + 1) for c in children)
    return deepest


def _kind(value: Any) -> str:
    return {dict: "map", list: "list", str: "string", bytes: "byte string", bool: "boolean",
            int: "whole number", float: "number", type(None): "nil"}.get(type(value),
                                                                          type(value).__name__)


# -- typed inputs --------------------------------------------------------------------------
def _check_value(path: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint``; returns it converted (nested
    dataclasses built, enums by value, lists to tuples where the annotation says tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(path, value, option)
            except CompileError as exc:
                errors.append(str(exc))
        expected = " or ".join(_name(o) for o in options)
        raise CompileError(f"{path}: expected {expected}, got {_show(value)}"
                           if len(errors) != 1 else errors[0])
    if hint is Any:
        return _check_plain(path, value)
    if dataclasses.is_dataclass(hint):
        return build(path, value, hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            raise CompileError(f"{path}: expected one of {allowed}, got {_show(value)}")
        return hint(value)
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise CompileError(f"{path}: expected {_name(hint)}, got {_show(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CompileError(f"{path}: expected a whole number, got {_show(value)}")
        lo, hi = INT_LIMITS.get(path.rsplit(".", 1)[-1], DEFAULT_INT_LIMIT)
        if not lo <= value <= hi:
            raise CompileError(f"{path}: {value} is out of range; allowed {lo} to {hi}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
                value):
            raise CompileError(f"{path}: expected a finite number, got {_show(value)}")
        return float(value)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):
            raise CompileError(f"{path}: expected a list, got {_show(value)}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        out = [_check_value(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple or hint is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise CompileError(f"{path}: expected a map, got {_show(value)}")
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _check_value(f"{path}.{k}", v, item) for k, v in value.items()}
    return _check_plain(path, value)  # an annotation this checker does not know: plain data


def _check_plain(path: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return _check_value(path, value, int)
    if isinstance(value, float):
        return _check_value(path, value, float)
    raise CompileError(f"{path}: expected a plain value (nil, boolean, number or string), "
                       f"got {_show(value)}")


def _name(hint: Any) -> str:
    if hint is type(None):
        return "nil"
    if dataclasses.is_dataclass(hint):
        return f"a map of {hint.__name__}"
    return {int: "a whole number", float: "a number", str: "a string", bool: "a boolean"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any) -> str:
    text = repr(value)
    return f"{_kind(value)} {text[:60] + '...' if len(text) > 60 else text}"


def build(path: str, value: Any, cls: type, skip: frozenset[str] = frozenset()) -> Any:
    """An instance of dataclass ``cls`` from the map ``value``, every field checked against
    its annotation; unknown keys and missing fields without a default are refused.
    ``skip``: fields not stored in the artifact (left to their defaults)."""
    if not isinstance(value, dict):
        raise CompileError(f"{path}: expected a map of {cls.__name__}, got {_show(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in skip}
    unknown = sorted(map(str, set(value) - set(fields)))
    if unknown:
        raise CompileError(f"{path}: unknown field(s) {unknown}; {cls.__name__} has "
                           f"{', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise CompileError(f"{path}.{name}: missing; expected {_name(hints[name])}")
            continue
        kwargs[name] = _check_value(f"{path}.{name}", value[name], hints[name])
    try:
        return cls(**kwargs)
    except (ConfigError, CompileError) as exc:  # the dataclass's own consistency checks
        raise CompileError(f"{path}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CompileError(f"{path}: not a valid {cls.__name__}: {exc}") from None


# -- the whole plan ------------------------------------------------------------------------
def check_inputs(plan: dict, origin: str = "artifact") -> None:
    """The typed-input step alone (config and model within limits), for a freshly compiled
    plan: the compiler refuses what a loader would refuse."""
    try:
        build("config", plan["config"], CompileConfig)
        build("model", plan["model"], ModelConfig, skip=frozenset({"extra"}))
    except CompileError as exc:
        raise CompileError(f"{origin}: field {exc}") from None


def validate_plan(plan: dict, origin: str = "artifact") -> None:
    """Refuse a plan whose inputs are mistyped or out of range or whose derived fields differ
    from what this compiler derives from its inputs (see the module docstring)."""
    try:
        for key in ("config", "model"):
            if key not in plan:
                raise CompileError(f"{key}: missing")
        cfg = build("config", plan["config"], CompileConfig)
        model = build("model", plan["model"], ModelConfig, skip=frozenset({"extra"}))
        checkpoint = plan.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise CompileError(f"checkpoint: expected nil or a string, got {_show(checkpoint)}")
        try:
            expected = compile_plan(cfg, model)
        except (ConfigError, CompileError) as exc:
            raise CompileError(f"config: {exc}") from None
        expected = msgpack.unpackb(msgpack.packb(expected, use_bin_type=True), raw=False)
        unknown = sorted(map(str, set(plan) - set(expected)))
        if unknown:
            raise CompileError(f"unknown field(s) {unknown}; a plan has "
                               f"{', '.join(expected)}")
        for key, want in expected.items():
            if key in ("config", "model", "checkpoint"):
                continue
            if key not in plan:
                raise CompileError(f"{key}: missing")
            _same(key, plan[key], want)
    except CompileError as exc:
        raise CompileError(f"{origin}: field {exc}") from None


def _same(path: str, got: Any, want: Any) -> None:
    """Compare a stored field with the derived one; the first difference names its path."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            raise CompileError(f"{path}: expected a map, got {_show(got)}")
        extra = sorted(map(str, set(got) - set(want)))
        if extra:
            raise CompileError(f"{path}: unknown field(s) {extra}")
        for k, v in want.items():
            if k not in got:
                raise CompileError(f"{path}.{k}: missing")
            _same(f"{path}.{k}", got[k], v)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            raise CompileError(f"{path}: expected a list of {len(want)} items (as compiled "
                               f"from config and model), got {_show(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            _same(f"{path}[{i}]", g, w)
    elif type(got) is not type(want) or got != want:
        raise CompileError(f"{path}: expected {want!r} (as compiled from config and model), "
                           f"got {_show(got)}")


# -- before loading --------------------------------------------------------------------------
def check_load(plan: dict, weights: str, origin: str = "artifact",
               home: str | None = None) -> None:
    """Refuse to load a (validated) plan that does not fit the sockets' HBM and DDR (when
    loaded where the plan puts it, ``home`` None), or whose materialized weights (any
    ``weights`` but "phantom") would take more than :data:`MAX_MATERIALIZED_BYTES` of host
    memory per socket. Needs and limits are named."""
    mem = plan["memory"]
    if home is None:
        profile = load_profile(plan["config"]["profile"])
        for tier in ("hbm", "ddr"):
            need, cap = int(mem[f"{tier}_bytes"]), profile.tier(tier).capacity
            if need > cap:
                raise CapacityError(f"{origin}: needs {format_bytes(need)} of {tier.upper()} "
                                    f"per socket; profile {profile.name!r} has "
                                    f"{format_bytes(cap)}")
    if weights == "phantom":
        return
    model = build("model", plan["model"], ModelConfig, skip=frozenset({"extra"}))
    # full weights (float32) + this socket's symbols (bf16 bytes, held as float32)
    need = 4 * model.params + 2 * sum(int(s["bytes"]) for s in mem["symbols"])
    if need > MAX_MATERIALIZED_BYTES:
        raise CapacityError(
            f"{origin}: materialized weights ({weights!r}) of {model.name!r} would take "
            f"{format_bytes(need)} of host memory per socket, more than the "
            f"{format_bytes(MAX_MATERIALIZED_BYTES)} allowed; run it with --weights phantom")
