"""Launching a job's batch step: its run directory, environment and the request to the step
fork server (:mod:`sn40l.scheduler.stepd`).

The controller leases the job's sockets, then :func:`write_run` puts the script and
``launch.json`` in the run directory (the controller's alone: 0700, files 0600; the script
belongs to the job's user) and :func:`fork_step` asks the fork server, over a connection whose
two ends the kernel identifies to each other, to start the step as the job's uid/gid.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sn40l.scheduler import hostlist, private, stepd
from sn40l.scheduler.job import Job, tasks_per_node

LAUNCH_TIMEOUT_S = 30.0


def write_run(jobdir: Path, job: Job, env: dict) -> None:
    """The run directory of a job: its script (the job's user's, 0500) and ``launch.json``."""
    # stepsec: the run directory is the controller's alone (0700, files 0600); the
    # script belongs to the job's user, who gets it as an open file from the step
    private.private_dir(jobdir)
    req = job.req
    script = private.private_file(jobdir / "script", req.script, 0o500)
    if job.uid != os.geteuid() and os.geteuid() == 0:
        os.chown(script, job.uid, job.gid)
    # launch.json's keys are stepd's (sn40l.scheduler.stepd reads and checks them)
    launch = {"argv": [str(script)] + list(req.script_args or ()),
              "script": str(script),
              "env": env, "workdir": req.workdir,
              "stdout": out_path(job, "output"),
              "stderr": out_path(job, "error"), "stdin": req.input,
              "export": str(req.export),
              "open_mode": req.open_mode or "truncate"}
    private.private_file(jobdir / "launch.json", json.dumps(launch))


def fork_step(stepd_name: str, controller_address: str, jobdir: Path, uid: int, gid: int,
              lock: threading.RLock) -> None:
    """Ask the step fork server ``stepd_name`` to start the step in ``jobdir`` as
    ``uid``/``gid`` (starting the server first, under ``lock``, if it is not running).
    :class:`~sn40l.scheduler.stepd.ServerUntrusted` if another user holds the name."""
    for _attempt in range(3):
        try:
            stepd.request_step(stepd_name, str(jobdir), uid, gid, LAUNCH_TIMEOUT_S)
            return
        except (ConnectionRefusedError, FileNotFoundError):
            with lock:
                subprocess.run([sys.executable, "-m", "sn40l.scheduler.stepd", "--serve",
                                stepd_name, controller_address], check=True,
                               stdin=subprocess.DEVNULL, timeout=LAUNCH_TIMEOUT_S,
                               close_fds=True)
    raise RuntimeError("the step fork server does not answer")


def out_path(job: Job, which: str) -> str:
    """The absolute path of the job's ``output`` or ``error`` file (patterns expanded)."""
    req = job.req
    pattern = (req.error if which == "error" else None) or req.output or (
        "slurm-%A_%a.out" if job.array_job_id is not None else "slurm-%j.out")
    return os.path.join(req.workdir, expand_pattern(pattern, job))


