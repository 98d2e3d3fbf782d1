"""AllReduce side by side, in one run on this machine: sn40l's socket actors, torch.distributed
with gloo (TCP), and mpi4py on Open MPI, the same number of ranks, float32, the same sizes.
Not a test.

A fourth column, the star floor, is what the star's messages alone cost between Ray actors
here: the same number of actors exchange the star's 2(n-1) Unix datagrams (elements by value)
and reduce in numpy, waiting as sn40l's sockets wait (polling, yielding the CPU, for up to
sn40l's doorbell poll time, then blocking), but without MACs, modeled clocks or sn40l's
layers. It is the time any star among actor processes that wait this way would take on this
machine, so sn40l/floor is the part of the wall time that is sn40l's own (sizes of one
datagram only, up to 64 KiB; one host only).

One host (shared memory):            --ranks 8
Two emulated nodes over TCP (as two hosts would talk: TCP between the nodes, shared memory
inside each; gloo is TCP between all ranks, Open MPI shared memory):
                                     --ranks 16 --nodes 2 --transport net

torch and mpi4py are an optional extra (`pip install '.[bench]'`, torch's CPU build; Open MPI
from Debian's `openmpi-bin libopenmpi-dev`); a baseline that is not installed is reported as
such.

    python benchmarks/allreduce_compare.py [--sizes 4K,64K,1M,16M,64M] [--ranks 8] [--iters 5]
        [--nodes 1] [--transport auto] [--rounds 1] [--skip gloo,mpi]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.abspath(__file__)


def _iters(size: int, iters: int) -> int:
    return iters if size <= 16 * 2**20 else max(3, iters // 2)


# -- torch.distributed (gloo) ---------------------------------------------------------------
def _gloo_worker(rank: int, world: int, port: int, sizes: list[int], iters: int, out: str):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    results = {}
    for size in sizes:
        t = torch.ones(size // 4, dtype=torch.float32)
        times = []
        for i in range(_iters(size, iters) + 1):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            dt = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)  # an iteration ends with its slowest rank
            if i:
                times.append(float(dt))
        results[size] = statistics.median(times)
    if rank == 0:
        with open(out, "w") as fh:
            json.dump(results, fh)
    dist.destroy_process_group()


def run_gloo(world: int, sizes: list[int], iters: int) -> dict[int, float] | str:
    try:
        import torch.multiprocessing as mp
    except ImportError:
        return "torch not installed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    mp.spawn(_gloo_worker, args=(world, port, sizes, iters, out), nprocs=world, join=True)
    with open(out) as fh:
        return {int(k): v for k, v in json.load(fh).items()}


# -- mpi4py on Open MPI ---------------------------------------------------------------------
def _mpi_main(sizes: list[int], iters: int, out: str) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    results = {}
    for size in sizes:
        send = np.ones(size // 4, np.float32)
        recv = np.empty_like(send)
        times = []
        for i in range(_iters(size, iters) + 1):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(send, recv, op=MPI.SUM)
            dt = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            if i:
                times.append(dt)
        results[size] = statistics.median(times)
    if comm.Get_rank() == 0:
        with open(out, "w") as fh:
            json.dump(results, fh)


def run_mpi(world: int, sizes: list[int], iters: int) -> dict[int, float] | str:
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return "Open MPI not installed"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "-n", str(world), sys.executable,
           HERE, "--mpi-child", "--sizes", ",".join(map(str, sizes)), "--iters", str(iters),
           "--out", out]
    env = dict(os.environ, OMPI_MCA_btl="self,vader", OMPI_MCA_pml="ob1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if res.returncode != 0:
        return f"mpirun failed: {res.stderr.strip().splitlines()[-1:]}"
    with open(out) as fh:
        return {int(k): v for k, v in json.load(fh).items()}


# -- the star's messages alone, between Ray actors --------------------------------------------
FLOOR_MAX_BYTES = 64 * 2**10  # one datagram each way


class _StarPeer:
    """One rank of the floor: a Unix datagram socket and the star's messages, nothing else."""

    def __init__(self, rank: int, world: int, tag: str):
        from sn40l.collectives.doorbell import SPIN_S

        self.rank, self.world, self.tag, self.spin_s = rank, world, tag, SPIN_S
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.sock.bind(self._addr(rank))

    def _addr(self, rank: int) -> bytes:
        return f"\0sn40l-floor/{self.tag}/{rank}".encode()

    def _recv(self, nbytes: int) -> bytes:
        """A datagram, waited for as a doorbell is: polled, yielding, then slept for."""
        end = time.perf_counter() + self.spin_s
        while time.perf_counter() < end:
            try:
                return self.sock.recv(nbytes, socket.MSG_DONTWAIT)
            except BlockingIOError:
                os.sched_yield()
        return self.sock.recv(nbytes)

    def run(self, sizes: list[int], iters: int) -> dict[int, list[float]]:
        sock, world, rank, recv = self.sock, self.world, self.rank, self._recv
        root, peers = self._addr(0), [self._addr(r) for r in range(world)]
        walls: dict[int, list[float]] = {}
        for size in sizes:
            x = np.random.default_rng(rank).standard_normal(size // 4).astype(np.float32)
            out = np.empty_like(x)
            walls[size] = []
            for i in range(iters + 1):
                if rank:  # a barrier through rank 0, as every benchmark here takes one
                    sock.sendto(b"", root)
                    recv(16)
                else:
                    for _ in range(world - 1):
                        recv(16)
                    for dst in peers[1:]:
                        sock.sendto(b"", dst)
                t0 = time.perf_counter()
                if rank:
                    sock.sendto(x.data, root)
                    out[:] = np.frombuffer(recv(size + 1), np.float32)
                else:
                    got = [recv(size + 1) for _ in range(world - 1)]
                    out[:] = x
                    for data in got:
                        np.add(out, np.frombuffer(data, np.float32), out=out)
                    for dst in peers[1:]:
                        sock.sendto(out.data, dst)
                if i:
                    walls[size].append(time.perf_counter() - t0)
        return walls


def floor_peers(world: int, nodes: int) -> list | str:
    """The floor's actors, made once for all rounds: actors made and killed every round make
    Ray start worker processes, which then compete with the next round's sockets for the CPUs
    (a round of either could take several times its quiet time)."""
    import ray

    if nodes != 1:
        return "the floor is for one host (shared memory) only"
    cls = ray.remote(num_cpus=0)(_StarPeer)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    actors = [cls.remote(r, world, tag) for r in range(world)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    return actors


def run_floor(actors: list | str, sizes: list[int], iters: int) -> dict[int, float] | str:
    """Medians over iterations of the slowest rank, for the sizes of one datagram."""
    import ray

    if isinstance(actors, str):
        return actors
    small = [s for s in sizes if s <= FLOOR_MAX_BYTES]
    if not small:
        return f"no size of at most {FLOOR_MAX_BYTES // 1024} KiB"
    res = ray.get([a.run.remote(small, iters) for a in actors], timeout=600)
    return {s: statistics.median(max(r[s][i] for r in res) for i in range(len(res[0][s])))
            for s in small}


def _label(size: int) -> str:
    return next((f"{size // m}{u}" for u, m in (("M", 2**20), ("K", 2**10))
                 if size % m == 0 and size >= m), str(size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="4K,64K,1M,16M,64M")
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate sn40l, gloo, Open MPI this many times (the machine may "
                             "be shared: medians over rounds, ratios taken within a round)")
    parser.add_argument("--nodes", type=int, default=1, help="emulated nodes the ranks span")
    parser.add_argument("--transport", default="auto", choices=["auto", "shm", "net", "tcp"])
    parser.add_argument("--skip", default="", help="comma list of baselines to leave out: "
                                                   "gloo, mpi, floor")
    parser.add_argument("--mpi-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mpi_child:
        _mpi_main([int(s) for s in args.sizes.split(",")], args.iters, args.out)
        return

    import ray

    from sn40l.cluster import Cluster, ensure_ray
    from sn40l.collectives.bench import host_bandwidths, parse_sizes, run

    sizes = parse_sizes(args.sizes)
    n = args.ranks
    nodes = args.nodes
    if n % nodes:
        raise SystemExit(f"--ranks {n} does not split over --nodes {nodes}")
    if args.rounds < 1:
        raise SystemExit(f"--rounds {args.rounds} must be >= 1")
    per = n // nodes
    print(f"AllReduce, {n} ranks ({nodes} emulated node(s), transport {args.transport}), "
          f"float32, on this machine ({os.cpu_count()} cores); medians of the slowest rank "
          f"per iteration, {args.rounds} round(s) alternating sn40l, gloo, Open MPI, the star "
          "floor",
          flush=True)
    skip = set(filter(None, args.skip.split(",")))
    ensure_ray(None)
    spn = 8 if per <= 8 else 16
    cluster = Cluster.start(nodes=nodes, sockets_per_node=spn, name="compare")
    ranks = [node * spn + s for node in range(nodes) for s in range(per)]
    rounds: list[dict] = []  # per round: {"sn40l": {size: s}, "gloo": ..., "mpi": ..., "load"}
    peers: list | str = "skipped" if "floor" in skip else floor_peers(n, nodes)
    try:
        for k in range(args.rounds):
            load = os.getloadavg()[0]
            ours = {r["bytes"]: r for r in run(cluster, ranks, sizes, args.iters,
                                               transport=args.transport)}
            print(f"  round {k + 1}: sn40l done; torch gloo ...", flush=True)
            gloo = "skipped" if "gloo" in skip else run_gloo(n, sizes, args.iters)
            print(f"  round {k + 1}: gloo done; Open MPI ...", flush=True)
            mpi = "skipped" if "mpi" in skip else run_mpi(n, sizes, args.iters)
            print(f"  round {k + 1}: Open MPI done; the star floor ...", flush=True)
            floor = run_floor(peers, sizes, args.iters)
            rounds.append({"sn40l": {s: ours[s]["wall_s"] for s in sizes}, "gloo": gloo,
                           "mpi": mpi, "floor": floor, "load": (load, os.getloadavg()[0]),
                           "modeled": {s: ours[s]["modeled_s"] for s in sizes}})
    finally:
        for a in peers if isinstance(peers, list) else []:
            ray.kill(a)
        cluster.stop()
        ray.shutdown()
    b_add, b_copy = host_bandwidths()
    med = statistics.median

    def wall(name, size):
        got = [r[name][size] for r in rounds
               if not isinstance(r[name], str) and size in r[name]]
        return med(got) if got else None

    def ratio(name, size):
        got = [r["sn40l"][size] / r[name][size] for r in rounds
               if not isinstance(r[name], str) and size in r[name]]
        return med(got) if got else None

    def cell(t, size, width=10):
        if t is None:
            return f"{'n/a':>{width}} {'':>7}"
        return f"{t * 1e3:>{width}.3f} {size / t * 2 * (n - 1) / n / 1e9:>7.3f}"

    def fcell(t):
        return f"{'n/a':>8}" if t is None else f"{t * 1e3:>8.3f}"

    def rcell(x):
        return f"{'n/a':>7}" if x is None else f"{x:>7.2f}"

    print(f"\n{'size':>6} | {'sn40l ms':>10} {'busbw':>7} | {'gloo ms':>10} {'busbw':>7} | "
          f"{'MPI ms':>10} {'busbw':>7} | {'floor ms':>8} | {'/gloo':>7} {'/MPI':>7} "
          f"{'/floor':>7} | {'bound ms':>9} "
          f"{'sn40l/bound':>11} | {'modeled us':>10}")
    for size in sizes:
        bound = (n - 1) * size * (1 / b_add + 1 / b_copy)
        ours = wall("sn40l", size)
        print(f"{_label(size):>6} | {cell(ours, size)} | {cell(wall('gloo', size), size)} | "
              f"{cell(wall('mpi', size), size)} | {fcell(wall('floor', size))} | "
              f"{rcell(ratio('gloo', size))} {rcell(ratio('mpi', size))} "
              f"{rcell(ratio('floor', size))} | {bound * 1e3:>9.2f} {ours / bound:>11.2f} | "
              f"{med(r['modeled'][size] for r in rounds) * 1e6:>10.2f}")
    for label, key in (("gloo", "gloo"), ("Open MPI", "mpi"), ("star floor", "floor")):
        notes = {r[key] for r in rounds if isinstance(r[key], str)}
        if notes:
            print(f"{label}: {'; '.join(sorted(notes))}")
    print("load average (1 min) at the start / end of each round: " + ", ".join(
        f"{a:.1f}/{b:.1f}" for a, b in (r["load"] for r in rounds)))
    print("ms: median over rounds; /gloo, /MPI, /floor: sn40l over the baseline, median of the "
          "ratios within each round; floor: the star's datagrams alone between Ray actors "
          f"(sizes up to {FLOOR_MAX_BYTES // 1024} KiB); busbw in GB/s (nccl-tests: algbw * 2(n-1)/n); bound = "
          f"(n-1)*S*(1/B_add + 1/B_copy) with numpy here: B_add {b_add / 1e9:.2f} GB/s, "
          f"B_copy {b_copy / 1e9:.2f} GB/s; modeled = SN40L virtual time")


if __name__ == "__main__":
    main()
