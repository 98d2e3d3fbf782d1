"""CoE benchmark: modeled latency of a Composition of Experts on SN40L vs DGX H100/A100, and the
wall time of the whole sweep.

Runs the same sweep as ``sn40l coe bench`` (the defaults are the paper's sweep of issue #13:
experts 10,50,100,150, batch 1,8, tokens 20,200, profiles sn40l,dgx-h100,dgx-a100) and prints
the table: latency per batch split into router / switch / expert time (modeled, from the
profiles), HBM hit rate, wall seconds per row apart, and the footprint report; then the wall
time of the whole sweep (target <= 120 s on 2 cores) next to what it modeled. ``--repeats N`` runs the sweep N times and reports the median wall
time (modeled numbers are the same every time; the check says so). Not a test.

    python benchmarks/coe.py [--experts 10,50,100,150] [--batch 1,8] [--tokens 20,200]
                             [--profiles sn40l,dgx-h100,dgx-a100] [--repeats 1]
                             [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from sn40l.coe.bench import BenchConfig, format_table, parse_ints, run_bench

TARGET_S = 120.0


def modeled(result: dict) -> list[dict]:
    """The rows without their wall times: what must not change from run to run."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in result["rows"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experts", default="10,50,100,150")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--tokens", default="20,200")
    p.add_argument("--profiles", default="sn40l,dgx-h100,dgx-a100")
    p.add_argument("--repeats", type=int, default=1, help="sweeps to run (median wall time)")
    p.add_argument("--json", default=None, help="write the last sweep's result here")
    args = p.parse_args()
    cfg = BenchConfig(experts=parse_ints(args.experts, "--experts"),
                      batch=parse_ints(args.batch, "--batch"),
                      tokens=parse_ints(args.tokens, "--tokens"),
                      profiles=tuple(x.strip() for x in args.profiles.split(",") if x.strip()))
    results = [run_bench(cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
               for _ in range(max(1, args.repeats))]
    last = results[-1]
    print(format_table(last))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(last, fh, indent=2)
    walls = [r["wall_s"] for r in results]
    rows = [r for r in last["rows"] if r.get("oom") is None]
    batches = len(rows) * (cfg.rounds + cfg.warmup)
    modeled_s = sum(r["latency_ms"] for r in rows) * (cfg.rounds + cfg.warmup) / 1e3
    same = all(modeled(r) == modeled(last) for r in results)
    print(f"\nwhole sweep ({len(last['rows'])} rows, {len(rows)} run, {batches} batches served): "
          f"median {statistics.median(walls):.1f} s wall of {len(walls)} "
          f"({', '.join(f'{w:.1f}' for w in walls)}); target <= {TARGET_S:.0f} s on 2 cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"modeled: {modeled_s:.1f} s of serving (mean batch latency x batches served, "
          f"warm-up included); modeled numbers identical across repeats: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
