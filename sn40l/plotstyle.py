"""Shared looks of sn40l's plots (matplotlib, the optional ``plot`` extra): series that stay
visible when they coincide (distinct markers, hollow and filled, line styles), legends outside
the axes, log2 axes with plain tick labels, y axes from zero. A leaf module: any command that
plots imports it, and matplotlib only when a plot is drawn.
"""

from __future__ import annotations

from sn40l.errors import ConfigError

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLES = ("-", "--", "-.", ":")


def pyplot():
    """matplotlib's pyplot on the Agg backend, or a ConfigError naming the extra."""
    try:
        import matplotlib  # a dependency of sn40l; missing only from a broken install
    except ImportError:
        raise ConfigError("plots need matplotlib, a dependency of sn40l that is not "
                          "installed here: pip install 'matplotlib>=3.7'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series_style(i: int) -> dict:
    """Marker and line style of series ``i``: distinct, so overlapping series stay visible."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": STYLES[(i // 2) % len(STYLES)],
            "markersize": 8 - 1.5 * (i % 3), "markerfacecolor": "none" if i % 2 else None,
            "alpha": 0.9}


def legend_outside(ax) -> None:
    """A legend right of the axes, so it covers no data."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def bytes_tick(x: float, _pos=None) -> str:
    """4096 -> '4K' (binary prefixes, as nccl-tests print sizes)."""
    for unit, m in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if x >= m:
            return f"{x / m:g}{unit}"
    return f"{x:g}"


def log2_axes(ax, xlabel: str, ylabel: str, title: str = "", top: float | None = None,
              ticks=lambda x, _pos=None: f"{x:g}") -> None:
    """A log2 x axis, a y axis from zero (ratios are read), labels with units, a grid."""
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(ticks))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, top) if top is not None else ax.set_ylim(bottom=0)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
