"""``sn40l coe bench``: the same CoE workload on SN40L and the DGX baselines, in modeled time.

For each profile and expert count the benchmark sizes the CoE on numbers first: SN40L gets as
many nodes as it needs (experts in socket DDR); a DGX baseline runs on exactly ``dgx_nodes``
nodes (default 1, experts in node host memory) and a CoE that does not fit them gives an OOM row
with the need and the capacity, never a silently larger DGX. It then brings up the nodes (one
set of socket actors for the sweep, reset to fresh sockets of each profile while the shape
allows: :meth:`sn40l.cluster.Cluster.reprofile`), loads the CoE with
phantom weights, and serves ``rounds`` batches per
(batch size, decode tokens, serving mode) from a cold cache (only the router resident). Every
router and expert run executes the compiled artifacts on the socket actors (phantom steps of a
shape already run replay its modeled time, see :class:`sn40l.socket.engine.TileEngine`).

Workload (deterministic, seeded): each prompt asks expert *i* with probability proportional to
1/(i+1) (Zipf, s=1), and is ``prompt_len`` words drawn from that expert's domain text, so the
router sends it there. ``warmup`` batches fill the cache first and are not measured; the figures
are means over the ``rounds`` measured batches. HIT is the share of measured requests whose expert
was HBM-resident when the request reached its group (a prefetched expert counts as a miss; its
copy shows in SWITCH only where it was not hidden). Latency per batch is modeled from the
profiles only; wall time is reported apart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from sn40l.coe.placement import footprint, home_tier, plan
from sn40l.coe.registry import synthetic
from sn40l.coe.sizing import coe_needs
from sn40l.coe.types import Home
from sn40l.errors import CapacityError, ConfigError
from sn40l.hardware.profile import load_profile

MODES = {"sequential": (False, False), "group": (True, False), "prefetch": (False, True),
         "group+prefetch": (True, True)}


@dataclass(frozen=True)
class BenchConfig:
    """What to sweep. Every field has a default matching the issue's command line."""

    experts: tuple[int, ...] = (10, 50, 100, 150)
    expert_model: str = "llama2-7b"
    batch: tuple[int, ...] = (1, 8)
    tokens: tuple[int, ...] = (20, 200)
    profiles: tuple[str, ...] = ("sn40l", "dgx-h100", "dgx-a100")
    modes: tuple[str, ...] = ("sequential", "group+prefetch")
    rounds: int = 4          # measured batches per configuration
    warmup: int = 8          # batches served first (cache warm-up), not measured
    prompt_len: int = 64     # tokens per prompt
    tp: int = 8
    seed: int = 0
    router: str | None = "llama2-7b"  # the router's backbone preset (None: head only)
    dgx_nodes: int = 1       # nodes of a DGX baseline (host-memory homes); never grown

    def check(self) -> None:
        for m in self.modes:
            if m not in MODES:
                raise ConfigError(f"--modes: unknown mode {m!r}; modes: {', '.join(MODES)}")
        for name, values in (("--experts", self.experts), ("--batch", self.batch),
                             ("--tokens", self.tokens)):
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"{name} needs whole numbers >= 1, got {list(values)}")
        if self.dgx_nodes < 1:
            raise ConfigError(f"--dgx-nodes must be >= 1, got {self.dgx_nodes}")
        if self.rounds < 1 or self.warmup < 0:
            raise ConfigError(f"--rounds must be >= 1 and --warmup >= 0, got {self.rounds} "
                              f"and {self.warmup}")
        for p in self.profiles:
            load_profile(p)


def workload(n_experts: int, batch: int, rounds: int, prompt_len: int, seed: int
             ) -> list[list[tuple[int, str]]]:
    """``rounds`` batches of (intended expert index, prompt text)."""
    rng = np.random.default_rng([seed, n_experts, batch])
    p = 1.0 / np.arange(1, n_experts + 1)
    p /= p.sum()
    out = []
    for _ in range(rounds):
        picks = rng.choice(n_experts, size=batch, p=p)
        out.append([(int(i), " ".join(f"topic{i:03d}{'abc'[j % 3]}" for j in range(prompt_len)))
                    for i in picks])
    return out


