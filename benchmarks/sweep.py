"""Sweep benchmark: wall seconds of the TP sweep of llama3.1-8b (phantom, batch 1, 128 new
tokens; TP 1, 2, 4, 8 on one node, TP 8 and 16 on two; TP 1 over 2 nodes and TP 16 on one
node of 8 are skipped rows) on a cluster that is already up, and of ``sn40l cluster up
--nodes 2`` itself. Wall time and modeled numbers apart; medians of --repeats. Not a test.

    python benchmarks/sweep.py [--repeats 3] [--cluster NAME]

Without --cluster it brings a 2 x 8 cluster up (timed as the bring-up row) and stops it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sn40l.cluster.attach import attach
from sn40l.sweep.experiment import Experiment
from sn40l.sweep.results import ResultFile
from sn40l.sweep.run import run_sweep
from sn40l.sweep.types import WorkloadKind

AXES = {"model": ["llama3.1-8b"], "tp": [1, 2, 4, 8, 16], "nodes": [1, 2], "batch": [1],
        "prompt_len": [16], "max_new_tokens": [128]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cluster", default=None, help="a running 2 x 8 cluster to use")
    args = parser.parse_args()
    name, ups = args.cluster, []
    if name is None:
        name = f"benchsweep{os.getpid()}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sn40l.cli", "cluster", "up", "--nodes", "2",
                        "--name", name], check=True, capture_output=True)
        ups.append(time.perf_counter() - t0)
    try:
        cluster = attach(name)
        exp = Experiment.build("bench-tp", WorkloadKind.MODEL, AXES)
        walls, rows = [], []
        for i in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                res = ResultFile(Path(tmp) / "r.csv", exp)
                t0 = time.perf_counter()
                run_sweep(exp, res, cluster, quiet=True)
                walls.append(time.perf_counter() - t0)
                rows = res.rows
        print(f"{'TP':>3} {'NODES':>5} {'STATUS':>8} {'TTFT ms':>8} {'TPOT ms':>8} "
              f"{'tok/s/user':>10} {'wall s':>7}")
        for r in rows:
            ok = r["status"] == "ok"
            print(f"{r['tp']:>3} {r['nodes']:>5} {r['status']:>8} "
                  f"{r['ttft_ms'] if ok else 0:>8.3f} {r['tpot_ms'] if ok else 0:>8.3f} "
                  f"{r['tokens_per_s_per_user'] if ok else 0:>10.1f} {r['wall_s']:>7.2f}")
        print(f"\nwhole sweep ({sum(r['status'] == 'ok' for r in rows)} points run, "
              f"{sum(r['status'] == 'skipped' for r in rows)} skipped): median "
              f"{statistics.median(walls):.2f} s wall of {args.repeats} ({', '.join(f'{w:.2f}' for w in walls)}); "
              "target <= 60 s")
        if ups:
            print(f"sn40l cluster up --nodes 2 (16 sockets): {ups[0]:.2f} s wall; target <= 10 s "
                  "on a quiet machine")
        print("modeled numbers come from the sockets' clocks and do not depend on wall time")
    finally:
        if args.cluster is None:
            subprocess.run([sys.executable, "-m", "sn40l.cli", "cluster", "down", "--name",
                            name], capture_output=True)


if __name__ == "__main__":
    main()
