"""`sn40l cluster up/status/down` as a user types them, in real processes.

The CLI starts its own embedded Ray in a daemon process; this test owns a state directory so
it never meets the session cluster's record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _sn40l(*args, env, timeout=180, cwd=None):
    return subprocess.run([sys.executable, "-m", "sn40l.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


@pytest.fixture
def cli_env(tmp_path):
    env = dict(os.environ, SN40L_STATE_DIR=str(tmp_path / "state"))
    yield env
    _sn40l("cluster", "down", env=env)  # whatever the test left running


def test_up_status_double_up_down(cli_env, tmp_path):
    up = _sn40l("cluster", "up", "--nodes", "2", env=cli_env)
    assert up.returncode == 0, up.stderr
    assert "2 nodes x 8 sockets" in up.stdout

    again = _sn40l("cluster", "up", "--nodes", "1", env=cli_env)
    assert again.returncode == 1
    assert "already running" in again.stderr and "sn40l cluster down" in again.stderr

    status = _sn40l("cluster", "status", env=cli_env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert "up=16/16" in lines[0]
    assert lines[1].split()[:5] == ["NODE", "SOCKET", "RANK", "STATE", "JOB"]
    rows = [ln.split() for ln in lines[2:]]
    assert len(rows) == 16 and rows[15][:4] == ["sn01", "7", "15", "up"]
    assert "520.0 MiB" in lines[2] and "64.0 GiB" in lines[2] and "1.5 TiB" in lines[2]

    trace_path = tmp_path / "trace.json"
    trace = _sn40l("cluster", "trace", "-o", str(trace_path), env=cli_env)
    assert trace.returncode == 0, trace.stderr
    assert "of 16 sockets" in trace.stdout
    assert json.loads(trace_path.read_text())["otherData"]["clock"] == "modeled (virtual) time"

    # the first Slurm command starts the scheduler's controller on this cluster
    sub = _sn40l("sbatch", "--parsable", "--gres=rdu:8", "-N", "2", "-W", "--wrap",
                 "echo $SN40L_SOCKETS", env=cli_env, cwd=tmp_path)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip()
    out = (tmp_path / f"slurm-{job}.out")
    assert out.read_text().strip() == ",".join(map(str, range(16)))
    acct = _sn40l("sacct", "-j", job, "-X", "-n", "-P", "-o", "State,ExitCode", env=cli_env)
    assert acct.stdout.strip() == "COMPLETED|0:0"

    down = _sn40l("cluster", "down", env=cli_env)
    assert down.returncode == 0 and "down" in down.stdout
    assert _sn40l("squeue", env=cli_env).returncode == 1  # the controller went with it
    gone = _sn40l("cluster", "status", env=cli_env)
    assert gone.returncode == 1 and "no cluster named 'default' is running" in gone.stderr


@pytest.mark.parametrize("args,needle", [
    (["--nodes", "0"], "--nodes 0 is out of range; allowed 1 to 256"),
    (["--sockets-per-node", "12"], "sockets per node 12 is not a layout of profile 'sn40l'; "
                                   "allowed: 8, 16"),
    (["--profile", "tpu"], "unknown profile 'tpu'"),
])
def test_bad_input_exits_nonzero_and_starts_nothing(cli_env, args, needle):
    res = _sn40l("cluster", "up", *args, env=cli_env, timeout=60)
    assert res.returncode == 1 and needle in res.stderr
    assert not os.path.exists(os.path.join(cli_env["SN40L_STATE_DIR"], "clusters",
                                           "default.json"))


def test_bad_profile_file_names_the_key(cli_env, tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\ndevice: y\ndescription: z\nnode: {}\n")
    res = _sn40l("cluster", "up", "--profile", str(bad), env=cli_env, timeout=60)
    assert res.returncode == 1 and "missing key 'node.sockets_per_node'" in res.stderr