def split_workload(n_experts: int, batch: int, warmup: int, rounds: int, prompt_len: int,
                   seed: int) -> tuple[list, list]:
    """(warm-up batches, measured batches) of :func:`workload`."""
    batches = workload(n_experts, batch, warmup + rounds, prompt_len, seed)
    return batches[:warmup], batches[warmup:]


def measure(rt, warm: list, batches: list, tokens: int, mode: str) -> dict:
    """Serve ``warm`` then ``batches`` (of :func:`workload`) with ``tokens`` new tokens each
    from the cache state right after load; the measured batches' means and counters."""
    from sn40l.coe.runtime import ServeOptions

    rt.reset()
    opts = ServeOptions(*MODES[mode])
    w0 = time.perf_counter()
    for batch in warm:
        rt.serve([p for _, p in batch], tokens, opts)
    rt.reset_metrics()
    res = [rt.serve([p for _, p in batch], tokens, opts) for batch in batches]
    misrouted = sum(r.expert != f"expert{i:03d}" for batch, br in zip(batches, res)
                    for (i, _), r in zip(batch, br.requests))
    k = len(res)
    return {"latency_ms": sum(r.latency_ns for r in res) / k / 1e6,
            "router_ms": sum(r.router_ns for r in res) / k / 1e6,
            "switch_ms": sum(r.switch_ns for r in res) / k / 1e6,
            "expert_ms": sum(r.expert_ns for r in res) / k / 1e6,
            "hit_rate": rt.metrics.hit_rate, "switches": rt.metrics.switches,
            "copied_gb": rt.metrics.copied_in / 1e9, "misrouted": misrouted,
            "wall_s": time.perf_counter() - w0}


def nodes_needed(config, profile, max_nodes: int = 64) -> int:
    """Fewest nodes of ``profile`` that hold ``config`` (capacity check on numbers only)."""
    needs, router_bytes = coe_needs(config, profile.name)
    for n in range(1, max_nodes + 1):
        try:
            plan(needs, profile, n, config.tp, router_bytes, config.placement,
                 config.cache.pin)
            return n
        except CapacityError:
            continue
    raise CapacityError(f"CoE {config.name!r} does not fit {max_nodes} nodes of {profile.name}")


def dgx_refusal(config, profile, nodes: int) -> str | None:
    """Why ``config`` does not fit ``nodes`` nodes of a host-memory profile (the capacity
    check's message with its numbers), or None when it fits."""
    needs, router_bytes = coe_needs(config, profile.name)
    try:
        plan(needs, profile, nodes, config.tp, router_bytes, config.placement, config.cache.pin)
    except CapacityError as exc:
        return str(exc)
    return None


def _oom_rows(prof_name: str, n: int, nodes: int, cfg: BenchConfig, why: str) -> list[dict]:
    return [{"profile": prof_name, "experts": n, "nodes": nodes, "batch": b, "tokens": t,
             "mode": mode, "oom": why, "latency_ms": None, "router_ms": None, "switch_ms": None,
             "expert_ms": None, "hit_rate": None, "switches": 0, "copied_gb": 0.0,
             "misrouted": 0, "wall_s": 0.0}
            for b in cfg.batch for t in cfg.tokens for mode in cfg.modes]


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] = print,
              address: str | None = None) -> dict:
    """Run the sweep on fresh emulated sockets; returns {"rows", "footprint", "wall_s"}."""
    from sn40l.cluster import ensure_ray

    cfg.check()
    ensure_ray(address)
    t_all = time.perf_counter()
    rows, feet = [], []
    total = (len(cfg.profiles) * len(cfg.experts) * len(cfg.batch) * len(cfg.tokens)
             * len(cfg.modes))
    done = 0
    held: list = []  # the sweep's cluster once started, reset to each profile in turn
    try:
        for prof_name in cfg.profiles:
            rows_p, feet_p, done = _bench_profile(cfg, prof_name, held, done, total, progress)
            rows += rows_p
            feet += feet_p
    finally:
        for cluster in held:
            cluster.stop()
    return {"config": asdict(cfg), "rows": rows, "footprint": feet,
            "wall_s": time.perf_counter() - t_all}


