"""Plots of sweep results (matplotlib, the ``plot`` extra), each a PNG a paper can use.

* ``strong_scaling``: a metric vs sockets for a fixed problem, with the ideal line (the
  smallest socket count's value scaled by the socket ratio) and the parallel efficiency
  (measured / ideal) in a panel from 0 to 1;
* ``weak_scaling``: aggregate tokens/s vs sockets where the batch grows with the sockets, and
  its efficiency per socket;
* ``busbw``: collective bus bandwidth vs message size, one series per socket count;
* ``breakdown``: the modeled time per output token split into launch / HBM / compute /
  collectives / switch, stacked from zero.

Every axis is labelled with its unit, legends sit outside the axes (they never hide a series),
series differ by marker and line style (so coinciding series stay visible), and axes where
ratios are read start at zero. :func:`figures` returns the figures (for inspection),
:func:`plot_results` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sn40l.plotstyle import bytes_tick, legend_outside, log2_axes, pyplot, series_style

SPLIT = (("time_launch_ms", "launch", "tab:gray"), ("time_hbm_ms", "HBM streaming", "tab:blue"),
         ("time_compute_ms", "compute", "tab:green"),
         ("time_collective_ms", "collectives (exposed)", "tab:orange"),
         ("time_switch_ms", "expert switch", "tab:red"))
LABELS = {"tokens_per_s_per_user": "output tokens/s per user (modeled)",
          "tokens_per_s": "output tokens/s, all users (modeled)",
          "ttft_ms": "time to first token (ms, modeled)",
          "tpot_ms": "time per output token (ms, modeled)",
          "latency_ms": "latency (ms, modeled)",
          "busbw_GBps": "bus bandwidth (GB/s, modeled)"}


def _order(v: Any) -> tuple:
    """Numbers before names, numbers by value (so 16 sorts after 2)."""
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok"]


def _groups(rows: list[dict], keys: list[str]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _mean_by(rows: list[dict], x: str, y: str) -> list[tuple[float, float]]:
    acc: dict[Any, list[float]] = {}
    for r in rows:
        if r.get(y) is not None and r.get(x) is not None:
            acc.setdefault(r[x], []).append(float(r[y]))
    return sorted((float(k), sum(v) / len(v)) for k, v in acc.items())


def _label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "measured"


def figures(experiment: dict, rows: list[dict]) -> dict[str, Any]:
    """Name -> matplotlib figure of every plot that applies to these rows."""
    plt = pyplot()
    ok = _ok(rows)
    swept = [k for k, v in experiment.get("axes", {}).items() if isinstance(v, list)
             and len(v) > 1]
    workload = experiment.get("workload")
    out: dict[str, Any] = {}
    if not ok:
        return out
    if workload == "model" and "tp" in swept:
        others = [k for k in swept if k not in ("tp", "batch")]
        out["strong_scaling"] = _strong(plt, ok, others + (["batch"] if "batch" in swept
                                                           else []))
        if "batch" in swept:
            weak = _weak(plt, ok, others)
            if weak is not None:
                out["weak_scaling"] = weak
    if workload == "collective" and "size" in swept:
        out["busbw"] = _busbw(plt, ok, [k for k in swept if k != "size"])
    if workload in ("model", "coe"):
        out["breakdown"] = _breakdown(plt, ok, swept, workload)
    return out


def plot_results(experiment: dict, rows: list[dict], out_dir: str | Path) -> list[Path]:
    """Write every applicable plot as ``DIR/<name>.png``; returns the paths."""
    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures(experiment, rows).items():
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _strong(plt, rows: list[dict], series_keys: list[str]):
    fig, (ax, eff) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (vals, grp) in enumerate(_groups(rows, series_keys).items()):
        pts = _mean_by(grp, "tp", "tokens_per_s")
        if not pts:
            continue
        label = _label(series_keys, vals)
        style = series_style(i)
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
        x0, y0 = pts[0]
        ideal = [y0 * x / x0 for x, _ in pts]
        ax.plot([p[0] for p in pts], ideal, color=line.get_color(), linestyle=":",
                linewidth=1, label=f"ideal ({label})")
        eff.plot([p[0] for p in pts], [y / i_ for (_, y), i_ in zip(pts, ideal)],
                 color=line.get_color(), label=label, **style)
    log2_axes(ax, "sockets (TP)", LABELS["tokens_per_s"], "strong scaling (fixed problem)")
    log2_axes(eff, "sockets (TP)", "parallel efficiency (measured / ideal)", top=1.1)
    eff.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    legend_outside(eff)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _weak(plt, rows: list[dict], series_keys: list[str]):
    """Rows whose batch per socket is the same at several socket counts."""
    by_ratio = _groups([dict(r, _per=r["batch"] / r["tp"]) for r in rows], ["_per"])
    usable = {k: g for k, g in by_ratio.items() if len({r["tp"] for r in g}) > 1}
    if not usable:
        return None
    fig, (ax, eff) = plt.subplots(1, 2, figsize=(13, 5))
    i = 0
    for (per,), grp in sorted(usable.items()):
        for vals, sub in _groups(grp, series_keys).items():
            pts = _mean_by(sub, "tp", "tokens_per_s")
            if len(pts) < 2:
                continue
            label = _label(series_keys + ["batch/socket"], vals + (per,))
            style = series_style(i)
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
            x0, y0 = pts[0]
            eff.plot([p[0] for p in pts], [(y / x) / (y0 / x0) for x, y in pts],
                     color=line.get_color(), label=label, **style)
            i += 1
    xlabel = "sockets (TP), batch grows with them"
    log2_axes(ax, xlabel, LABELS["tokens_per_s"], "weak scaling (fixed work per socket)")
    log2_axes(eff, xlabel, "weak-scaling efficiency (tokens/s per socket, relative)", top=1.1)
    legend_outside(eff)
    fig.tight_layout()
    return fig


def _busbw(plt, rows: list[dict], series_keys: list[str]):
    keys = sorted(set(series_keys) | {"tp"}, key=lambda k: (k != "tp", k))
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, (vals, grp) in enumerate(sorted(_groups(rows, keys).items(),
                                           key=lambda kv: tuple(_order(v) for v in kv[0]))):
        pts = _mean_by(grp, "size", "busbw_GBps")
        ax.plot([p[0] for p in pts], [p[1] for p in pts],
                label=_label(["sockets" if k == "tp" else k for k in keys], vals),
                **series_style(i))
    log2_axes(ax, "message size per socket (bytes)", LABELS["busbw_GBps"],
              "collective bus bandwidth vs size", ticks=bytes_tick)
    legend_outside(ax)
    fig.tight_layout()
    return fig


def _breakdown(plt, rows: list[dict], swept: list[str], workload: str):
    import numpy as np

    parts = SPLIT if workload == "model" else (
        ("router_ms", "router", "tab:gray"), ("time_switch_ms", "expert switch", "tab:red"),
        ("expert_ms", "expert run", "tab:blue"))
    groups = _groups(rows, swept)
    labels = ["\n".join(f"{k}={v}" for k, v in zip(swept, vals)) or "point" for vals in groups]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 3), 5))
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for key, name, color in parts:
        vals = np.array([np.mean([r.get(key) or 0.0 for r in g]) for g in groups.values()])
        if not vals.any():
            continue
        ax.bar(x, vals, bottom=bottom, color=color, label=name, edgecolor="white")
        bottom += vals
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("modeled ms per output token" if workload == "model"
                  else "modeled ms per batch")
    ax.set_ylim(bottom=0)
    ax.set_title("where the modeled time goes")
    legend_outside(ax)
    fig.tight_layout()
    return fig