def job_env(job: Job, ranks: list[int], *, cluster_name: str, state_dir: str,
            capability: str, ray_address: str, ray_auth: str,
            array_tasks: list[int]) -> dict:
    """The environment of the batch step: the user's (per --export) plus Slurm's and ours.
    ``array_tasks``: the task ids of the job's array (empty for a plain job)."""
    req = job.req
    nodes = sorted(job.alloc)
    n = len(nodes)
    tpn = tasks_per_node(n, req.ntasks, req.ntasks_per_node)
    cpus_node = job.alloc[nodes[0]].cpus
    env = dict(req.env or {})
    nodelist = hostlist.compress(nodes)
    env.update({
        "SLURM_JOB_ID": str(job.id), "SLURM_JOBID": str(job.id),
        "SLURM_JOB_NAME": job.name, "SLURM_JOB_USER": job.user,
        "SLURM_JOB_UID": str(job.uid), "SLURM_JOB_GID": str(job.gid),
        "SLURM_JOB_PARTITION": job.partition, "SLURM_CLUSTER_NAME": cluster_name,
        "SLURM_JOB_NUM_NODES": str(n), "SLURM_NNODES": str(n),
        "SLURM_JOB_NODELIST": nodelist, "SLURM_NODELIST": nodelist,
        "SLURM_NTASKS": str(req.ntasks), "SLURM_NPROCS": str(req.ntasks),
        "SLURM_TASKS_PER_NODE": _per_node(tpn, n),
        "SLURM_JOB_CPUS_PER_NODE": _per_node(cpus_node, n),
        "SLURM_CPUS_ON_NODE": str(cpus_node),
        "SLURM_SUBMIT_DIR": req.submit_dir,
        "SLURM_SUBMIT_HOST": req.submit_host or socket.gethostname(),
        "SLURMD_NODENAME": nodes[0], "SLURM_NODEID": "0", "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0", "SLURM_GTIDS": "0", "SLURM_PRIO_PROCESS": "0",
        "SLURM_JOB_QOS": req.qos or "normal",
        "SLURM_JOB_ACCOUNT": req.account or "",
        "SLURM_EXPORT_ENV": req.export,
        "SLURM_RESTART_COUNT": str(job.restarts),
        "ENVIRONMENT": "BATCH",
        "SN40L_JOB_ID": str(job.id), "SN40L_CLUSTER": cluster_name,
        "SN40L_SOCKETS": ",".join(map(str, ranks)),
        "SN40L_STATE_DIR": state_dir,
        "SN40L_LEASE": capability,  # stepsec: only the job's env holds it
    })
    if job.uid == os.geteuid():  # stepsec: Ray's credentials never leave their user
        env.update({"SN40L_RAY_ADDRESS": ray_address, "SN40L_RAY_AUTH": ray_auth})
    if req.ntasks_per_node:
        env["SLURM_NTASKS_PER_NODE"] = str(req.ntasks_per_node)
    if req.cpus_per_task:
        env["SLURM_CPUS_PER_TASK"] = str(req.cpus_per_task)
    if req.gres_rdu:
        env["SLURM_TRES_PER_NODE"] = f"gres/rdu:{req.gres_rdu}"
        env["SLURM_JOB_GRES"] = f"rdu:{req.gres_rdu}"
    if req.mem_mb:
        env["SLURM_MEM_PER_NODE"] = str(req.mem_mb)
    if job.time_limit is not None:
        env["SLURM_JOB_END_TIME"] = str(int(job.start_time + job.time_limit))
    env["SLURM_JOB_START_TIME"] = str(int(job.start_time))
    if job.array_job_id is not None:
        tasks = array_tasks
        env.update({"SLURM_ARRAY_JOB_ID": str(job.array_job_id),
                    "SLURM_ARRAY_TASK_ID": str(job.array_task_id),
                    "SLURM_ARRAY_TASK_COUNT": str(len(tasks)),
                    "SLURM_ARRAY_TASK_MIN": str(min(tasks)),
                    "SLURM_ARRAY_TASK_MAX": str(max(tasks)),
                    "SLURM_ARRAY_TASK_STEP": str(array_step(req.array_text))})
    return env


def array_step(text: str | None) -> int:
    """SLURM_ARRAY_TASK_STEP: the stride of a single ``lo-hi:step`` range, else 1 (as Slurm
    22.05 sets it for ``0-6:3`` and for ``1,3,7``)."""
    m = re.match(r"^\d+-\d+:(\d+)(%\d+)?$", (text or "").strip())
    return int(m.group(1)) if m else 1


def _per_node(value: int, n: int) -> str:
    return str(value) if n == 1 else f"{value}(x{n})"


def expand_pattern(pattern: str, job: Job) -> str:
    """Slurm's filename patterns: %j %x %A %a %N %u %n %t %%; ``%5j`` pads with zeros."""
    array_id = job.array_job_id
    values = {"j": str(job.id), "x": job.name, "u": job.user,
              "A": str(array_id if array_id is not None else job.id),
              "a": str(job.array_task_id) if array_id is not None else "4294967294",
              "N": job.batch_host or "", "n": "0", "t": "0", "s": "batch"}

    def sub(m: "re.Match") -> str:
        if m.group(0) == "%%":
            return "%"
        width, key = m.group(1), m.group(2)
        value = values[key]
        if width and value.isdigit():
            value = value.zfill(int(width))
        return value

    return re.sub(r"%%|%(\d*)([jxuAaNnts])", sub, pattern)
