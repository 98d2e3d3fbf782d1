"""``sn40l coe``: show a CoE registry's plan, serve prompts through it, benchmark it.

* ``sn40l coe show REGISTRY [--profile P] [--nodes N]``: validate, check capacity, print where
  every expert lives (nothing is started);
* ``sn40l coe run REGISTRY --prompt TEXT ... [--cluster NAME]``: load the CoE on a running
  cluster (``sn40l cluster up``) or on a temporary local one, route and serve the prompts;
* ``sn40l coe bench --experts 10,50,100,150 ...``: the modeled SN40L vs DGX comparison.
"""

from __future__ import annotations

import argparse
import sys

from sn40l.errors import ClusterError
from sn40l.output import emit_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coe", help="Composition-of-Experts runtime and benchmark")
    cmds = p.add_subparsers(dest="coe_command", required=True)

    s = cmds.add_parser("show", help="validate a registry and print its placement and capacity")
    s.add_argument("registry", help="CoE registry YAML (see deploy/coe/)")
    s.add_argument("--profile", default="sn40l", help="hardware profile (default sn40l)")
    s.add_argument("--nodes", type=int, default=1, help="nodes to place on (default 1)")
    s.add_argument("--json", action="store_true", help="print the plan as JSON")
    s.set_defaults(func=cmd_show)

    r = cmds.add_parser("run", help="load a CoE and serve prompts (router -> expert)")
    r.add_argument("registry", help="CoE registry YAML (see deploy/coe/)")
    r.add_argument("--prompt", action="append", required=True,
                   help="a prompt (repeat for a batch)")
    r.add_argument("--tokens", type=int, default=8, help="new tokens per prompt (default 8)")
    r.add_argument("--cluster", default=None,
                   help="a running cluster's name (sn40l cluster up); default: a temporary "
                        "local cluster of --nodes x 8 sockets")
    r.add_argument("--nodes", type=int, default=1, help="nodes of the temporary cluster")
    r.add_argument("--profile", default="sn40l", help="profile of the temporary cluster")
    r.add_argument("--group", action="store_true", help="group the batch's prompts by expert")
    r.add_argument("--prefetch", action="store_true",
                   help="prefetch the next expert while the current one runs")
    r.add_argument("--json", action="store_true", help="print results as JSON")
    r.set_defaults(func=cmd_run)

    b = cmds.add_parser("bench", help="modeled CoE latency on SN40L vs DGX baselines")
    b.add_argument("--experts", default="10,50,100,150", help="expert counts (comma-separated)")
    b.add_argument("--expert-model", default="llama2-7b", help="expert preset (default llama2-7b)")
    b.add_argument("--batch", default="1,8", help="batch sizes (comma-separated)")
    b.add_argument("--tokens", default="20,200", help="decode tokens (comma-separated)")
    b.add_argument("--profiles", default="sn40l,dgx-h100,dgx-a100",
                   help="hardware profiles (comma-separated)")
    b.add_argument("--modes", default="sequential,group+prefetch",
                   help="serving modes: sequential, group, prefetch, group+prefetch")
    b.add_argument("--rounds", type=int, default=4,
                   help="measured batches per configuration (default 4)")
    b.add_argument("--warmup", type=int, default=8,
                   help="batches served first to warm the cache, not measured (default 8)")
    b.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt (default 64)")
    b.add_argument("--router", default="llama2-7b",
                   help="router backbone preset, or 'none' for the centroid head only")
    b.add_argument("--dgx-nodes", type=int, default=1,
                   help="nodes of each DGX baseline (default 1); a CoE that does not fit them "
                   "is reported as OOM with its numbers, never grown")
    b.add_argument("--plot", default=None, help="write latency and breakdown plots (PNG)")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.add_argument("--address", default=None, help="Ray address (default: embedded local Ray)")
    b.set_defaults(func=cmd_bench)


