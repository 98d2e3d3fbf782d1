"""Scheduler throughput and latency: submissions/s (Python API and CLI), submit->RUNNING on an
idle cluster, and the wall time of the CLI commands.

    python benchmarks/scheduler.py [--jobs 1000] [--cli-jobs 100] [--repeats 20]
                                   [--queued N] [--other CHECKOUT]

Starts an embedded Ray, a 2-node x 8-socket cluster and its controller in a temporary state
directory. Every job is ``--wrap true`` and really runs. Issue targets (2 cores): >= 200
submissions/s via the API, median submit->RUNNING <= 1 s, median ``squeue`` and
``sbatch --wrap true`` <= 0.5 s.

``--queued N`` leaves N held jobs in the queue while squeue, sinfo and sacct are timed (the
client reads every record it shows), and times reading the squeue reply into typed jobs in this
process. ``--other CHECKOUT`` times every CLI command also from another checkout of sn40l
(``PYTHONPATH`` picks the package), against the same controller, alternating run by run so that
load changes hit both alike, and prints both medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
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
    ap.add_argument("--queued", type=int, default=0,
                    help="held jobs in the queue while squeue/sinfo/sacct are timed")
    ap.add_argument("--other", help="another checkout whose CLI is timed side by side")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this": here, **({"other": args.other} if args.other else {})}
    load_before = os.getloadavg()
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
        cli_ids = []
        t0 = time.perf_counter()
        times = _time_cli(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true"], trees,
                          args.cli_jobs, cwd, lambda out: cli_ids.append(int(out)))
        cli_s = time.perf_counter() - t0
        rows.append(("submissions/s via the CLI (sequential)",
                     f"{len(cli_ids) / cli_s:.1f}", f"{len(cli_ids)} jobs in {cli_s:.1f} s",
                     "-"))
        rows += _cli_rows("sn40l sbatch --wrap true, median wall", times, "<= 500 ms")
        _wait_all(client, cli_ids)
        # 3. squeue / sinfo / sacct wall, with --queued held jobs in the queue
        for _ in range(args.queued):
            client.submit_argv(["-H", "--wrap", "true", "-o", "/dev/null"], cwd=cwd)
        if args.queued:
            rows.append(_typed_reply_row(client.call("queue")))
        for cmd in (["squeue"], ["sinfo"], ["sacct", "-X"]):
            times = _time_cli(cmd, trees, args.repeats, cwd)
            rows += _cli_rows(f"sn40l {' '.join(cmd)}, median wall", times,
                              "<= 500 ms" if cmd == ["squeue"] else "-")
        if args.queued:
            client.call("cancel", jobs=[], states=["PENDING"],
                        user=pwd.getpwuid(os.getuid()).pw_name)
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
    print(f"load average (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    return 0


def _time_cli(cmd: list[str], trees: dict[str, str], runs: int, cwd: str,
              each=None) -> dict[str, list[float]]:
    """Wall times of ``sn40l <cmd>`` from each checkout in ``trees``, alternating run by run
    (and under ``<name> cpu`` the CPU time, user + system, of each run's process)."""
    times: dict[str, list[float]] = {key: [] for name in trees for key in (name, f"{name} cpu")}
    for _ in range(runs):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            s = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "sn40l.cli", *cmd], cwd=cwd, env=env,
                                 capture_output=True, text=True, check=True).stdout
            times[name].append(time.perf_counter() - s)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[f"{name} cpu"].append(after.ru_utime - before.ru_utime
                                        + after.ru_stime - before.ru_stime)
            if each is not None:
                each(out)
    return times


def _cli_rows(name: str, times: dict[str, list[float]], target: str) -> list[tuple]:
    this, cpu = times["this"], statistics.median(times["this cpu"])
    rows = [(name, f"{statistics.median(this) * 1000:.0f} ms",
             f"p90 {sorted(this)[int(len(this) * 0.9)] * 1000:.0f} ms, CPU {cpu * 1000:.0f} ms",
             target)]
    if "other" in times:
        other, other_cpu = (statistics.median(times[k]) for k in ("other", "other cpu"))
        rows.append(("  the other checkout, same runs interleaved", f"{other * 1000:.0f} ms",
                     f"CPU {other_cpu * 1000:.0f} ms; this/other "
                     f"{statistics.median(this) / other:.2f}, CPU {cpu / other_cpu:.2f}", "-"))
    return rows


def _typed_reply_row(queue: list[dict]) -> tuple:
    """CPU time of reading the squeue reply into typed jobs (in this process, median)."""
    from sn40l.scheduler.replies import job_from_wire

    samples = []
    for _ in range(21):
        s = time.process_time()
        [job_from_wire(r) for r in queue]
        samples.append(time.process_time() - s)
    per = statistics.median(samples) / max(1, len(queue))
    return ("squeue reply read into typed jobs (CPU)",
            f"{statistics.median(samples) * 1000:.1f} ms",
            f"{len(queue)} records, {per * 1e6:.0f} us each", "-")


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