def _cluster_for(held: list, profile, nodes: int):
    """A cluster of ``nodes`` nodes of ``profile`` with fresh sockets: the one in ``held``
    reset to the profile when its shape is the one :meth:`Cluster.start` would give (a
    bring-up costs seconds of wall time, a reset none), else a new one, kept in ``held``."""
    from sn40l.cluster import Cluster

    if held and (held[0].spec.nodes, held[0].spec.sockets_per_node) == (
            nodes, profile.sockets_per_node):
        held[0].reprofile(profile)
        return held[0]
    while held:
        held.pop().stop()
    held.append(Cluster.start(nodes=nodes, profile=profile, name="coebench"))
    return held[0]


def _bench_profile(cfg: BenchConfig, prof_name: str, held: list, done: int, total: int,
                   progress: Callable[[str], None]) -> tuple[list, list, int]:
    """The sweep's rows and footprint for one profile, and the rows done so far."""
    from sn40l.coe.runtime import CoERuntime

    rows, feet = [], []
    profile = load_profile(prof_name)
    coes = {n: synthetic(n, cfg.expert_model, cfg.tp,
                         router={"preset": cfg.router} if cfg.router else None,
                         serving={"max_batch": max(cfg.batch),
                                  "max_context": cfg.prompt_len + max(cfg.tokens)})
            for n in cfg.experts}
    dgx = home_tier(profile) is Home.HOST  # a DGX baseline: a fixed node count
    need = {n: cfg.dgx_nodes if dgx else nodes_needed(coe, profile)
            for n, coe in coes.items()}
    # the profile's cluster, as large as the largest CoE needs, set up on first use;
    # smaller CoEs use its first nodes (a node more costs nothing modeled)
    cluster = None
    for n, coe in coes.items():
        nodes = need[n]
        needs, router_bytes = coe_needs(coe, profile.name)
        if n == max(cfg.experts):
            feet.append(footprint(profile, needs[0], cfg.tp, n, router_bytes))
        why = dgx_refusal(coe, profile, nodes) if dgx else None
        if why is not None:
            oom = _oom_rows(prof_name, n, nodes, cfg, why)
            rows += oom
            done += len(oom)
            progress(f"[{prof_name}] {n} x {cfg.expert_model}: OOM on {nodes} "
                     f"node(s): {why}")
            continue
        if cluster is None:
            cluster = _cluster_for(held, profile, max(need.values()))
        rt = CoERuntime(cluster, coe, nodes=list(range(nodes)))
        info = rt.load()
        progress(f"[{prof_name}] {n} x {cfg.expert_model} on {nodes} node(s): loaded "
                 f"in {info['wall_s']:.1f} s wall")
        try:
            for b in cfg.batch:
                warm, batches = split_workload(n, b, cfg.warmup, cfg.rounds,
                                               cfg.prompt_len, cfg.seed)
                for t in cfg.tokens:
                    for mode in cfg.modes:
                        rows.append({"profile": prof_name, "experts": n,
                                     "nodes": nodes, "batch": b, "tokens": t,
                                     "mode": mode,
                                     **measure(rt, warm, batches, t, mode)})
                        done += 1
                        progress(f"  [{done}/{total}] {prof_name} E={n} B={b} T={t} "
                                 f"{mode}: {rows[-1]['latency_ms']:.1f} ms/batch "
                                 f"(modeled), hit {rows[-1]['hit_rate']:.0%}")
        finally:
            rt.unload()
    return rows, feet, done


