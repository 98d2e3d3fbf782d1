"""Tidy results: one row per point and repeat, written as CSV and JSON after every point.

A row holds the experiment's name, the point's index and key, the repeat, the status (and the
reason of a skipped or failed point), every parameter of the workload, every modeled metric
(empty where the workload does not have it) and the wall seconds the point took. Both files are
replaced atomically after each point, so an interrupted sweep keeps what it finished and
``--resume`` can skip those rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sn40l.errors import ConfigError
from sn40l.sweep.experiment import Experiment, Point
from sn40l.sweep.types import Status
from sn40l.sweep.workloads import METRICS

HEAD = ("experiment", "workload", "point", "repeat", "status", "reason")
TAIL = ("wall_s", "key")


@dataclass(frozen=True)
class Row:
    """One point run once."""

    experiment: str
    workload: str
    point: int
    repeat: int
    status: Status
    params: tuple[tuple[str, Any], ...]
    metrics: tuple[tuple[str, float], ...] = ()
    reason: str = ""
    wall_s: float = 0.0
    key: str = ""

    def to_dict(self, params: tuple[str, ...]) -> dict:
        p, m = dict(self.params), dict(self.metrics)
        return {"experiment": self.experiment, "workload": self.workload, "point": self.point,
                "repeat": self.repeat, "status": str(self.status), "reason": self.reason,
                **{k: p.get(k) for k in params}, **{k: m.get(k) for k in METRICS},
                "wall_s": round(self.wall_s, 3), "key": self.key}


def make_row(exp: Experiment, point: Point, repeat: int, status: Status, metrics: dict,
             reason: str = "", wall_s: float = 0.0) -> Row:
    return Row(exp.name, str(exp.workload), point.index, repeat, status, point.values,
               tuple((k, float(metrics[k])) for k in METRICS if k in metrics), reason,
               wall_s, point.key)


@dataclass
class ResultFile:
    """The CSV and JSON files of one sweep (``--out x.csv`` writes x.csv and x.json)."""

    path: Path
    experiment: Experiment
    rows: list[dict] = field(default_factory=list)

    @property
    def csv_path(self) -> Path:
        return self.path.with_suffix(".csv")

    @property
    def json_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def columns(self) -> list[str]:
        return [*HEAD, *self.experiment.params, *METRICS, *TAIL]

    def add(self, row: Row) -> None:
        self.rows.append(row.to_dict(self.experiment.params))
        self.rows.sort(key=lambda r: (int(r["point"]), int(r["repeat"])))
        self.write()

    def done(self) -> set[tuple[str, int]]:
        """(key, repeat) of the rows that need not run again (ok or skipped)."""
        return {(r["key"], int(r["repeat"])) for r in self.rows
                if r["status"] in (Status.OK.value, Status.SKIPPED.value)}

    def load_existing(self) -> None:
        """Rows of an earlier run of the same experiment (for ``--resume``)."""
        if not self.json_path.exists():
            return
        data = read_results(self.json_path)
        if data["experiment"].get("workload") != str(self.experiment.workload):
            raise ConfigError(f"--resume: {self.json_path} holds a "
                              f"{data['experiment'].get('workload')} sweep, not "
                              f"{self.experiment.workload}")
        self.rows = [r for r in data["rows"] if r["status"] != Status.FAILED.value]

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="raise")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.columns})
        _atomic(self.csv_path, buf.getvalue())
        _atomic(self.json_path, json.dumps({"experiment": self.experiment.to_dict(),
                                            "columns": self.columns, "rows": self.rows},
                                           indent=1, default=_clean))


def _clean(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else str(x)


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_results(path: str | Path) -> dict:
    """A results file (.json, or .csv with its .json beside it) as {experiment, rows}."""
    path = Path(path)
    jpath = path.with_suffix(".json")
    if not jpath.exists():
        raise ConfigError(f"results {path}: no such file (a sweep writes NAME.csv and "
                          "NAME.json; give either)")
    try:
        data = json.loads(jpath.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"results {jpath}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not {"experiment", "rows"} <= set(data):
        raise ConfigError(f"results {jpath}: not a sweep's results (expected keys "
                          "'experiment' and 'rows')")
    return data


def format_table(rows: list[dict], axes: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    """A fixed-width table: the swept axes, the repeat, the status, the metrics present."""
    cols = [*axes, "repeat", "status", *metrics, "wall_s"]
    body = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(b, widths)) for b in body]
    for r in rows:
        if r.get("reason"):
            lines.append(f"point {r['point']}: {r['status']}: {r['reason']}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)
