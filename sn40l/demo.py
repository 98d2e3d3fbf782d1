"""``sn40l demo``: bring up 2 nodes x 8 sockets on an embedded Ray and show the emulator at work.

Sections (each prints what it did, in modeled time, with wall time apart):

1. bring-up of 16 socket actors;
2. a phantom Llama2-7B-sized expert (13.5 GB BF16) placed in DDR, sharded over node 0's 8
   sockets, then activated into HBM on all 8 in parallel: modeled copy time and node bandwidth;
3. a materialized tensor round-tripped DDR -> HBM -> SRAM -> HBM -> DDR and checked intact;
4. AllReduce peer to peer between the socket actors (TP8 on one node, TP16 over two), checked
   against numpy;
5. compiled Llama models on the tile engine: a tiny materialized one at TP1 and TP8 (same
   tokens), and a phantom Llama 3.1 8B at TP16 over two nodes;
6. a Composition of Experts: tiny materialized experts checked against each expert alone, then
   a phantom Samba-CoE of 150 Llama-2-7B experts;

then a summary table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sn40l.hardware.units import format_bandwidth, format_bytes, format_ns
from sn40l.output import emit_json

# Llama-2-7B shapes (Touvron et al. 2023; HF config): 32 layers, hidden 4096, MLP 11008,
# vocab 32000, untied embeddings -> 6,738,415,616 parameters, 13.48 GB in BF16.
LLAMA2_7B_PARAMS = (32000 * 4096 * 2 + 4096
                    + 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096))


@dataclass
class DemoReport:
    """Rows of the closing summary table: (section, what, modeled, wall)."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    ok: bool = True

    def add(self, section: str, what: str, modeled: str = "-", wall: str = "-") -> None:
        self.rows.append((section, what, modeled, wall))
        print(f"  {what}" + (f"   [modeled {modeled}]" if modeled != "-" else "")
              + (f"   [wall {wall}]" if wall != "-" else ""), flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring up 2 nodes x 8 sockets locally and show the emulator")
    p.add_argument("--nodes", type=int, default=2, help="emulated nodes (default 2)")
    p.add_argument("--trace", default=None, help="write a Chrome trace (Perfetto) JSON here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo)


def _wall(t0: float) -> str:
    return f"{time.perf_counter() - t0:.2f} s"


def section_bringup(nodes: int, report: DemoReport):
    from sn40l.cluster import Cluster, ensure_ray

    print(f"[1] bring-up: {nodes} nodes x 8 SN40L sockets as Ray actors", flush=True)
    t0 = time.perf_counter()
    ensure_ray(None)
    cluster = Cluster.start(nodes=nodes, sockets_per_node=8, name="demo")
    pings = cluster.wait_healthy()
    rss = np.median([p["rss"] for p in pings])
    report.add("bring-up", f"{len(pings)} sockets up, median actor RSS {format_bytes(rss)}",
               wall=_wall(t0))
    return cluster


def section_expert(cluster, report: DemoReport) -> None:
    print("[2] phantom Llama2-7B expert: DDR -> HBM on node 0's 8 sockets in parallel",
          flush=True)
    ranks = cluster.node_ranks(0)
    n = len(ranks)
    t0 = time.perf_counter()
    per_socket = -(-LLAMA2_7B_PARAMS // n)  # parameters per shard (the last shard padded)
    total_bytes = per_socket * n * 2
    refs = cluster.call("write", "llama2-7b/weights", "ddr",
                        {"shape": [per_socket], "dtype": "bf16", "data": None},
                        owner="demo", read_only=True, ranks=ranks)
    loaded = max(r["end_ns"] for r in refs)
    report.add("expert", f"placed {total_bytes / 1e9:.2f} GB ({LLAMA2_7B_PARAMS / 1e9:.2f} B "
               f"params, BF16) in DDR over {n} sockets from the host",
               modeled=format_ns(loaded), wall=_wall(t0))
    t0 = time.perf_counter()
    cluster.call("advance_to", loaded, ranks=ranks)  # the activation starts once all are loaded
    copies = cluster.call("copy", "llama2-7b/weights", "hbm", "llama2-7b/weights@hbm",
                          ranks=ranks)
    start = min(c["start_ns"] for c in copies)
    end = max(c["end_ns"] for c in copies)
    node_bw = total_bytes / ((end - start) / 1e9)
    report.add("expert", f"activated into HBM on {n} sockets in parallel: node aggregate "
               f"{format_bandwidth(node_bw)}", modeled=format_ns(end - start), wall=_wall(t0))
    hbm = cluster.call("stats", ranks=ranks[:1])[0]["tiers"]["hbm"]
    report.add("expert", f"HBM of socket 0 now {format_bytes(hbm['used'])} used of "
               f"{format_bytes(hbm['capacity'])}")
    cluster.call("free", "llama2-7b/weights@hbm", ranks=ranks)
    cluster.call("free", "llama2-7b/weights", ranks=ranks)


def section_roundtrip(cluster, report: DemoReport) -> None:
    print("[3] materialized round trip DDR -> HBM -> SRAM -> HBM -> DDR on socket 0",
          flush=True)
    sock = cluster.socket(0)
    import ray

    data = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    t0 = time.perf_counter()
    first = ray.get(sock.write.remote("rt@ddr", "ddr", data, dtype="fp32", owner="demo"))
    hops = [("rt@ddr", "hbm", "rt@hbm"), ("rt@hbm", "sram", "rt@sram"),
            ("rt@sram", "hbm", "rt@hbm2"), ("rt@hbm2", "ddr", "rt@ddr2")]
    times = []
    where = "ddr"
    for src, tier, dst in hops:
        r = ray.get(sock.copy.remote(src, tier, dst, move=True))
        times.append((f"{where}->{tier}", r["end_ns"] - r["start_ns"]))
        where = tier
    back = ray.get(sock.read.remote("rt@ddr2"))
    intact = bool(np.array_equal(back["data"], data))
    report.ok &= intact
    ray.get(sock.free.remote("rt@ddr2"))
    hop_text = ", ".join(f"{h} {format_ns(t)}" for h, t in times)
    report.add("round trip", f"4 MiB fp32 through the tiers ({hop_text}); intact: {intact}",
               modeled=format_ns(back["end_ns"] - first["start_ns"]), wall=_wall(t0))


def section_allreduce(cluster, report: DemoReport) -> None:
    print("[4] TP8 AllReduce peer to peer between node 0's sockets, and TP16 over both nodes",
          flush=True)
    import ray

    from sn40l.collectives import create_group, destroy_group

    for ranks, label in ((cluster.node_ranks(0), "TP8"),
                         (list(range(cluster.world_size)), f"TP{cluster.world_size}")):
        name = f"demo-{label}"
        create_group(cluster, ranks, name)
        try:
            xs = [np.random.default_rng(r).standard_normal(1 << 20).astype(np.float32)
                  for r in ranks]
            t0 = time.perf_counter()
            out = ray.get([cluster.socket(r).allreduce.remote(name, x)
                           for r, x in zip(ranks, xs)])
            wall = _wall(t0)
            exact = np.sum(np.array(xs, dtype=np.float64), axis=0)
            same = all(np.array_equal(out[0]["result"]["data"], o["result"]["data"])
                       for o in out)
            close = bool(np.allclose(out[0]["result"]["data"], exact, rtol=1e-4, atol=1e-4))
            report.ok &= same and close
            # a collective is a sync point: count from when the last member arrived
            modeled = max(o["end_ns"] for o in out) - max(o["start_ns"] for o in out)
            report.add("allreduce", f"{label}: 4 MiB fp32 summed on {len(ranks)} sockets; equals "
                       f"numpy: {close}; bit-identical on every socket: {same}",
                       modeled=format_ns(modeled), wall=wall)
        finally:
            destroy_group(cluster, ranks, name)


def section_model(cluster, report: DemoReport) -> None:
    print("[5] compiled Llama models on the tile engine", flush=True)
    from sn40l.cluster.runner import ModelRunner
    from sn40l.compiler import CompileConfig, compile_model

    runs = {}
    for tp in (1, 8):
        t0 = time.perf_counter()
        art = compile_model(CompileConfig("tiny", tp=tp, seq_len=64))
        runner = ModelRunner(cluster, cluster.node_ranks(0)[:tp], art, seed=1, tag=f"demo{tp}")
        runner.load()
        try:
            runs[tp] = (runner.generate([1, 2, 3, 4], 8), _wall(t0))
        finally:
            runner.unload()
    same = runs[1][0].tokens == runs[8][0].tokens
    report.ok &= same
    report.add("model", f"tiny GQA Llama, materialized: TP8 tokens {runs[8][0].tokens} equal "
               f"TP1's: {same}", modeled=format_ns(runs[8][0].ttft_ns), wall=runs[8][1])
    t0 = time.perf_counter()
    art = compile_model(CompileConfig("llama3.1-8b", tp=16, nodes=2, seq_len=8192))
    ranks = list(range(cluster.world_size))
    if len(ranks) >= 16:
        runner = ModelRunner(cluster, ranks[:16], art, weights="phantom", tag="demo8b")
        runner.load()
        try:
            res = runner.generate([1, 2, 3], 32)
        finally:
            runner.unload()
        report.add("model", f"Llama 3.1 8B phantom, TP16 over 2 nodes, 8K context: "
                   f"{res.tokens_per_s_per_user:.0f} output tokens/s/user modeled (SN40L paper: "
                   f"1042)", modeled=format_ns(int(1e9 / res.tokens_per_s_per_user)),
                   wall=_wall(t0))


def section_coe(cluster, report: DemoReport) -> None:
    from sn40l.coe import demo_section

    demo_section(cluster, report)


SECTIONS: list[Callable] = [section_expert, section_roundtrip, section_allreduce, section_model,
                            section_coe]


def cmd_demo(args: argparse.Namespace) -> int:
    report = DemoReport()
    t_all = time.perf_counter()
    cluster = section_bringup(args.nodes, report)
    try:
        for section in SECTIONS:
            section(cluster, report)
        if args.trace:
            from sn40l.socket.clock import write_chrome_trace

            write_chrome_trace(args.trace, cluster.chrome_trace())
            print(f"trace written to {args.trace} (open it in https://ui.perfetto.dev)")
    finally:
        cluster.stop()
    report.rows.append(("total", "demo finished", "-", _wall(t_all)))
    if args.json:
        emit_json({"ok": report.ok, "rows": report.rows}, indent=2)
    else:
        _print_summary(report)
    return 0 if report.ok else 1


def _print_summary(report: DemoReport) -> None:
    widths = [max(len(r[i]) for r in report.rows + [("SECTION", "WHAT", "MODELED", "WALL")])
              for i in range(4)]
    widths[1] = min(widths[1], 90)
    print("\nSUMMARY")
    for row in [("SECTION", "WHAT", "MODELED", "WALL")] + report.rows:
        what = row[1] if len(row[1]) <= widths[1] else row[1][: widths[1] - 3] + "..."
        print(f"{row[0]:<{widths[0]}}  {what:<{widths[1]}}  {row[2]:>{widths[2]}}  "
              f"{row[3]:>{widths[3]}}")
    print("\nall checks passed" if report.ok else "\nSOME CHECKS FAILED")
