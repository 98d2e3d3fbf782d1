"""``sn40l bench allreduce``: AllReduce wall and modeled performance over emulated sockets."""

from __future__ import annotations

import argparse
import sys
from sn40l.output import emit_json

from sn40l.collectives.types import TransportKind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks of the P2P layer")
    verbs = p.add_subparsers(dest="verb", required=True)
    ar = verbs.add_parser("allreduce", help="AllReduce: wall time, algbw/busbw, modeled time")
    ar.add_argument("--sockets", type=int, default=8, help="sockets per node in the group")
    ar.add_argument("--nodes", type=int, default=1, help="emulated nodes (group spans them)")
    ar.add_argument("--sizes", default="4K,64K,1M,16M,64M", help="comma list: 4K,64K,1M,...")
    ar.add_argument("--iters", type=int, default=5, help="timed iterations per size")
    ar.add_argument("--profile", default="sn40l")
    ar.add_argument("--transport", default="auto", choices=[k.value for k in TransportKind],
                    help="shm: shared memory (one host); net: TCP between nodes, shared "
                         "memory inside a node (what hosts use); tcp: TCP between every two "
                         "sockets; auto: shm when the group is on one host, else net")
    ar.add_argument("--cluster", default=None,
                    help="a running cluster's name (default: the running cluster, if any)")
    ar.add_argument("--address", default=None,
                    help="Ray address (HOST:PORT) of a running cluster")
    ar.add_argument("--json", action="store_true", help="print JSON rows")
    ar.set_defaults(func=cmd_allreduce)


def cmd_allreduce(args: argparse.Namespace) -> int:
    from sn40l.cluster import Cluster, ensure_ray
    from sn40l.cluster.attach import announce, attach, place
    from sn40l.collectives.bench import format_table, parse_sizes, run
    from sn40l.errors import ConfigError
    from sn40l.hardware.profile import load_profile

    sizes = parse_sizes(args.sizes)
    if not 2 <= args.sockets <= 16:
        raise ConfigError(f"--sockets {args.sockets} is out of range; allowed 2 to 16")
    if args.iters < 1:
        raise ConfigError(f"--iters {args.iters} must be >= 1")
    running = attach(args.cluster, args.address)
    if running is not None:
        ranks = place(running, args.sockets * args.nodes, args.nodes,
                      load_profile(args.profile).name)
        cluster = running
        announce("bench", running)
    else:
        ensure_ray(None)
        spn = 16 if args.sockets > 8 else 8
        cluster = Cluster.start(nodes=args.nodes, sockets_per_node=spn, profile=args.profile,
                                name=f"bench-{args.nodes}x{spn}")
        announce("bench", cluster, private=True)
        ranks = [n * spn + s for n in range(args.nodes) for s in range(args.sockets)]
    try:
        progress = None if args.json else (
            lambda r: print(f"  {r['bytes']} B done", file=sys.stderr, flush=True))
        rows = run(cluster, ranks, sizes, args.iters, progress, args.transport)
    finally:
        if running is None:
            cluster.stop()
    if args.json:
        emit_json(rows, indent=2)
    else:
        print(f"AllReduce over {len(ranks)} sockets ({args.nodes} node(s), transport "
              f"{args.transport}); wall = this machine, "
              "modeled = SN40L virtual time; bound = (n-1)*S*(1/B_add + 1/B_copy) with numpy")
        print(format_table(rows))
    return 0
