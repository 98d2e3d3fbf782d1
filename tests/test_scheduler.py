"""The Slurm-like scheduler, driven as a user drives Slurm: real CLI processes, real batch
scripts, real files, a real controller actor and SQLite database on the session's Ray.

Expected outputs come from Slurm's documented behaviour (formats, exit codes, environment,
messages), not from our own code.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from sn40l.scheduler.client import Client
from sn40l.scheduler.controller import start_controller, stop_controller

CLUSTER = "sched"
PARTITIONS = [{"name": "batch", "nodes": "ALL", "default": True},
              {"name": "small", "nodes": "sn00", "max_time": "1:00", "max_nodes": 1}]


@pytest.fixture(scope="module")
def ctl(ray_session):
    from sn40l.cluster import Cluster

    cluster = Cluster.start(nodes=2, sockets_per_node=8, name=CLUSTER)
    start_controller(CLUSTER, partitions=PARTITIONS, kill_wait_s=3)
    yield cluster
    cluster.stop()


def sl(*args: str, cwd=None, user_env: dict | None = None, check: bool = False,
       stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``sn40l <args>`` as a user would, in its own process."""
    env = {**os.environ, "SN40L_CLUSTER": CLUSTER, **(user_env or {})}
    proc = subprocess.run([sys.executable, "-m", "sn40l.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, input=stdin)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def submit(*args: str, cwd) -> int:
    out = sl("sbatch", "--parsable", *args, cwd=cwd, check=True).stdout.strip()
    assert out.isdigit(), out
    return int(out)


def wait_state(job: int | str, states, timeout: float = 30.0) -> dict:
    states = (states,) if isinstance(states, str) else tuple(states)
    deadline = time.monotonic() + timeout
    with Client(CLUSTER) as c:
        while True:
            recs = c.call("show_job", job=str(job))
            if all(r["state"] in states for r in recs):
                return recs[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job}: {[r['state'] for r in recs]} not in {states}")
            time.sleep(0.05)


def acct(job: int, fields: str = "JobID,State,ExitCode") -> list[list[str]]:
    out = sl("sacct", "-j", str(job), "-P", "-n", "-o", fields, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def write_script(path, body: str) -> str:
    path.write_text(body)
    return str(path)


# -- running a job --------------------------------------------------------------------------
def test_batch_script_gets_slurm_environment_tasks_and_sockets(ctl, tmp_path):
    script = write_script(tmp_path / "run.sh", """#!/bin/bash
#SBATCH -J fromscript
#SBATCH --nodes=2
#SBATCH -n 4 --ntasks-per-node 2
#SBATCH --cpus-per-task=3
#SBATCH --gres=rdu:8
#SBATCH -o out-%j-%x.txt
#SBATCH --time=5:00
echo "job=$SLURM_JOB_ID name=$SLURM_JOB_NAME nnodes=$SLURM_NNODES ntasks=$SLURM_NTASKS"
echo "tpn=$SLURM_NTASKS_PER_NODE cpt=$SLURM_CPUS_PER_TASK nodes=$SLURM_JOB_NODELIST"
echo "submit=$SLURM_SUBMIT_DIR sockets=$SN40L_SOCKETS arg=$1 tasks=$SLURM_TASKS_PER_NODE"
echo "custom=$MY_VAR host=$SLURM_SUBMIT_HOST"
PY -m sn40l.cli srun -l bash -c 'echo $SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SN40L_SOCKETS' | sort
""".replace("PY", sys.executable))
    # the command line overrides the script's -J
    job = submit("-J", "cli-name", script, "first-arg", cwd=tmp_path)
    rec = wait_state(job, "COMPLETED")
    out = (tmp_path / f"out-{job}-cli-name.txt").read_text()
    assert f"job={job} name=cli-name nnodes=2 ntasks=4" in out
    assert "tpn=2 cpt=3 nodes=sn[00-01]" in out
    assert f"submit={tmp_path} sockets={','.join(map(str, range(16)))} arg=first-arg" in out
    assert "tasks=2(x2)" in out
    assert f"host={socket.gethostname()}" in out
    lines = [line for line in out.splitlines() if re.match(r"^\d: ", line)]
    node0, node1 = ",".join(map(str, range(8))), ",".join(map(str, range(8, 16)))
    assert lines == [f"0: 0 0 0 {node0}", f"1: 1 1 0 {node0}", f"2: 2 0 1 {node1}",
                     f"3: 3 1 1 {node1}"]
    rows = acct(job, "JobID,JobName,State,ExitCode,AllocTRES,NNodes")
    assert rows[0] == [str(job), "cli-name", "COMPLETED", "0:0",
                       "cpu=12,gres/rdu=16,node=2", "2"]
    assert [r[0] for r in rows] == [str(job), f"{job}.batch", f"{job}.0"]
    assert rows[2][2] == "COMPLETED"
    assert rec["alloc"]["sn00"]["cpus"] == 6  # 2 tasks x 3 cpus per node


def test_export_and_chdir_and_error_file(ctl, tmp_path):
    sub = tmp_path / "work"
    sub.mkdir()
    job = submit("--export=NONE,ONLY=1", "-D", "work", "-o", "o.txt", "-e", "e.txt",
                 "--wrap", "echo only=$ONLY home=${HOME:-unset} pwd=$(pwd); echo oops >&2",
                 cwd=tmp_path)
    wait_state(job, "COMPLETED")
    # --export=NONE gives the user's login HOME, as Slurm 22.05 does (observed on the peer)
    home = __import__("pwd").getpwuid(os.getuid()).pw_dir
    assert (sub / "o.txt").read_text().strip() == f"only=1 home={home} pwd={sub}"
    assert (sub / "e.txt").read_text().strip() == "oops"


@pytest.mark.parametrize("body,state,code", [
    ("exit 3", "FAILED", "3:0"),
    ("kill -TERM $$", "FAILED", "0:15"),
    ("true", "COMPLETED", "0:0"),
])
def test_exit_codes_are_recorded_as_slurm_prints_them(ctl, tmp_path, body, state, code):
    job = submit("--wrap", body, cwd=tmp_path)
    wait_state(job, state)
    assert acct(job)[0] == [str(job), state, code]


def test_time_limit_ends_the_job_with_timeout(ctl, tmp_path):
    t0 = time.monotonic()
    job = submit("-t", "0:02", "--wrap", "sleep 60", cwd=tmp_path)
    assert sl("squeue", "-j", str(job), "-h", "-o", "%l").stdout.strip() == "0:02"
    wait_state(job, "TIMEOUT", timeout=20)
    assert time.monotonic() - t0 < 15
    state, exit_code = acct(job)[0][1:]
    assert state == "TIMEOUT"


# -- scheduling -----------------------------------------------------------------------------
def test_dependencies_afterok_on_failed_job_is_never_satisfied(ctl, tmp_path):
    bad = submit("--wrap", "exit 1", cwd=tmp_path)
    wait_state(bad, "FAILED")
    ok = submit(f"--dependency=afterok:{bad}", "--wrap", "true", cwd=tmp_path)
    notok = submit(f"--dependency=afternotok:{bad}", "--wrap", "true", cwd=tmp_path)
    anyd = submit(f"-d", f"afterany:{bad}", "--wrap", "true", cwd=tmp_path)
    either = submit(f"--dependency=afterok:{bad}?afterany:{bad}", "--wrap", "true",
                    cwd=tmp_path)
    for j in (notok, anyd, either):
        wait_state(j, "COMPLETED")
    time.sleep(0.3)
    line = sl("squeue", "-j", str(ok), "-h").stdout
    assert "(DependencyNeverSatisfied)" in line and " PD " in line
    # a chain: the second waits for the first to finish successfully
    first = submit("--wrap", "sleep 1", cwd=tmp_path)
    second = submit(f"--dependency=afterok:{first}", "--wrap", "true", cwd=tmp_path)
    time.sleep(0.3)
    assert "(Dependency)" in sl("squeue", "-j", str(second), "-h").stdout
    wait_state(second, "COMPLETED")
    assert wait_state(first, "COMPLETED")["end_time"] <= wait_state(second, "COMPLETED")[
        "start_time"]
    sl("scancel", str(ok), check=True)


def test_singleton_runs_one_job_of_a_name_at_a_time(ctl, tmp_path):
    a = submit("-J", "single", "--dependency=singleton", "--wrap", "sleep 1", cwd=tmp_path)
    b = submit("-J", "single", "--dependency=singleton", "--wrap", "true", cwd=tmp_path)
    ra, rb = wait_state(a, "COMPLETED"), wait_state(b, "COMPLETED")
    assert rb["start_time"] >= ra["end_time"]


def test_array_with_throttle(ctl, tmp_path):
    job = submit("-a", "0-5%2", "-o", "arr-%A_%a.out", "--wrap",
                 "echo task=$SLURM_ARRAY_TASK_ID of=$SLURM_ARRAY_JOB_ID; sleep 1", cwd=tmp_path)
    seen_running = 0
    collapsed = False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        rows = sl("squeue", "-r", "-h", "-o", "%i %t %r", "-j", str(job)).stdout.split()
        running = sl("squeue", "-r", "-h", "-t", "R", "-o", "%i").stdout.split()
        running = [r for r in running if r.startswith(f"{job}_")]
        seen_running = max(seen_running, len(running))
        assert len(running) <= 2
        default = sl("squeue", "-h", "-o", "%i %r", "-j", str(job)).stdout
        if re.search(rf"{job}_\[\d.*%2\] JobArrayTaskLimit", default):
            collapsed = True
        if not rows:
            break
        time.sleep(0.2)
    assert seen_running == 2 and collapsed
    for k in range(6):
        assert (tmp_path / f"arr-{job}_{k}.out").read_text().strip() == f"task={k} of={job}"
    states = acct(job, "JobID,State")
    assert sorted(r[0] for r in states if "." not in r[0]) == sorted(
        f"{job}_{k}" for k in range(6))


def test_backfill_starts_a_short_job_in_the_gap_before_a_wide_one(ctl, tmp_path):
    blocker = submit("-w", "sn00", "--gres=rdu:8", "-t", "0:08", "--wrap", "sleep 8",
                     cwd=tmp_path)
    wait_state(blocker, "RUNNING")
    wide = submit("-N", "2", "--gres=rdu:8", "-t", "0:10", "--wrap", "true", cwd=tmp_path)
    long_ = submit("--gres=rdu:8", "-t", "0:30", "--wrap", "sleep 1", cwd=tmp_path)
    short = submit("--gres=rdu:8", "-t", "0:03", "--wrap", "sleep 1", cwd=tmp_path)
    rec = wait_state(short, ("RUNNING", "COMPLETED"), timeout=6)
    assert rec["alloc"] and list(rec["alloc"]) == ["sn01"]
    out = sl("squeue", "-h", "-o", "%i %t %r", "-j", f"{wide},{long_}").stdout.splitlines()
    assert f"{wide} PD Resources" in out
    assert f"{long_} PD Priority" in out  # would delay the wide job's reservation
    sl("scancel", str(blocker), str(wide), str(long_), check=True)
    wait_state(short, "COMPLETED")


def test_partition_limits_and_test_only(ctl, tmp_path):
    job = submit("-p", "small", "-t", "5:00", "--wrap", "true", cwd=tmp_path)
    time.sleep(0.3)
    assert "(PartitionTimeLimit)" in sl("squeue", "-h", "-j", str(job)).stdout
    sl("scancel", str(job), check=True)
    p = sl("sbatch", "--test-only", "-p", "small", "-t", "0:30", "--wrap", "true",
           cwd=tmp_path)
    assert p.returncode == 0
    assert re.search(r"sbatch: Job .* to start at \d{4}-\d\d-\d\dT[\d:]+ using 1 processors "
                     r"on nodes sn00 in partition small", p.stderr), p.stderr
    before = Client(CLUSTER).call("queue", all_states=True)
    assert not any(j["name"] == "wrap" and j["submit_time"] > time.time() - 0.5
                   for j in before)


def test_hold_release_requeue_and_cancel(ctl, tmp_path):
    job = submit("-H", "-J", "held", "--wrap", "echo run $SLURM_RESTART_COUNT; sleep 30",
                 cwd=tmp_path)
    time.sleep(0.2)
    assert "(JobHeldUser)" in sl("squeue", "-h", "-j", str(job)).stdout
    sl("scontrol", "release", str(job), check=True)
    wait_state(job, "RUNNING")
    sl("scontrol", "requeue", str(job), check=True)
    deadline = time.monotonic() + 20
    while Client(CLUSTER).call("show_job", job=str(job))[0]["restarts"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    wait_state(job, "RUNNING", timeout=20)
    shown = sl("scontrol", "show", "job", str(job), check=True).stdout
    assert "Restarts=1" in shown and "JobState=RUNNING" in shown
    sl("scancel", "-n", "held", check=True)
    wait_state(job, "CANCELLED")
    assert acct(job, "JobID,State")[0][1].startswith("CANCELLED")
    # Slurm 22.05: an unknown or finished id is skipped silently (exit 0); a malformed one
    # is an error
    unknown = sl("scancel", "999999", str(job))
    assert (unknown.returncode, unknown.stderr) == (0, "")
    bad = sl("scancel", "abc")
    assert (bad.returncode, bad.stderr) == (1, "scancel: error: Invalid job id abc\n")


# -- views --------------------------------------------------------------------------------
def test_default_formats_follow_slurm(ctl, tmp_path):
    job = submit("-J", "a-very-long-job-name", "--gres=rdu:2", "-t", "1:00:00", "--wrap",
                 "sleep 5", cwd=tmp_path)
    wait_state(job, "RUNNING")
    out = sl("squeue", check=True).stdout.splitlines()
    assert out[0] == ("             JOBID PARTITION     NAME     USER ST       TIME  NODES "
                      "NODELIST(REASON)")
    mine = [line for line in out if line.split()[0] == str(job)]
    assert len(mine) == 1
    assert re.match(rf"^ +{job} +batch a-very-l +root +R +\d:\d\d +1 sn0[01]$", mine[0])
    long_ = sl("squeue", "-l", "-j", str(job), check=True).stdout.splitlines()
    assert long_[1].split() == ["JOBID", "PARTITION", "NAME", "USER", "STATE", "TIME",
                                "TIME_LIMI", "NODES", "NODELIST(REASON)"]
    assert "RUNNING" in long_[2] and "1:00:00" in long_[2]
    info = sl("sinfo", check=True).stdout.splitlines()
    assert info[0].split() == ["PARTITION", "AVAIL", "TIMELIMIT", "NODES", "STATE",
                               "NODELIST"]
    assert any(line.split()[:3] == ["batch*", "up", "infinite"] for line in info[1:])
    assert any(line.split()[:3] == ["small", "up", "1:00"] for line in info[1:])
    nodes = sl("sinfo", "-N", "-h", "-p", "batch", check=True).stdout.split("\n")
    assert [n.split()[0] for n in nodes if n] == ["sn00", "sn01"]
    acc = sl("sacct", "-j", str(job), check=True).stdout.splitlines()
    assert acc[0].split() == ["JobID", "JobName", "Partition", "Account", "AllocCPUS",
                              "State", "ExitCode"]
    assert acc[1].startswith("------------ ---------- ---------- ")
    assert acc[2].split()[:3] == [str(job), "a-very-lo+", "batch"]
    shown = sl("scontrol", "show", "job", str(job), check=True).stdout
    for field in (f"JobId={job} JobName=a-very-long-job-name", "JobState=RUNNING",
                  "TimeLimit=01:00:00", "TresPerNode=gres:rdu:2", "Partition=batch",
                  f"AllocNode:Sid=localhost:{os.getsid(0)}"):  # sbatch ran in our session
        assert field in shown
    node = sl("scontrol", "show", "node", "sn00", check=True).stdout
    assert "NodeName=sn00" in node and "Gres=rdu:8" in node and "CPUTot=128" in node
    assert sl("scontrol", "show", "hostnames", "sn[00-01]").stdout.split() == ["sn00", "sn01"]
    sl("scancel", str(job), check=True)


# -- bad input -------------------------------------------------------------------------------
def test_bad_input_is_refused_like_slurm_and_loses_nothing(ctl, tmp_path):
    with Client(CLUSTER) as c:
        before = len(c.call("queue", all_states=True))
    p = sl("sbatch", "--bogus", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 255 and "sbatch: unrecognized option '--bogus'" in p.stderr
    p = sl("sbatch", "-t", "1:2:3:4", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 255 and "sbatch: error: Invalid --time specification" in p.stderr
    p = sl("sbatch", "--gres=rdu:9", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 1
    assert ("sbatch: error: Batch job submission failed: Requested node configuration is not "
            "available") in p.stderr
    p = sl("sbatch", "-N", "3", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 1 and "Requested node configuration is not available" in p.stderr
    (tmp_path / "noshebang.sh").write_text("echo hi\n")
    p = sl("sbatch", "noshebang.sh", cwd=tmp_path)
    assert p.returncode == 1 and "This does not look like a batch script" in p.stderr
    p = sl("sbatch", "missing.sh", cwd=tmp_path)
    assert p.returncode == 1 and "sbatch: error: Unable to open file missing.sh" in p.stderr
    p = sl("sbatch", "--dependency=afterok:987654", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 1 and "Job dependency problem" in p.stderr
    p = sl("sbatch", "-p", "nosuch", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 1 and "Invalid partition name specified" in p.stderr
    p = sl("sbatch", "--array=5-1", "--wrap", "true", cwd=tmp_path)
    assert p.returncode == 255 and "Invalid job array specification" in p.stderr
    p = sl("squeue", "--nope")
    assert p.returncode == 1 and "squeue: unrecognized option '--nope'" in p.stderr
    p = sl("sacct", "-o", "JobID,Bogus")
    assert p.returncode == 1 and 'Invalid field requested: "Bogus"' in p.stderr
    with Client(CLUSTER) as c:
        assert len(c.call("queue", all_states=True)) == before  # nothing half-submitted
    assert sl("squeue").returncode == 0  # and the controller is still serving


def test_a_user_cannot_touch_another_users_job(ctl, tmp_path):
    job = submit("-H", "--wrap", "true", cwd=tmp_path)

    def as_nobody(fn) -> object:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child becomes another OS user, then talks to the controller
            try:
                os.setgid(65534)
                os.setuid(65534)
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                result = {"exception": f"{type(exc).__name__}: {exc}"}
            os.write(w, json.dumps(result).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.waitpid(pid, 0)
        return json.loads(data)

    def attempt():
        with Client(CLUSTER) as c:
            out = {"whoami": c.ping()["uid"]}
            out["cancel"] = c.call("cancel", jobs=[str(job)])["errors"]
            out["hold"] = c.call("hold", jobs=[str(job)], release=True)
            out["queue"] = [j["id"] for j in c.call("queue", all_states=True)]
            try:
                c.call("show_job", job=str(job))
                out["show"] = "allowed"
            except Exception as exc:  # noqa: BLE001
                out["show"] = str(exc)
            req = {"name": "mine", "script": "#!/bin/sh\ntrue\n", "script_args": [],
                   "nodes": 1, "nodes_max": 1, "ntasks": 1, "gres_rdu": 0,
                   "time_limit": None, "time_set": False, "workdir": "/tmp",
                   "submit_dir": "/tmp", "hold": True, "env": {}, "requeue": True}
            out["own"] = c.call("submit", req=req)["job_id"]
            out["own_cancel"] = c.call("cancel", jobs=[str(out["own"])])["errors"]
        return out

    out = as_nobody(attempt)
    assert out["whoami"] == 65534
    assert out["cancel"] == [f"Kill job error on job id {job}: Access/permission denied"]
    assert out["hold"] == [f"Access/permission denied for job {job}"]
    assert job not in out["queue"]
    assert "Access/permission denied" in out["show"]
    assert out["own_cancel"] == []
    own = wait_state(out["own"], "CANCELLED")
    assert own["user"] in ("nobody", "65534") and own["uid"] == 65534
    assert wait_state(job, "PENDING")["held"] == "user"  # untouched by the other user
    sl("scancel", str(job), check=True)  # its owner may


# -- sockets and sn40l run --------------------------------------------------------------------
def test_job_sockets_are_leased_and_sn40l_run_uses_exactly_them(ctl, tmp_path):
    from sn40l.errors import SocketBusyError

    job = submit("--gres=rdu:8", "-w", "sn01", "-o", "run.out", "-e", "run.err", "--wrap",
                 f"{sys.executable} -m sn40l.cli run tiny --tp 8 --seq-len 64 --prompt-ids 1,2,3 "
                 "--max-new-tokens 2 --json; echo sockets=$SN40L_SOCKETS; sleep 3",
                 cwd=tmp_path)
    wait_state(job, "RUNNING")
    deadline = time.monotonic() + 60
    while "sockets=" not in ((tmp_path / "run.out").read_text()
                             if (tmp_path / "run.out").exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    import numpy as np
    import ray

    with pytest.raises(SocketBusyError, match=f"allocated to job {job}"):
        ray.get(ctl.socket(8).write.remote("intruder", "hbm", np.zeros(4, np.float32)))
    wait_state(job, "COMPLETED", timeout=30)
    text = (tmp_path / "run.out").read_text()
    result = json.loads(text[:text.index("sockets=")])
    assert result["sockets"] == list(range(8, 16))
    assert f"sockets={','.join(map(str, range(8, 16)))}" in text
    assert len(result["tokens"]) == 2
    assert ray.get(ctl.socket(8).leased_to.remote()) is None  # released at the end
    assert ray.get(ctl.socket(8).regions.remote(tier="hbm")) == []  # and left clean


# -- restart --------------------------------------------------------------------------------
def test_controller_restart_loses_nothing(ctl, tmp_path):
    done = submit("--wrap", "true", cwd=tmp_path)
    wait_state(done, "COMPLETED")
    queued = submit("-H", "-J", "keepme", "--wrap", "true", cwd=tmp_path)
    running = submit("-o", "r.out", "--wrap", "sleep 3; echo survived", cwd=tmp_path)
    wait_state(running, "RUNNING")
    assert stop_controller(CLUSTER)
    assert sl("squeue").returncode == 1  # nobody answers now
    start_controller(CLUSTER, partitions=PARTITIONS, kill_wait_s=3)
    assert wait_state(queued, "PENDING")["reason"] == "JobHeldUser"
    assert acct(done)[0] == [str(done), "COMPLETED", "0:0"]
    assert acct(done, "JobID,Cluster")[0] == [str(done), CLUSTER]  # Slurm's ClusterName
    wait_state(running, "COMPLETED", timeout=20)
    assert (tmp_path / "r.out").read_text().strip() == "survived"
    nxt = submit("--wrap", "true", cwd=tmp_path)
    assert nxt > running  # ids continue, never reused
    sl("scancel", str(queued), check=True)


# -- node failure -----------------------------------------------------------------------------
def test_dead_socket_fails_the_node_and_requeues_its_job(make_cluster, tmp_path):
    import ray

    name = "schedfail"
    cluster = make_cluster(nodes=2, sockets_per_node=8, name=name)
    start_controller(name, kill_wait_s=2)

    def cli(*args):
        return sl(*args, user_env={"SN40L_CLUSTER": name}, cwd=tmp_path)

    job = int(cli("sbatch", "--parsable", "-w", "sn00", "--gres=rdu:8", "-o", "f.out",
                  "--wrap", "echo start $SLURM_RESTART_COUNT $SLURMD_NODENAME; sleep 60"
                  ).stdout)
    deadline = time.monotonic() + 30
    while not (tmp_path / "f.out").exists() or "start" not in (tmp_path / "f.out").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ray.kill(cluster.socket(3), no_restart=True)
    t0 = time.monotonic()
    with Client(name) as c:
        while True:
            rec = c.call("show_job", job=str(job))[0]
            if rec["restarts"] >= 1:
                break
            assert time.monotonic() - t0 < 30, rec
            time.sleep(0.1)
    assert rec["state"] == "PENDING"  # requeued; its only allowed node is down
    deadline = time.monotonic() + 10
    while "sn00 down*" not in (info := cli("sinfo", "-N", "-h", "-o", "%N %t").stdout.split("\n")):
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert "sn01 idle" in info
    reason = cli("sinfo", "-R", "-h").stdout
    assert "Not responding" in reason and "sn00" in reason
    deadline = time.monotonic() + 10  # requeued jobs wait a moment (BeginTime), as in Slurm
    while "ReqNodeNotAvail, UnavailableNodes:sn00" not in cli("squeue", "-h", "-o", "%r", "-j",
                                                              str(job)).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # the administrator brings it back: its sockets are restarted and answer again
    p = cli("scontrol", "update", "nodename=sn00", "state=resume")
    assert p.returncode == 0, p.stderr
    with Client(name) as c:
        deadline = time.monotonic() + 30
        while c.call("show_job", job=str(job))[0]["state"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    revived = ray.get_actor(f"{name}:n0s3", namespace="sn40l")
    deadline = time.monotonic() + 30  # RUNNING is recorded before the launch leases the sockets
    while ray.get(revived.ping.remote())["job"] != job:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    deadline = time.monotonic() + 30  # RUNNING is recorded at launch; the script echoes after
    while "start 1 sn00" not in (tmp_path / "f.out").read_text():
        assert time.monotonic() < deadline, (tmp_path / "f.out").read_text()
        time.sleep(0.1)
    cli("scancel", str(job))
    with Client(name) as c:
        deadline = time.monotonic() + 30
        while c.call("show_job", job=str(job))[0]["state"] != "CANCELLED":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert "start 1 sn00" in (tmp_path / "f.out").read_text()


def test_no_requeue_job_ends_node_fail(make_cluster, tmp_path):
    import ray

    name = "schedfail2"
    cluster = make_cluster(nodes=1, sockets_per_node=8, name=name)
    start_controller(name, kill_wait_s=2)
    with Client(name) as c:
        job = int(c.submit(wrap="echo up; sleep 60", gres="rdu:2", no_requeue=True,
                           chdir=str(tmp_path), output="nr.out"))
        deadline = time.monotonic() + 30
        while not (tmp_path / "nr.out").exists() or "up" not in (tmp_path / "nr.out").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ray.kill(cluster.socket(0), no_restart=True)
        rec = c.wait(job, timeout_s=30)
    assert rec["state"] == "NODE_FAIL" and rec["restarts"] == 0


def test_begin_exclusive_exclude_drain_and_recorded_options(ctl, tmp_path):
    later = submit("--begin", "now+60", "--wrap", "true", cwd=tmp_path)
    time.sleep(0.3)
    assert "(BeginTime)" in sl("squeue", "-h", "-j", str(later)).stdout
    sl("scancel", str(later), check=True)
    excl = submit("--exclusive", "-x", "sn00", "--mem=4G", "-A", "research", "-q", "high",
                  "--mail-type=END", "--mail-user=ada@example.org", "--comment=nightly",
                  "--wrap", "sleep 3", cwd=tmp_path)
    rec = wait_state(excl, "RUNNING")
    assert list(rec["alloc"]) == ["sn01"]  # -x sn00
    assert rec["alloc"]["sn01"]["cpus"] == 128 and len(rec["alloc"]["sn01"]["sockets"]) == 8
    assert "sn01 alloc" in sl("sinfo", "-N", "-h", "-o", "%N %t").stdout  # whole node
    row = acct(excl, "Account,QOS,Comment,ReqMem")[0]
    assert row == ["research", "high", "nightly", "4096M"]
    shown = sl("scontrol", "show", "job", str(excl), check=True).stdout
    assert "Account=research QOS=high" in shown and "OverSubscribe=NO" in shown
    sl("scancel", str(excl), check=True)
    # drain: the node finishes its work and takes no new jobs until resumed
    p = sl("scontrol", "update", "nodename=sn00", "state=drain")
    assert p.returncode == 1 and "You must specify a reason" in p.stderr
    sl("scontrol", "update", "nodename=sn00", "state=drain", "reason=maintenance", check=True)
    job = submit("-w", "sn00", "--wrap", "true", cwd=tmp_path)
    time.sleep(0.3)
    assert "ReqNodeNotAvail, UnavailableNodes:sn00" in sl("squeue", "-h", "-o", "%r", "-j",
                                                          str(job)).stdout
    assert "sn00 drain" in sl("sinfo", "-N", "-h", "-o", "%N %t").stdout
    assert "maintenance" in sl("sinfo", "-R").stdout
    sl("scontrol", "update", "nodename=sn00", "state=resume", check=True)
    wait_state(job, "COMPLETED")


# -- golden files: the same jobs as on real Slurm 22.05 (tests/golden/slurm/record.sh) --------
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "slurm")


def _golden_ids() -> dict[str, str]:
    with open(os.path.join(GOLDEN, "ids.txt")) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


def normalise(text: str, ids: dict[str, str], workdir: str, nodes: dict[str, str],
              ours_part: str, partition: str = "rdu") -> list[str]:
    """What may differ between Slurm and us, made equal; one token list per line.

    Job ids -> <name>; timestamps -> T; squeue's elapsed TIME and RunTime= -> E; Priority=,
    Account= (no accounting here), AllocNode:Sid= (a pid), Scheduler= (Main/Backfill) -> *;
    the submit directory -> WORK; node and partition names -> Slurm's; the memory a pending
    job would get (``mem=NM,`` in TRES=, a whole node's) dropped; node hardware (CPUS, S:C:T,
    MEMORY of sinfo -N -l) -> H. Columns are compared as whitespace-separated tokens because
    node names differ in length."""
    for ours, theirs in nodes.items():
        text = text.replace(ours, theirs)
    text = text.replace(workdir, "WORK")
    for name, job_id in ids.items():
        text = re.sub(rf"(^\s*|JobId=|ArrayJobId=|afterok:|slurm-){job_id}(?=\s|$|\.|\()",
                      rf"\g<1><{name}>", text, flags=re.M)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "T", text)
    text = re.sub(r"\bRunTime=\S+", "RunTime=E", text)
    text = re.sub(r"\b(Priority|Account|AllocNode:Sid|Scheduler)=\S+", r"\1=*", text)
    text = re.sub(r"\bmem=\d+M,", "", text)
    lines = []
    for line in text.splitlines():
        tokens = line.split()
        tokens = ["E" if re.fullmatch(r"0:0\d", t) else t for t in tokens]
        tokens = [partition + t[len(ours_part):] if t.rstrip("*") == ours_part
                  and not (i and tokens[i - 1].endswith(".batch")) else t
                  for i, t in enumerate(tokens)]  # the partition, not the step "batch"
        if len(tokens) == 11 and re.fullmatch(r"\d+:\d+:\d+", tokens[5]):  # sinfo -N -l row
            tokens[4] = tokens[5] = tokens[6] = "H"
        if tokens:
            lines.append(" ".join(tokens))
    return lines


def assert_golden(name: str, ours: str, ids: dict[str, str], workdir: str) -> None:
    nodes = {"sn[00-01]": "node[1-2]", "sn00": "node1", "sn01": "node2",
             "Partition=batch": "Partition=rdu"}
    with open(os.path.join(GOLDEN, f"{name}.txt")) as f:
        theirs = f.read()
    golden_ids = _golden_ids()
    want = normalise(theirs, {k: v for k, v in golden_ids.items() if k != "workdir"},
                     golden_ids["workdir"], {}, "rdu")
    got = normalise(ours, ids, workdir, nodes, "batch")
    if got != want:
        import difflib

        diff = "\n".join(difflib.unified_diff(want, got, f"slurm 22.05 ({name}.txt)", "sn40l",
                                              lineterm=""))
        raise AssertionError(f"{name} differs from real Slurm (normalised, token-wise); "
                             f"re-record with tests/golden/slurm/record.sh if Slurm is the one "
                             f"that changed:\n{diff}")


def test_outputs_match_real_slurm_golden_files(ctl, tmp_path):
    blocker = submit("-J", "blocker", "-N2", "--gres=rdu:8", "-t", "10", "--wrap", "sleep 30",
                     cwd=tmp_path)
    waits = submit("-J", "waits", "--gres=rdu:8", "-d", f"afterok:{blocker}", "-o",
                   "sub/x.out", "--wrap", "true", cwd=tmp_path)
    wait_state(blocker, "RUNNING")
    ids = {"blocker": str(blocker), "waits": str(waits)}
    work = str(tmp_path)
    jobs = f"{blocker},{waits}"
    assert_golden("squeue", sl("squeue", "-j", jobs, check=True).stdout, ids, work)
    long = sl("squeue", "-l", "-j", jobs, check=True).stdout.split("\n", 1)[1]
    assert_golden("squeue-long", long, ids, work)
    assert_golden("sinfo", sl("sinfo", "-p", "batch", check=True).stdout, ids, work)
    nodes_long = sl("sinfo", "-N", "-l", "-p", "batch", check=True).stdout.split("\n", 1)[1]
    assert_golden("sinfo-nodes-long", nodes_long, ids, work)
    assert_golden("scontrol-running", sl("scontrol", "show", "job", str(blocker),
                                         check=True).stdout, ids, work)
    assert_golden("scontrol-pending", sl("scontrol", "show", "job", str(waits),
                                         check=True).stdout, ids, work)
    sl("scancel", str(blocker), str(waits), check=True)
    failed = submit("-J", "fails", "-o", "out.txt", "--wrap", "exit 3", cwd=tmp_path)
    wait_state(failed, "FAILED")
    ids = {"failed": str(failed)}
    assert_golden("scontrol-failed", sl("scontrol", "show", "job", str(failed),
                                        check=True).stdout, ids, work)
    assert_golden("sacct-failed", sl("sacct", "-j", str(failed), "-o",
                                     "JobID,JobName,Partition,State,ExitCode",
                                     check=True).stdout, ids, work)


# -- Slurm behaviour that users' scripts depend on ------------------------------------------
def test_squeue_forgets_finished_jobs_and_names_valid_states(ctl, tmp_path):
    job = submit("--wrap", "true", cwd=tmp_path)
    wait_state(job, "COMPLETED")
    # the common wait loop `while squeue -h -j $id | grep -q .` ends
    assert sl("squeue", "-h", "-j", str(job), check=True).stdout == ""
    assert str(job) in sl("squeue", "-h", "-t", "all", "-j", str(job), check=True).stdout
    bad = sl("squeue", "-t", "bogus")
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "squeue: error: Invalid job state specified: bogus",
        "squeue: error: Valid job states include: PENDING,RUNNING,SUSPENDED,COMPLETED,"
        "CANCELLED,FAILED,TIMEOUT,NODE_FAIL,PREEMPTED,BOOT_FAIL,DEADLINE,OUT_OF_MEMORY,"
        "COMPLETING,CONFIGURING,RESIZING,RESV_DEL_HOLD,REQUEUED,REQUEUE_FED,REQUEUE_HOLD,"
        "REVOKED,SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED"]


def test_sbatch_environment_and_directive_precedence(ctl, tmp_path):
    script = write_script(tmp_path / "p.sh", "#!/bin/sh\n  #SBATCH -J indented\n"
                                             "#SBATCH -J directive\n#SBATCH -t 5\ntrue\n")
    env_job = sl("sbatch", "--parsable", "-H", script, cwd=tmp_path, check=True,
                 user_env={"SBATCH_JOB_NAME": "fromenv", "SBATCH_TIMELIMIT": "7"})
    cli_job = sl("sbatch", "--parsable", "-H", "-J", "fromcli", script, cwd=tmp_path,
                 check=True, user_env={"SBATCH_JOB_NAME": "fromenv"})
    plain = sl("sbatch", "--parsable", "-H", script, cwd=tmp_path, check=True)
    shown = {name: sl("scontrol", "show", "job", p.stdout.strip(), check=True).stdout
             for name, p in (("env", env_job), ("cli", cli_job), ("plain", plain))}
    assert "JobName=fromenv" in shown["env"] and "TimeLimit=00:07:00" in shown["env"]
    assert "JobName=fromcli" in shown["cli"] and "TimeLimit=00:05:00" in shown["cli"]
    assert "JobName=directive" in shown["plain"]  # the indented line is not a directive
    bad = sl("sbatch", "-H", "--wrap", "true", user_env={"SBATCH_PARTITION": "nosuch"},
             cwd=tmp_path)
    assert bad.returncode == 1 and "Invalid partition name specified" in bad.stderr
    sl("scancel", env_job.stdout.strip(), cli_job.stdout.strip(), plain.stdout.strip(),
       check=True)


def test_test_only_gives_a_job_id_and_submits_nothing(ctl, tmp_path):
    out = sl("sbatch", "--test-only", "--wrap", "true", cwd=tmp_path, check=True)
    m = re.fullmatch(r"sbatch: Job (\d+) to start at \S+ using 1 processors on nodes sn0[01] "
                     r"in partition batch\n", out.stderr)
    assert m, out.stderr
    assert sl("squeue", "-h", "-t", "all", "-j", m.group(1)).stdout == ""
    assert submit("-H", "--wrap", "true", cwd=tmp_path) == int(m.group(1)) + 1


def test_missing_output_directory_fails_the_launch_like_slurm(ctl, tmp_path):
    job = submit("-o", "no/such/dir/out.txt", "--wrap", "echo hi", cwd=tmp_path)
    rec = wait_state(job, "FAILED")
    assert rec["reason"] == "JobLaunchFailure"
    shown = sl("scontrol", "show", "job", str(job), check=True).stdout
    assert "ExitCode=0:53" in shown
    assert acct(job) == [[str(job), "FAILED", "0:53"], [f"{job}.batch", "CANCELLED", "0:53"]]


def test_time_limit_and_signal_kills_cancel_the_batch_step(ctl, tmp_path):
    timed = submit("-t", "0:01", "--wrap", "sleep 60", cwd=tmp_path)
    killed = submit("--wrap", "kill -9 $$", cwd=tmp_path)
    rec = wait_state(killed, "FAILED")
    assert rec["reason"] == "JobLaunchFailure"  # what Slurm 22.05 says for a signal death
    assert acct(killed) == [[str(killed), "FAILED", "0:9"],
                            [f"{killed}.batch", "CANCELLED", "0:9"]]
    rec = wait_state(timed, "TIMEOUT", timeout=30)
    assert rec["reason"] == "TimeLimit"
    assert acct(timed)[1][:2] == [f"{timed}.batch", "CANCELLED"]


def test_signal_option_warns_the_batch_shell_before_the_limit(ctl, tmp_path):
    job = submit("-t", "0:30", "--signal=B:USR1@28", "-o", "sig.out", "--wrap",
                 "trap 'echo got USR1; exit 0' USR1; sleep 60 & wait", cwd=tmp_path)
    wait_state(job, "COMPLETED", timeout=20)
    assert (tmp_path / "sig.out").read_text() == "got USR1\n"


def test_array_task_step_is_set(ctl, tmp_path):
    job = submit("--array=0-6:3", "-o", "a-%a.out", "--wrap", "echo $SLURM_ARRAY_TASK_STEP",
                 cwd=tmp_path)
    wait_state(f"{job}", "COMPLETED")
    assert [(tmp_path / f"a-{i}.out").read_text() for i in (0, 3, 6)] == ["3\n"] * 3


def test_srun_labels_failures_and_silence(ctl, tmp_path):
    out = sl("srun", "-l", "-n", "12", "echo", "x", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # resources free: srun says nothing
    assert sorted(out.stdout.splitlines())[:3] == [" 0: x", " 1: x", " 2: x"]
    assert "11: x" in out.stdout.splitlines()
    fail = sl("srun", "-N2", "-n3", "sh", "-c", "exit 5", cwd=tmp_path)
    assert fail.returncode == 5
    assert fail.stderr.splitlines() == ["srun: error: sn01: task 2: Exited with exit code 5",
                                        "srun: error: sn00: tasks 0-1: Exited with exit code 5"]


def test_scontrol_update_numnodes_abc_is_a_clear_error(ctl, tmp_path):
    job = submit("-H", "--wrap", "true", cwd=tmp_path)
    out = sl("scontrol", "update", f"jobid={job}", "numnodes=abc")
    assert out.returncode == 1
    assert out.stderr == 'scontrol: error: Invalid numeric value "abc" for requested node count.\n'
    sl("scancel", str(job), check=True)
