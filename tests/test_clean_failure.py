"""Clean failure of a CLI cluster, in real processes: `cluster down` leaves no process, no
/dev/shm segment and no Ray socket file; the death of socket rank 0 leaves `cluster status` and
the Slurm commands working and the node DOWN until `scontrol ... state=resume` revives it with
a socket that outlives the controller that revived it.

The cluster is a 1-node embedded cluster of its own (its own state directory), as a user
starts it; only segments and processes of this cluster are looked at, since other clusters may
run on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sn40l.collectives.shm import SHM_DIR, segment_owner

# Runs inside the cluster's Ray: an AllReduce over every socket, then the sockets' pids.
_DRIVER = r"""
import json, sys
import numpy as np
from sn40l.cluster import Cluster, ensure_ray
from sn40l.cluster.record import read_record
from sn40l.collectives import create_group
rec = read_record("default")
ensure_ray(rec["address"], auth=rec.get("auth"))
c = Cluster.connect("default")
if sys.argv[1] == "allreduce":
    create_group(c, list(range(c.world_size)), "g")
    out = c.call("allreduce", "g", np.ones(1 << 18, np.float32))
    assert all(float(o["result"]["data"][7]) == c.world_size for o in out)
elif sys.argv[1] == "kill-controller":
    import ray
    ray.kill(ray.get_actor("slurmctld:default", namespace="sn40l"), no_restart=True)
import ray
print(json.dumps([ray.get(h.identity.remote())["pid"] if h else None for h in c.handles]))
"""


def _sn40l(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "sn40l.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _driver(verb: str, env) -> list:
    res = subprocess.run([sys.executable, "-c", _DRIVER, verb], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _segments(pids) -> set[str]:
    """This cluster's segments in /dev/shm: those owned by its socket processes."""
    return {n for n in os.listdir(SHM_DIR)
            if (o := segment_owner(n)) is not None and o[1] in set(pids)}


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def _ray_socket_files(procs) -> list[str]:
    """The Unix socket files of this cluster's Ray session (named on the raylet's command line)."""
    for p in procs:
        for arg in p.cmdline():
            if arg.startswith("--raylet_socket_name="):
                sockets = Path(arg.split("=", 1)[1]).parent
                return [str(f) for f in sockets.iterdir()]
    return []


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, SN40L_STATE_DIR=str(tmp_path / "state"))
    yield env
    _sn40l("cluster", "down", env=env)


def test_up_allreduce_down_three_times_leaves_nothing(cli_env, tmp_path):
    """Three cycles; in the last one socket rank 0 dies first and is revived (see below)."""
    for cycle in range(3):
        up = _sn40l("cluster", "up", "--nodes", "1", env=cli_env)
        assert up.returncode == 0, up.stderr
        record = json.loads((tmp_path / "state" / "clusters" / "default.json").read_text())
        procs = _tree(record["daemon_pid"])  # the daemon, Ray's processes, the socket actors
        sockets = _driver("allreduce", cli_env)
        segments = _segments(sockets)  # a data segment and a doorbell per socket
        assert len(segments) == 16, f"cycle {cycle}: no segments to clean up? {segments}"
        assert len([s for s in segments if "-bell." in s]) == 8, segments
        assert {p.pid for p in procs} >= set(sockets)
        socket_files = _ray_socket_files(procs)
        assert socket_files, "Ray's socket files not found"
        if cycle == 2:
            sockets += _rank0_dies_and_is_revived(cli_env, sockets)
            procs += [psutil.Process(sockets[-8])]
        down = _sn40l("cluster", "down", env=cli_env)
        assert down.returncode == 0, down.stderr
        assert _segments(sockets) == set(), f"cycle {cycle}: segments left in {SHM_DIR}"
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append((p.pid, p.name()))
            except psutil.NoSuchProcess:
                pass
        assert left == [], f"cycle {cycle}: processes left behind: {left}"
        assert [f for f in socket_files if os.path.exists(f)] == []


def _rank0_dies_and_is_revived(cli_env, pids: list[int]) -> list[int]:
    """Kill socket rank 0: status, squeue, sinfo, scontrol and sacct keep working, the node
    goes DOWN, `state=resume` revives it, and the revived socket outlives the controller that
    revived it. Returns the sockets' pids after the revival."""
    os.kill(pids[0], signal.SIGKILL)

    status = _sn40l("cluster", "status", env=cli_env)
    assert "no cluster" not in status.stderr and "Traceback" not in status.stderr
    assert status.returncode == 1 and "up=7/8" in status.stdout
    assert status.stdout.splitlines()[2].split()[:4] == ["sn00", "0", "0", "down"]

    deadline = time.monotonic() + 30
    while True:  # the controller's health check sets the node DOWN
        sinfo = _sn40l("sinfo", "-h", "-o", "%T %N", env=cli_env)
        assert sinfo.returncode == 0 and "Traceback" not in sinfo.stderr, sinfo.stderr
        if sinfo.stdout.split()[0].startswith("down") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sinfo.stdout.split() == ["down*", "sn00"]
    for cmd in (["squeue"], ["scontrol", "show", "node", "sn00"], ["sacct", "-X"]):
        res = _sn40l(*cmd, env=cli_env)
        assert res.returncode == 0 and "Traceback" not in res.stderr, (cmd, res.stderr)
    assert "State=DOWN" in _sn40l("scontrol", "show", "node", "sn00", env=cli_env).stdout

    resume = _sn40l("scontrol", "update", "nodename=sn00", "state=resume", env=cli_env)
    assert resume.returncode == 0, resume.stderr
    assert _sn40l("sinfo", "-h", "-o", "%T", env=cli_env).stdout.split() == ["idle"]
    # the revived socket is detached: it outlives the controller that revived it
    revived = _driver("kill-controller", cli_env)
    assert revived[0] not in (None, pids[0]) and revived[1:] == pids[1:]
    status = _sn40l("cluster", "status", env=cli_env)
    assert status.returncode == 0 and "up=8/8" in status.stdout
    assert _sn40l("squeue", env=cli_env).returncode == 0  # a new controller takes over

    return revived
