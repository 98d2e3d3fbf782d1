"""``sn40l srun``: launch parallel tasks.

Inside a job (``SLURM_JOB_ID`` set), ``srun -n K cmd`` starts K task processes on the job's
allocation as a new job step: block distribution over the step's nodes, each task with
``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID`` and the sockets of its node in
``SN40L_SOCKETS``; output forwarded (``-l`` prefixes the task id); the exit code is the highest
of the tasks'. The step is recorded for sacct (``<jobid>.<step>``).

Outside a job it first creates an allocation, as Slurm's srun does: the command becomes a batch
job running ``sn40l srun`` with the same task options, srun waits for it, streaming its output,
and exits with its exit code.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time

from sn40l.scheduler import hostlist
from sn40l.scheduler.connect import connect
from sn40l.scheduler.getopt import Opt, Parser
from sn40l.scheduler.job import tasks_per_node
from sn40l.scheduler.replies import Step, job_from_wire, step_to_wire
from sn40l.scheduler.types import JobState, Reason

SRUN_OPTS = [
    Opt("n", "ntasks", "yes", "ntasks"), Opt("N", "nodes", "yes", "nodes"),
    Opt("", "ntasks-per-node", "yes", "ntasks_per_node"),
    Opt("c", "cpus-per-task", "yes", "cpus_per_task"), Opt("l", "label", "no", "label"),
    Opt("J", "job-name", "yes", "job_name"), Opt("", "gres", "yes", "gres"),
    Opt("t", "time", "yes", "time"), Opt("p", "partition", "yes", "partition"),
    Opt("w", "nodelist", "yes", "nodelist"), Opt("x", "exclude", "yes", "exclude"),
    Opt("", "exclusive", "optional", "exclusive"), Opt("", "export", "yes", "export"),
    Opt("D", "chdir", "yes", "chdir"), Opt("", "mem", "yes", "mem"),
    Opt("A", "account", "yes", "account"), Opt("q", "qos", "yes", "qos"),
    Opt("u", "unbuffered", "no", "unbuffered"), Opt("Q", "quiet", "no", "quiet"),
    Opt("v", "verbose", "no", "verbose", many=True), Opt("h", "help", "no", "help"),
]
ALLOC_KEYS = ("ntasks", "nodes", "ntasks_per_node", "cpus_per_task", "job_name", "gres",
              "time", "partition", "nodelist", "exclude", "exclusive", "chdir", "mem",
              "account", "qos")
TASK_KEYS = ("ntasks", "nodes", "ntasks_per_node", "cpus_per_task", "label", "export")


def srun(argv: list[str]) -> int:
    opts, command, _ = Parser("srun", SRUN_OPTS, stop_at_operand=True).parse(argv)
    if opts.get("help"):
        print("Usage: srun [-n ntasks] [-N nodes] [--ntasks-per-node n] [-c cpus] [-l] "
              "[--gres=rdu:N] [-t time] [-p partition] command [args...]")
        return 0
    if not command:
        print("srun: fatal: No command given to execute.", file=sys.stderr)
        return 1
    if os.environ.get("SLURM_JOB_ID"):
        return _step(opts, command)
    return _allocate_and_run(opts, command)


def _flag(key: str, value) -> list[str]:
    flag = "--" + key.replace("_", "-")
    return [flag] if value is True else [f"{flag}={value}"]


def _allocate_and_run(opts: dict, command: list[str]) -> int:
    from sn40l.scheduler.client import ControllerError, state_dir
    from sn40l.scheduler.request import SubmitError, build_request

    inner = [sys.executable, "-m", "sn40l.cli", "srun"]
    for key in TASK_KEYS:
        if key in opts:
            inner += _flag(key, opts[key])
    out_dir = state_dir() / "srun"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / f"srun-{os.getpid()}-{time.time_ns()}.out"
    err_path = out_path.with_suffix(".err")  # the tasks' stderr stays stderr
    argv = [f"--output={out_path}", f"--error={err_path}",
            f"--job-name={opts.get('job_name') or command[0]}"]
    for key in ALLOC_KEYS:
        if key in opts and key != "job_name":
            argv += _flag(key, opts[key])
    argv.append("--wrap=exec " + shlex.join(inner + ["--"] + command))
    try:
        req = build_request(argv, prog="srun")
    except SubmitError as exc:
        print(f"srun: {exc}", file=sys.stderr)
        return exc.exit_code if exc.exit_code != 255 else 1
    client = connect("srun")
    try:
        job_id = client.call("submit", req=req)["job_id"]
    except ControllerError as exc:
        print(f"srun: error: Unable to allocate resources: {exc}", file=sys.stderr)
        return 1
    pos = err_pos = 0
    waited = False  # Slurm speaks only when the allocation had to wait
    try:
        while True:
            job = job_from_wire(client.call("show_job", job=str(job_id))[0])
            pending = job.state is JobState.PENDING
            # a job the scheduler has not looked at yet has Reason None: not a wait (yet)
            if pending and job.reason != Reason.NONE and not waited:
                waited = True
                if not opts.get("quiet"):
                    print(f"srun: job {job_id} queued and waiting for resources",
                          file=sys.stderr)
            elif not pending and waited and not opts.get("quiet"):
                print(f"srun: job {job_id} has been allocated resources", file=sys.stderr)
                waited = None
            pos = _drain(out_path, pos)
            err_pos = _drain(err_path, err_pos, sys.stderr)
            if job.is_final:
                time.sleep(0.05)
                _drain(out_path, pos)
                _drain(err_path, err_pos, sys.stderr)
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        client.call("cancel", jobs=[str(job_id)])
        print(f"srun: Job step aborted: cancelled job {job_id}", file=sys.stderr)
        return 130
    finally:
        for path in (out_path, err_path):
            try:
                path.unlink()
            except OSError:
                pass
    if job.state not in (JobState.COMPLETED, JobState.FAILED):  # FAILED: tasks reported
        print(f"srun: error: job {job_id} ended {job.state}", file=sys.stderr)
    code = job.exit_code or 0
    sig = job.exit_signal or 0
    return code if code else (128 + sig if sig else (0 if job.state is JobState.COMPLETED
                                                     else 1))


def _drain(path, pos: int, stream=None) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            data = f.read()
    except OSError:
        return pos
    if data:
        stream = stream or sys.stdout
        stream.buffer.write(data)
        stream.flush()
    return pos + len(data)


def _step(opts: dict, command: list[str]) -> int:
    from sn40l.scheduler.client import Client, ControllerError, ControllerUnavailable

    env = os.environ
    job_id = int(env["SLURM_JOB_ID"])
    nodes = hostlist.expand(env.get("SLURM_JOB_NODELIST", "localhost"))
    cpus_node = int(env.get("SLURM_CPUS_ON_NODE", "1"))
    cpt = int(opts.get("cpus_per_task") or env.get("SLURM_CPUS_PER_TASK") or 1)
    ntasks = int(opts.get("ntasks") or 0)
    n_nodes = int(opts["nodes"]) if opts.get("nodes") else None
    ntpn = int(opts["ntasks_per_node"]) if opts.get("ntasks_per_node") else None
    if not ntasks:
        if ntpn:
            ntasks = ntpn * (n_nodes or len(nodes))
        elif n_nodes:
            ntasks = n_nodes
        else:
            ntasks = int(env.get("SLURM_NTASKS", "1"))
    n_nodes = n_nodes or min(len(nodes), ntasks)
    if n_nodes > len(nodes):
        print(f"srun: error: Unable to create step for job {job_id}: Requested node "
              "configuration is not available", file=sys.stderr)
        return 1
    per_node = tasks_per_node(n_nodes, ntasks, ntpn)
    if per_node * cpt > cpus_node or ntasks > per_node * n_nodes:
        print(f"srun: error: Unable to create step for job {job_id}: More processors requested "
              "than permitted", file=sys.stderr)
        return 1
    step_nodes = nodes[:n_nodes]
    sockets = [s for s in env.get("SN40L_SOCKETS", "").split(",") if s]
    sockets_per_node = len(sockets) // max(1, len(nodes))
    label = bool(opts.get("label"))
    client = None
    step_id = None
    try:
        client = Client()
        step_id = client.call("step", job_id=job_id, step="next", data={})
    except (ControllerError, ControllerUnavailable):
        client = None
    start = time.time()
    procs = []
    lock = threading.Lock()
    base_env = dict(env)
    if opts.get("export") and opts["export"].upper() != "ALL":
        from sn40l.scheduler.request import export_env

        base_env = {k: v for k, v in env.items() if k.startswith(("SLURM_", "SN40L_"))}
        base_env.update(export_env(opts["export"], dict(env)))
    for task in range(ntasks):
        node_index = task // per_node
        local = task % per_node
        tenv = dict(base_env)
        tenv.update({
            "SLURM_PROCID": str(task), "SLURM_LOCALID": str(local),
            "SLURM_NODEID": str(node_index), "SLURMD_NODENAME": step_nodes[node_index],
            "SLURM_STEP_ID": str(step_id if step_id is not None else 0),
            "SLURM_STEPID": str(step_id if step_id is not None else 0),
            "SLURM_STEP_NUM_TASKS": str(ntasks), "SLURM_STEP_NUM_NODES": str(n_nodes),
            "SLURM_STEP_NODELIST": hostlist.compress(step_nodes),
            "SLURM_STEP_TASKS_PER_NODE": str(per_node) if n_nodes == 1
            else f"{per_node}(x{n_nodes})",
            "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks),
        })
        if sockets_per_node:
            tenv["SN40L_SOCKETS"] = ",".join(
                sockets[node_index * sockets_per_node:(node_index + 1) * sockets_per_node])
        try:
            p = subprocess.Popen(command, env=tenv, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as exc:
            print(f"srun: error: execve(): {command[0]}: {exc.strerror}", file=sys.stderr)
            for q in procs:
                q.kill()
            return 2
        procs.append(p)

    width = len(str(ntasks - 1))  # srun -l pads labels: " 0:" ... "11:"

    def pump(stream, out, task: int) -> None:
        for line in iter(stream.readline, b""):
            with lock:
                if label:
                    out.write(f"{task:>{width}}: ".encode())
                out.write(line)
                out.flush()

    pumps = []
    for task, p in enumerate(procs):
        for stream, out in ((p.stdout, sys.stdout.buffer), (p.stderr, sys.stderr.buffer)):
            t = threading.Thread(target=pump, args=(stream, out, task), daemon=True)
            t.start()
            pumps.append(t)
    codes = [p.wait() for p in procs]
    for t in pumps:
        t.join()
    for line in failure_lines(codes, [step_nodes[t // per_node] for t in range(ntasks)]):
        print(line, file=sys.stderr)
    worst = 0
    sig = 0
    for c in codes:
        if c < 0:
            sig = sig or -c
        worst = max(worst, c)
    if client is not None and step_id is not None:
        state = JobState.COMPLETED if worst == 0 and not sig else (
            JobState.CANCELLED if sig else JobState.FAILED)
        step = Step(str(step_id), os.path.basename(command[0]), state, start, time.time(),
                    worst, sig, ntasks, tuple(step_nodes), ntasks * cpt)
        try:
            client.call("step", job_id=job_id, step=str(step_id), data=step_to_wire(step))
        except (ControllerError, ControllerUnavailable):
            pass
    if sig and not worst:
        return 128 + sig
    return worst


def failure_lines(codes: list[int], task_nodes: list[str]) -> list[str]:
    """srun's report of failed tasks, one line per node and outcome, as Slurm prints it:
    ``srun: error: sn01: tasks 0-1: Exited with exit code 5`` (negative codes are signals)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for task, code in enumerate(codes):
        if code:
            groups.setdefault((task_nodes[task], code), []).append(task)
    lines = []
    for (node, code), tasks in sorted(groups.items(), key=lambda g: (-g[1][-1], g[0])):
        label = f"task {tasks[0]}" if len(tasks) == 1 else f"tasks {hostlist.ranges(tasks)}"
        what = (f"Exited with exit code {code}" if code > 0 else
                f"{_signal_name(-code)}")
        lines.append(f"srun: error: {node}: {label}: {what}")
    return lines


def _signal_name(signum: int) -> str:
    import signal

    try:
        return {signal.SIGKILL: "Killed", signal.SIGTERM: "Terminated"}.get(
            signum, signal.Signals(signum).name)
    except ValueError:
        return f"Signal {signum}"
