"""Bring-up benchmark: wall seconds to start and stop 8 and 16 socket actors, and host memory
per socket actor. Prints a table; medians of --repeats runs. Not a test.

    python benchmarks/bringup.py [--repeats 3]
    python benchmarks/bringup.py --compare OTHER_CHECKOUT [--repeats 5]

``--compare`` times ``sn40l cluster up --nodes 2`` (16 sockets: the daemon, its embedded Ray,
the socket actors, until the record is written) and a refused ``cluster up --nodes 0``, as
separate processes, alternating between this checkout and OTHER_CHECKOUT (same Python, the
other tree first on PYTHONPATH), with the load average before each run; it prints the medians
and the ratio, which a shared machine's load affects less than the absolute figures.
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

import psutil
import ray

from sn40l.cluster import Cluster, ensure_ray


def _timed_cli(tree: str, argv: list[str], state: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree, "SN40L_STATE_DIR": state}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sn40l.cli", *argv], env=env, check=False, cwd=state,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # cwd: not a checkout
    return time.perf_counter() - t0


def compare(other: str, repeats: int) -> None:
    here = str(Path(__file__).resolve().parents[1])
    trees = {"this": here, "other": str(Path(other).resolve())}
    times: dict[tuple[str, str], list[float]] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="bringup-") as state:
        for i in range(repeats):
            for label in (("other", "this") if i % 2 == 0 else ("this", "other")):
                loads.append(os.getloadavg()[0])
                up = _timed_cli(trees[label], ["cluster", "up", "--nodes", "2", "--quiet",
                                               "--name", "bench"], state)
                _timed_cli(trees[label], ["cluster", "down", "--name", "bench"], state)
                refused = _timed_cli(trees[label], ["cluster", "up", "--nodes", "0"], state)
                times.setdefault((label, "up"), []).append(up)
                times.setdefault((label, "refused"), []).append(refused)
                print(f"run {i} {label:>5}: up {up:6.2f} s, refused {refused:5.2f} s, "
                      f"load {loads[-1]:.1f}", flush=True)
    print(f"\n{'':>24}{'this':>9}{'other':>9}{'this/other':>12}")
    for what, text in (("up", "cluster up --nodes 2"), ("refused", "up --nodes 0 (refused)")):
        a = statistics.median(times[("this", what)])
        b = statistics.median(times[("other", what)])
        print(f"{text:>24}{a:>8.2f}s{b:>8.2f}s{a / b:>12.2f}")
    print(f"\nmedians of {repeats} runs each, alternating; this = {here}, other = "
          f"{trees['other']}; load average (1 min) {min(loads):.1f}-{max(loads):.1f}, median "
          f"{statistics.median(loads):.1f}. Target: 16 sockets up <= 10 s on a quiet machine.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", default=None, metavar="OTHER_CHECKOUT",
                        help="time the CLI bring-up here and in another checkout, alternating")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.repeats)
        return
    t0 = time.perf_counter()
    ensure_ray(None)
    ray_init = time.perf_counter() - t0
    print(f"embedded Ray start: {ray_init:.2f} s (once per process)")
    rows = []
    for nodes in (1, 2):
        ups, downs, rss, uss = [], [], [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            cluster = Cluster.start(nodes=nodes, name=f"bench{nodes}x{i}")
            ups.append(time.perf_counter() - t0)
            pings = cluster.call("ping")
            rss += [p["rss"] for p in pings]
            uss += [psutil.Process(p["pid"]).memory_full_info().uss for p in pings]
            t0 = time.perf_counter()
            cluster.stop()
            downs.append(time.perf_counter() - t0)
        rows.append((nodes * 8, statistics.median(ups), statistics.median(downs),
                     statistics.median(rss) / 2**20, statistics.median(uss) / 2**20))
    print(f"\n{'SOCKETS':>7}  {'UP (s)':>7}  {'DOWN (s)':>8}  {'RSS/actor (MiB)':>15}  "
          f"{'USS/actor (MiB)':>15}")
    for n, up, down, r, u in rows:
        print(f"{n:>7}  {up:>7.2f}  {down:>8.2f}  {r:>15.1f}  {u:>15.1f}")
    print(f"\nmedians of {args.repeats} runs; wall time only (bring-up has no modeled time). "
          "Targets: 16 sockets up <= 15 s, <= 150 MB RSS per socket actor.")
    ray.shutdown()


if __name__ == "__main__":
    main()