def format_table(result: dict) -> str:
    """The benchmark as text: latency split per configuration, then the footprint report."""
    head = ("PROFILE", "EXPERTS", "NODES", "BS", "TOKENS", "MODE", "LATENCY ms", "ROUTER ms",
            "SWITCH ms", "EXPERT ms", "HIT", "WALL s")
    lines = []
    body = [(r["profile"], str(r["experts"]), str(r["nodes"]), str(r["batch"]), str(r["tokens"]),
             r["mode"], f"{r['latency_ms']:.1f}", f"{r['router_ms']:.2f}",
             f"{r['switch_ms']:.1f}", f"{r['expert_ms']:.1f}", f"{r['hit_rate']:.0%}",
             f"{r['wall_s']:.2f}") if r.get("oom") is None else
            (r["profile"], str(r["experts"]), str(r["nodes"]), str(r["batch"]), str(r["tokens"]),
             r["mode"], "OOM", "-", "-", "-", "-", "-") for r in result["rows"]]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    for row in [head] + body:
        lines.append("  ".join(c.rjust(w) if i > 5 or i in (1, 2, 3, 4) else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    ooms = {(r["profile"], r["experts"]): r["oom"] for r in result["rows"] if r.get("oom")}
    for (prof, n), why in ooms.items():
        lines.append(f"OOM {prof} E={n}: {why}")
    lines.append("")
    lines.append("FOOTPRINT (TP8; expert = weights + KV cache per TP group)")
    fh = ("PROFILE", "HOME", "EXPERT GB", "PER NODE (home)", "PER NODE (HBM)",
          "PER NODE (HBM+home)", "NODES FOR N (home)", "NODES FOR N (HBM)")
    fb = [(f["profile"], f["home"], f"{f['expert_bytes'] / 1e9:.1f}",
           str(f["experts_per_node_home"]), str(f["experts_per_node_hbm"]),
           str(f.get("experts_per_node_hbm_and_home", "-")),
           str(f["nodes_needed_home"]), str(f["nodes_needed_hbm"])) for f in result["footprint"]]
    fw = [max(len(x[i]) for x in [fh] + fb) for i in range(len(fh))]
    for row in [fh] + fb:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, fw)))
    n = max(result["config"]["experts"])
    cfg = result["config"]
    lines.append(f"(N = {n} experts; means over {cfg['rounds']} measured batches after "
                 f"{cfg['warmup']} warm-up batches; modeled times from the profiles; wall time "
                 f"apart: {result['wall_s']:.1f} s)")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    """Latency vs experts per profile and mode, and the router/switch/expert split (PNG).

    Every (profile, mode) is its own series with its own marker and line style, so series that
    coincide (a hit rate of 100% gives equal latencies) stay visible; the legend sits outside
    the axes; latency and split axes start at zero, where their ratios are read.
    """
    from sn40l.plotstyle import legend_outside, pyplot, series_style

    plt = pyplot()
    rows = result["rows"]
    b, t = max(r["batch"] for r in rows), min(r["tokens"] for r in rows)
    sel = [r for r in rows if r["batch"] == b and r["tokens"] == t]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    sel = [r for r in sel if r.get("oom") is None]
    i = 0
    for prof in dict.fromkeys(r["profile"] for r in sel):
        for mode in dict.fromkeys(r["mode"] for r in sel):
            pts = sorted((r for r in sel if r["profile"] == prof and r["mode"] == mode),
                         key=lambda r: r["experts"])
            ax1.plot([r["experts"] for r in pts], [r["latency_ms"] for r in pts],
                     label=f"{prof} {mode}", **series_style(i))
            i += 1
            for r in pts:
                if r["nodes"] > 1:
                    ax1.annotate(f"{r['nodes']} nodes", (r["experts"], r["latency_ms"]),
                                 fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax1.set_xlabel("experts in the CoE")
    ax1.set_ylabel(f"modeled latency per batch (ms), BS={b}, {t} new tokens")
    ax1.set_ylim(0, 1.15 * max(r["latency_ms"] for r in sel))  # room for the node labels
    ax1.grid(alpha=0.3)
    legend_outside(ax1)
    n = max(r["experts"] for r in sel)
    bars = [r for r in sel if r["experts"] == n]
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for key, color in (("router_ms", "tab:gray"), ("switch_ms", "tab:red"),
                       ("expert_ms", "tab:blue")):
        vals = np.array([r[key] for r in bars])
        ax2.bar(x, vals, bottom=bottom, color=color, label=key.replace("_ms", ""),
                edgecolor="white")
        bottom += vals
    ax2.set_xticks(x, [f"{r['profile']}\n{r['mode']}" for r in bars], fontsize=7)
    ax2.set_ylabel("modeled ms per batch (summed over groups)")
    ax2.set_ylim(bottom=0)
    ax2.set_title(f"{n} experts: router / switch / expert")
    legend_outside(ax2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} = {text!r} must be comma-separated whole numbers, "
                          "e.g. 10,50,100") from None
    if not vals:
        raise ConfigError(f"{what} is empty; give comma-separated whole numbers")
    return vals

