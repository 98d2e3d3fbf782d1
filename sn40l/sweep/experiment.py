"""An experiment: a workload, the axes it sweeps and how often each point repeats.

The same names serve the YAML file and the command line (``--tp 1,2,4`` is the axis ``tp:
[1, 2, 4]``), because both are built from one table, :data:`PARAMS`. A YAML experiment::

    name: tp-scaling-8b
    workload: model            # model | collective | coe
    repeats: 1
    axes:                      # a list sweeps; a single value is a setting
      model: llama3.1-8b
      tp: [1, 2, 4, 8, 16]
      nodes: [1, 2]
      batch: 1
      max_new_tokens: 128

Unknown keys and axis names are refused by name with the allowed list, and every value is
parsed and checked here, before anything starts. The grid is the cartesian product of the axes
in the order they are written; :meth:`Experiment.points` expands it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sn40l.cluster.types import DraftPlacement
from sn40l.collectives.types import AllReduceAlgo
from sn40l.compiler.types import FusionLevel, Orchestration
from sn40l.errors import ConfigError
from sn40l.sweep.types import CollectiveOp, WorkloadKind

M, C, E = WorkloadKind.MODEL, WorkloadKind.COLLECTIVE, WorkloadKind.COE


def _int(lo: int = 1) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError(f"a whole number >= {lo}")
        try:
            n = int(v)
        except ValueError:
            raise ValueError(f"a whole number >= {lo}") from None
        if n < lo:
            raise ValueError(f"a whole number >= {lo}")
        return n
    return parse


def _float01(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError("a number from 0 to 1") from None
    if not 0.0 <= x <= 1.0:
        raise ValueError("a number from 0 to 1")
    return x


def _size(v: Any) -> int:
    from sn40l.collectives.bench import parse_sizes

    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError("a positive byte count like 4K, 64K, 16M")
        return v
    try:
        (n,) = parse_sizes(str(v))
    except (ConfigError, ValueError):
        raise ValueError("a positive byte count like 4K, 64K, 16M") from None
    return n


def _choice(cls) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        try:
            return str(cls.from_str(v))
        except ConfigError:
            raise ValueError(f"one of {', '.join(c.value for c in cls)}") from None
    return parse


def _text(v: Any) -> str:
    if not isinstance(v, (str, int, float)) or isinstance(v, bool) or str(v) == "":
        raise ValueError("a non-empty name")
    return str(v)


def _coe_mode(v: Any) -> str:
    from sn40l.coe.bench import MODES

    if str(v) not in MODES:
        raise ValueError(f"one of {', '.join(MODES)}")
    return str(v)


@dataclass(frozen=True)
class Param:
    """One axis or setting: its name (YAML key and ``--flag``), parser, default, workloads."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    workloads: tuple[WorkloadKind, ...]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PARAMS: dict[str, Param] = {p.name: p for p in (
    Param("model", _text, None, (M, E), "model: a preset, a .pef file or a Hugging Face "
          "checkpoint directory; for coe the expert preset (default llama2-7b)"),
    Param("weights", _text, "phantom", (M,), "phantom (shapes only), random, or a checkpoint "
          "directory"),
    Param("tp", _int(), 8, (M, C), "tensor-parallel sockets (collective: the group size)"),
    Param("nodes", _int(), 1, (M, C), "nodes the TP group spans (coe: found from capacity)"),
    Param("sockets_per_node", _int(), None, (M, C, E), "sockets per node of the cluster "
          "(default: the profile's)"),
    Param("profile", _text, "sn40l", (M, C, E), "hardware profile: sn40l, dgx-a100, dgx-h100 "
          "or a profile .yaml"),
    Param("fusion", _choice(FusionLevel), "fused", (M,), "fused or unfused kernels"),
    Param("orchestration", _choice(Orchestration), "hardware", (M,),
          "hardware or software kernel launches"),
    Param("batch", _int(), 1, (M, E), "sequences per step (coe: prompts per batch)"),
    Param("seq_len", _int(), 2048, (M,), "compiled sequence length (context)"),
    Param("prompt_len", _int(), 16, (M, E), "prompt tokens per sequence"),
    Param("max_new_tokens", _int(), 128, (M, E), "generated tokens per sequence"),
    Param("draft", _text, None, (M,), "speculative decoding: the draft model preset"),
    Param("spec_tokens", _int(), None, (M,), "speculative decoding: tokens drafted per step"),
    Param("spec_acceptance", _float01, None, (M,), "speculative decoding: acceptance rate"),
    Param("draft_placement", _choice(DraftPlacement), None, (M,), "speculative decoding: the "
          "draft on the target's sockets (same, the default) or on as many sockets of the "
          "nodes after the target's (other), as sn40l run --draft-placement"),
    Param("op", _choice(CollectiveOp), "allreduce", (C,), "the collective: "
          + ", ".join(c.value for c in CollectiveOp)),
    Param("size", _size, 1 << 20, (C,), "message bytes per socket: 4K, 64K, 1M, ..."),
    Param("algorithm", _choice(AllReduceAlgo), "auto", (C,), "AllReduce algorithm"),
    Param("iters", _int(), 5, (C,), "timed collectives per point (the median is reported)"),
    Param("experts", _int(), 10, (E,), "experts in the CoE"),
    Param("mode", _coe_mode, "sequential", (E,), "CoE serving mode"),
    Param("rounds", _int(), 4, (E,), "measured CoE batches per point"),
    Param("warmup", _int(0), 8, (E,), "CoE batches served first to warm the cache"),
)}

