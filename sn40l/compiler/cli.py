"""``sn40l compile`` and ``sn40l inspect``."""

from __future__ import annotations

import argparse
import collections

from sn40l.compiler.models import PRESETS
from sn40l.hardware.units import format_bytes, format_ns


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="compile a model preset to a .pef artifact")
    c.add_argument("model", help=f"preset: {', '.join(PRESETS)}")
    c.add_argument("--tp", type=int, default=8, help="tensor-parallel sockets")
    c.add_argument("--nodes", type=int, default=1, help="nodes the TP group spans")
    c.add_argument("--mode", default="decode", help="decode or prefill")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--seq-len", type=int, default=4096, help="context length")
    c.add_argument("--fusion", default="fused", help="fused or unfused")
    c.add_argument("--orchestration", default="hardware", help="hardware or software")
    c.add_argument("--profile", default="sn40l")
    c.add_argument("-o", "--output", required=True, help="path of the .pef to write")
    c.set_defaults(func=cmd_compile)
    i = sub.add_parser("inspect", help="print a .pef's kernels, bytes per tier, estimated time")
    i.add_argument("pef")
    i.set_defaults(func=cmd_inspect)


def cmd_compile(args: argparse.Namespace) -> int:
    from sn40l.compiler import CompileConfig, compile_model

    cfg = CompileConfig(args.model, args.tp, args.nodes, args.mode, args.batch, args.seq_len,
                        args.fusion, args.orchestration, args.profile)
    art = compile_model(cfg)
    art.save(args.output)
    est = art.plan["estimate"]
    print(f"compiled {args.model} TP{args.tp} {args.mode} {args.fusion}/{args.orchestration} -> "
          f"{args.output}: {est['kernels']} kernels, HBM {format_bytes(art.hbm_bytes_per_socket)}"
          f" + DDR {format_bytes(art.ddr_bytes_per_socket)} per socket, estimated step "
          f"{format_ns(est['step_ns'])}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from sn40l.compiler.pef import Artifact

    art = Artifact.load(args.pef)
    p = art.plan
    cfg, model, est = p["config"], p["model"], p["estimate"]
    print(f"{args.pef}: {model['name']} ({model['layers']} layers, hidden {model['hidden']}, "
          f"{model['heads']} heads / {model['kv_heads']} KV heads, vocab {model['vocab']})")
    print(f"TP {cfg['tp']} over {cfg['nodes']} node(s), {cfg['mode']}, batch {cfg['batch']}, "
          f"seq {cfg['seq_len']}, {cfg['fusion']}, {cfg['orchestration']} orchestration, "
          f"profile {p['profile']}")
    print(f"per socket: heads {p['shards']['heads']}, KV heads {p['shards']['kv_heads']} "
          f"(replicated x{p['shards']['kv_replication']}), MLP {p['shards']['intermediate']}, "
          f"vocab {p['shards']['vocab']} (padded to {p['shards']['vocab_padded']})")
    kinds = collections.Counter(s["kind"] for s in p["memory"]["symbols"])
    for tier in ("hbm", "ddr"):
        total = sum(s["bytes"] for s in p["memory"]["symbols"] if s["tier"] == tier)
        print(f"{tier.upper()}: {format_bytes(total)} per socket")
    print(f"symbols: {dict(kinds)}")
    names: collections.Counter = collections.Counter()
    for k in p["kernels"]:  # device kernels: a description may stand for several
        names[k["name"].split(".")[0] if k["name"].split(".")[-1].isdigit()
              else k["name"].split(".")[-1]] += k.get("launches", 1)
    print(f"kernels per step: {est['kernels']} ({', '.join(f'{n} x{c}' for n, c in names.items())})")
    step = est["step_ns"]
    print(f"estimated step {format_ns(step)} -> {1e9 / step:.1f} steps/s; HBM streamed "
          f"{format_bytes(est['hbm_bytes_per_step'])} per step (cost model, not a run)")
    return 0
