"""Bring-up benchmark: wall seconds to start and stop 8 and 16 socket actors, and host memory
per socket actor. Prints a table; medians of --repeats runs. Not a test.

    python benchmarks/bringup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psutil
import ray

from sn40l.cluster import Cluster, ensure_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
