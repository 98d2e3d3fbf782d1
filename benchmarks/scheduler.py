"""Scheduler throughput and latency: submissions/s (Python API and CLI), submit->RUNNING on an
idle cluster, and the wall time of the CLI commands.

    python benchmarks/scheduler.py [--jobs 1000] [--cli-jobs 100] [--repeats 20]

Starts an embedded Ray, a 2-node x 8-socket cluster and its controller in a temporary state
directory. Every job is ``--wrap true`` and really runs. Issue targets (2 cores): >= 200
submissions/s via the API, median submit->RUNNING <= 1 s, median ``squeue`` and
``sbatch --wrap true`` <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000, help="jobs submitted through the API")
    ap.add_argument("--cli-jobs", type=int, default=100, help="jobs submitted through the CLI")
    ap.add_argument("--repeats", type=int, default=20, help="samples of latency / CLI time")
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="sn40l-bench-sched-")
    os.environ["SN40L_STATE_DIR"] = state
    os.environ["SN40L_CLUSTER"] = "bench"
    from sn40l.cluster import Cluster, ensure_ray
    from sn40l.scheduler.client import Client
    from sn40l.scheduler.controller import start_controller

    ensure_ray(None)
    cluster = Cluster.start(nodes=2, sockets_per_node=8, name="bench")
    start_controller("bench")
    client = Client("bench")
    cwd = tempfile.mkdtemp(prefix="sn40l-bench-jobs-")
    rows = []
    try:
        # 1. API submissions: held (the submission path alone), then jobs that run at once
        t0 = time.perf_counter()
        held = [client.submit_argv(["-H", "--wrap", "true", "-o", "/dev/null"],
                                   cwd=cwd)["job_id"] for _ in range(args.jobs)]
        held_s = time.perf_counter() - t0
        rows.append(("submissions/s via the Python API, held jobs", f"{args.jobs / held_s:.0f}",
                     f"{args.jobs} jobs in {held_s:.2f} s", ">= 200"))
        client.call("cancel", jobs=[str(j) for j in held])
        t0 = time.perf_counter()
        ids = [client.submit_argv(["--wrap", "true", "-o", "/dev/null"], cwd=cwd)["job_id"]
               for _ in range(args.jobs)]
        api_s = time.perf_counter() - t0
        rows.append(("submissions/s via the Python API", f"{args.jobs / api_s:.0f}",
                     f"{args.jobs} jobs in {api_s:.2f} s", ">= 200"))
        drain_t0 = time.perf_counter()
        _wait_all(client, ids)
        rows.append(("time for those jobs to run to completion", f"{time.perf_counter() - drain_t0:.1f} s",
                     "each job a real process", "-"))
        # 2. CLI submissions
        cli = [sys.executable, "-m", "sn40l.cli"]
        times = []
        cli_ids = []
        t0 = time.perf_counter()
        for _ in range(args.cli_jobs):
            s = time.perf_counter()
            out = subprocess.run(cli + ["sbatch", "--parsable", "-o", "/dev/null", "--wrap",
                                        "true"], cwd=cwd, capture_output=True, text=True,
                                 check=True).stdout
            times.append(time.perf_counter() - s)
            cli_ids.append(int(out))
        cli_s = time.perf_counter() - t0
        rows.append(("submissions/s via the CLI (sequential)",
                     f"{args.cli_jobs / cli_s:.1f}", f"{args.cli_jobs} jobs in {cli_s:.1f} s",
                     "-"))
        rows.append(("sn40l sbatch --wrap true, median wall",
                     f"{statistics.median(times) * 1000:.0f} ms",
                     f"p90 {sorted(times)[int(len(times) * 0.9)] * 1000:.0f} ms", "<= 500 ms"))
        _wait_all(client, cli_ids)
        # 3. squeue / sinfo / sacct wall
        for cmd in (["squeue"], ["sinfo"], ["sacct", "-X"]):
            samples = []
            for _ in range(args.repeats):
                s = time.perf_counter()
                subprocess.run(cli + cmd, capture_output=True, check=True)
                samples.append(time.perf_counter() - s)
            rows.append((f"sn40l {' '.join(cmd)}, median wall",
                         f"{statistics.median(samples) * 1000:.0f} ms",
                         f"{args.repeats} runs", "<= 500 ms" if cmd == ["squeue"] else "-"))
        # 4. submit -> RUNNING on an idle cluster
        lat_ctl, lat_seen = [], []
        for _ in range(args.repeats):
            s = time.perf_counter()
            job = client.submit_argv(["--wrap", "sleep 0.2", "-o", "/dev/null"],
                                     cwd=cwd)["job_id"]
            while True:
                rec = client.call("show_job", job=str(job))[0]
                if rec["state"] != "PENDING":
                    break
                time.sleep(0.002)
            lat_seen.append(time.perf_counter() - s)
            lat_ctl.append(rec["start_time"] - rec["submit_time"])
            _wait_all(client, [job])
        rows.append(("submit -> RUNNING (controller clock), median",
                     f"{statistics.median(lat_ctl) * 1000:.1f} ms",
                     f"max {max(lat_ctl) * 1000:.1f} ms", "<= 1 s"))
        rows.append(("submit -> RUNNING seen by a polling client, median",
                     f"{statistics.median(lat_seen) * 1000:.1f} ms",
                     f"max {max(lat_seen) * 1000:.1f} ms", "<= 1 s"))
    finally:
        client.close()
        cluster.stop()
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'detail':<28}  target")
    for name, value, detail, target in rows:
        print(f"{name:<{width}}  {value:>10}  {detail:<28}  {target}")
    return 0


def _wait_all(client, ids: list[int], timeout_s: float = 600.0) -> None:
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}
    deadline = time.monotonic() + timeout_s
    pending = set(ids)
    while pending:
        done = {j["id"] for j in client.call("sacct", jobs=[str(i) for i in
                                                            sorted(pending)[:200]])
                if j["state"] in final}
        pending -= done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs still not finished")
        if pending:
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