def cmd_show(args: argparse.Namespace) -> int:
    from sn40l.coe.placement import footprint, plan
    from sn40l.coe.registry import load_registry
    from sn40l.coe.sizing import coe_needs
    from sn40l.hardware.profile import load_profile
    from sn40l.hardware.units import format_bytes

    cfg = load_registry(args.registry)
    profile = load_profile(args.profile)
    needs, router_bytes = coe_needs(cfg, profile.name)
    p = plan(needs, profile, args.nodes, cfg.tp, router_bytes, cfg.placement, cfg.cache.pin,
             what=f"CoE {cfg.name!r}")
    if args.json:
        emit_json({"config": cfg.to_dict(), "home": str(p.home),
                          "homes": {k: list(v) for k, v in p.homes.items()},
                          "groups": [{"gid": g.gid, "node": g.node, "ranks": list(g.ranks)}
                                     for g in p.groups],
                          "cache_budget": p.cache_budget, "router_bytes": router_bytes,
                          "footprint": footprint(profile, needs[0], cfg.tp, len(needs),
                                                 router_bytes)}, indent=2)
        return 0
    print(f"CoE {cfg.name}: {len(cfg.experts)} experts, TP{cfg.tp}, weights {cfg.weights}, "
          f"placement {cfg.placement}, on {args.nodes} node(s) of {profile.name}")
    print(f"router: {format_bytes(router_bytes)} per socket in HBM of groups "
          f"{list(p.router_gids)}")
    for g in p.groups:
        names = p.experts_on(g.gid)
        print(f"group {g.gid} (node {g.node}, ranks {g.ranks[0]}-{g.ranks[-1]}): "
              f"{len(names)} experts, {p.home} {format_bytes(p.home_used[g.gid])} of "
              f"{format_bytes(p.home_capacity)} per socket, HBM cache "
              f"{format_bytes(p.cache_budget[g.gid])} per socket")
    width = max(len(e.name) for e in cfg.experts)
    for e, need in list(zip(cfg.experts, needs))[:40]:
        print(f"  {e.name:<{width}}  {format_bytes(need.per_socket)}/socket  groups "
              f"{list(p.homes[e.name])}  {e.domain[:50]}")
    if len(cfg.experts) > 40:
        print(f"  ... {len(cfg.experts) - 40} more")
    return 0


def _cluster_for(args: argparse.Namespace):
    """(cluster, temporary?) for ``coe run``."""
    from sn40l.cluster.cluster import Cluster, ensure_ray

    if args.cluster:
        from sn40l.cluster.record import read_record

        record = read_record(args.cluster)
        if record is None:
            raise ClusterError(f"no cluster named {args.cluster!r} is running; start one with "
                               "'sn40l cluster up' or leave out --cluster")
        ensure_ray(record["address"], auth=record.get("auth"))
        return Cluster.connect(args.cluster), False
    ensure_ray(None)
    return Cluster.start(nodes=args.nodes, profile=args.profile, name="coe-run"), True


def cmd_run(args: argparse.Namespace) -> int:
    from sn40l.coe.registry import load_registry
    from sn40l.coe.runtime import CoERuntime, ServeOptions
    from sn40l.hardware.units import format_ns

    cfg = load_registry(args.registry)
    cluster, temporary = _cluster_for(args)
    rt = CoERuntime(cluster, cfg)
    try:
        info = rt.load()
        res = rt.serve(args.prompt, args.tokens, ServeOptions(args.group, args.prefetch))
        if args.json:
            emit_json({"load": info, "latency_ns": res.latency_ns,
                              "router_ns": res.router_ns, "switch_ns": res.switch_ns,
                              "expert_ns": res.expert_ns, "hit_rate": res.hit_rate,
                              "requests": [vars(r) for r in res.requests],
                              "occupancy": rt.occupancy()}, indent=2, default=str)
            return 0
        print(f"loaded {info['experts']} experts ({info['home']} homes) on {info['groups']} "
              f"group(s) in {info['wall_s']:.2f} s wall")
        for prompt, r in zip(args.prompt, res.requests):
            out = "" if r.tokens is None else f" -> {r.tokens}"
            print(f"[{r.index}] {prompt[:40]!r}: expert {r.expert} on node {r.node} group "
                  f"{r.gid} ({'hit' if r.hit else 'miss'}; switch {format_ns(r.switch_ns)}, "
                  f"run {format_ns(r.expert_ns)}){out}")
        print(f"batch: {format_ns(res.latency_ns)} modeled (router {format_ns(res.router_ns)}, "
              f"switch {format_ns(res.switch_ns)}, expert {format_ns(res.expert_ns)}); "
              f"HBM hit rate {res.hit_rate:.0%}; wall {res.wall_s:.2f} s")
        for row in rt.occupancy():
            print(f"group {row['group']} (node {row['node']}): resident (LRU first) "
                  f"{row['resident']}")
        return 0
    finally:
        rt.unload()
        if temporary:
            cluster.stop()


def cmd_bench(args: argparse.Namespace) -> int:
    from sn40l.coe.bench import BenchConfig, format_table, parse_ints, plot, run_bench

    cfg = BenchConfig(
        experts=parse_ints(args.experts, "--experts"), expert_model=args.expert_model,
        batch=parse_ints(args.batch, "--batch"), tokens=parse_ints(args.tokens, "--tokens"),
        profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        rounds=args.rounds, warmup=args.warmup, prompt_len=args.prompt_len,
        router=None if args.router.lower() == "none" else args.router,
        dgx_nodes=args.dgx_nodes)
    cfg.check()
    if args.plot:  # fail before the sweep, not after it, when matplotlib is missing
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            from sn40l.errors import ConfigError

            raise ConfigError("--plot needs matplotlib (a dependency of sn40l): pip install 'matplotlib>=3.7'")
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    result = run_bench(cfg, progress=progress, address=args.address)
    if args.plot:
        plot(result, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        emit_json(result, indent=2)
    else:
        print(format_table(result))
    return 0