TOP_KEYS = ("name", "workload", "repeats", "axes", "description")
SPEC_PARAMS = ("draft", "spec_tokens", "spec_acceptance", "draft_placement")


@dataclass(frozen=True)
class Point:
    """One grid point: its index in the grid and a value for every parameter it uses."""

    index: int
    values: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.values)[name]

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def label(self, axes: tuple[str, ...]) -> str:
        d = self.as_dict
        return " ".join(f"{a}={d[a]}" for a in axes) or "point"

    @property
    def key(self) -> str:
        """A stable identity for ``--resume``: the parameter values, canonical."""
        return ";".join(f"{k}={'' if v is None else v}" for k, v in sorted(self.values))


@dataclass(frozen=True)
class Experiment:
    """A checked experiment. Build with :meth:`from_yaml`, :meth:`from_mapping` or
    :meth:`from_flags`; ``axes`` maps each parameter given to its tuple of values."""

    name: str
    workload: WorkloadKind
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    repeats: int = 1
    description: str = ""

    @property
    def swept(self) -> tuple[str, ...]:
        """Axes with more than one value (what a plot's x and series can be)."""
        return tuple(k for k, v in self.axes if len(v) > 1)

    @property
    def params(self) -> tuple[str, ...]:
        """Every parameter of the workload, in table order."""
        return tuple(p.name for p in PARAMS.values() if self.workload in p.workloads)

    def points(self) -> list[Point]:
        """The grid: the cartesian product of the axes (written order), defaults filled in."""
        given = dict(self.axes)
        names = [k for k, _ in self.axes]
        out = []
        for i, combo in enumerate(itertools.product(*(given[k] for k in names))):
            vals = dict(zip(names, combo))
            full = tuple((p, vals.get(p, _default(p, self.workload))) for p in self.params)
            out.append(Point(i, full))
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "workload": str(self.workload), "repeats": self.repeats,
                "description": self.description,
                "axes": {k: list(v) if len(v) > 1 else v[0] for k, v in self.axes}}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> "Experiment":
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"experiment {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"experiment {path}: not valid YAML ({exc})") from None
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, data: Any, where: str = "experiment") -> "Experiment":
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
        unknown = [k for k in data if k not in TOP_KEYS]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                              f"{', '.join(TOP_KEYS)}")
        if "workload" not in data:
            raise ConfigError(f"{where}: 'workload' is required; allowed: "
                              f"{', '.join(w.value for w in WorkloadKind)}")
        workload = _parse_top(lambda: WorkloadKind.from_str(data["workload"]), where, "workload")
        axes = data.get("axes") or {}
        if not isinstance(axes, dict):
            raise ConfigError(f"{where}: 'axes' must be a mapping of parameter -> value or list")
        repeats = _parse_top(lambda: _int()(data.get("repeats", 1)), where, "repeats")
        return cls.build(str(data.get("name") or Path(where).stem), workload,
                         {k: v if isinstance(v, list) else [v] for k, v in axes.items()},
                         repeats, str(data.get("description") or ""), where)

    @classmethod
    def build(cls, name: str, workload: WorkloadKind, raw: dict[str, list], repeats: int = 1,
              description: str = "", where: str = "experiment") -> "Experiment":
        """Check every axis name and value against :data:`PARAMS` for ``workload``."""
        allowed = [p.name for p in PARAMS.values() if workload in p.workloads]
        axes = []
        for key, values in raw.items():
            if key not in allowed:
                raise ConfigError(f"{where}: unknown axis {key!r} for workload {workload}; "
                                  f"allowed: {', '.join(allowed)}")
            if not values:
                raise ConfigError(f"{where}: axis {key!r} has no values")
            parsed = []
            for v in values:
                try:
                    parsed.append(PARAMS[key].parse(v))
                except ValueError as exc:
                    raise ConfigError(f"{where}: axis {key!r} value {v!r} must be {exc}") \
                        from None
            axes.append((key, tuple(dict.fromkeys(parsed))))
        if workload is WorkloadKind.MODEL and "model" not in dict(axes):
            raise ConfigError(f"{where}: workload model needs the axis 'model' (a preset, "
                              "a .pef or a checkpoint directory)")
        return cls(name, workload, tuple(axes), repeats, description)


def _default(param: str, workload: WorkloadKind) -> Any:
    if param == "model" and workload is WorkloadKind.COE:
        return "llama2-7b"
    if param == "tp" and workload is WorkloadKind.COE:
        return 8
    return PARAMS[param].default


def _parse_top(fn: Callable[[], Any], where: str, key: str) -> Any:
    try:
        return fn()
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{where}: {key!r}: {exc}") from None


def split_list(text: str) -> list[str]:
    """'1,2,4' -> ['1', '2', '4'] (a flag's comma list)."""
    return [x.strip() for x in str(text).split(",") if x.strip()]
