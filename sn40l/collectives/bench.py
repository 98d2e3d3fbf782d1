"""AllReduce benchmark: wall time, algbw/busbw (nccl-tests definitions) and modeled time over a
cluster's sockets, next to the physical bound of the host doing the same work with numpy."""

from __future__ import annotations

import statistics
import time

import numpy as np
import ray

from sn40l.collectives.group import create_group, destroy_group


def parse_sizes(text: str) -> list[int]:
    """'4K,64K,1M' -> bytes (binary prefixes, as nccl-tests prints them)."""
    from sn40l.errors import ConfigError

    out = []
    for part in text.split(","):
        p = part.strip().upper().rstrip("B")
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(p[-1:], 1)
        digits = p[:-1] if p[-1:] in "KMG" else p
        if not digits.isdigit() or int(digits) <= 0:
            raise ConfigError(f"size {part!r} is not a positive byte count like 4K, 64K, 16M")
        out.append(int(digits) * mult)
    return out


def host_bandwidths(nbytes: int = 64 * 2**20, repeats: int = 5) -> tuple[float, float]:
    """(B_add, B_copy) in bytes/s of this host: np.add(a, b, out=c) and c[:] = a over fp32."""
    n = nbytes // 4
    a, b, c = (np.ones(n, np.float32) for _ in range(3))
    adds, copies = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(a, b, out=c)
        adds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c[:] = a
        copies.append(time.perf_counter() - t0)
    return nbytes / statistics.median(adds), nbytes / statistics.median(copies)


def run(cluster, ranks: list[int], sizes: list[int], iters: int = 5,
        progress=None, transport: str = "auto") -> list[dict]:
    """One row per size: wall and modeled medians, algbw, busbw, the physical bound, over
    the group's ``transport`` (auto, shm or net)."""
    n = len(ranks)
    name = f"bench-allreduce-{time.monotonic_ns()}"
    create_group(cluster, ranks, name, transport=transport)
    b_add, b_copy = host_bandwidths()
    rows = []
    try:
        for size in sizes:
            iters_here = iters if size <= 16 * 2**20 else max(3, iters // 2)
            refs = [cluster.socket(r).bench_allreduce.remote(name, size, iters_here)
                    for r in ranks]
            res = ray.get(refs)
            # an iteration ends when its slowest member ends
            wall = statistics.median(max(r["wall_s"][i] for r in res)
                                     for i in range(iters_here))
            modeled = statistics.median(max(r["modeled_ns"][i] for r in res)
                                        for i in range(iters_here)) * 1e-9
            algbw = size / wall
            bound = (n - 1) * size * (1 / b_add + 1 / b_copy)
            rows.append({"bytes": size, "sockets": n, "wall_s": wall, "algbw_GBps": algbw / 1e9,
                         "busbw_GBps": algbw * 2 * (n - 1) / n / 1e9, "modeled_s": modeled,
                         "modeled_algbw_GBps": size / modeled / 1e9,
                         "modeled_busbw_GBps": size / modeled * 2 * (n - 1) / n / 1e9,
                         "bound_s": bound, "wall_over_bound": wall / bound})
            if progress:
                progress(rows[-1])
    finally:
        destroy_group(cluster, ranks, name)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'size':>9} {'wall':>10} {'algbw':>8} {'busbw':>8} | {'modeled':>10} "
            f"{'m.busbw':>8} | {'bound':>9} {'wall/bound':>10}")
    lines = [head, f"{'':>9} {'(ms)':>10} {'(GB/s)':>8} {'(GB/s)':>8} | {'(us)':>10} "
                   f"{'(GB/s)':>8} | {'(ms)':>9} {'':>10}"]
    for r in rows:
        lines.append(f"{_size(r['bytes']):>9} {r['wall_s'] * 1e3:>10.3f} {r['algbw_GBps']:>8.3f} "
                     f"{r['busbw_GBps']:>8.3f} | {r['modeled_s'] * 1e6:>10.2f} "
                     f"{r['modeled_busbw_GBps']:>8.1f} | {r['bound_s'] * 1e3:>9.2f} "
                     f"{r['wall_over_bound']:>10.2f}")
    return "\n".join(lines)


def _size(b: int) -> str:
    for unit, m in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if b >= m and b % m == 0:
            return f"{b // m}{unit}"
    return str(b)
