"""Who may do what on a shared emulated cluster (#11): steps run as their user, only the
controller launches steps, state is private, leases hold, a job's processes end with it.

Every attack is made as a real second OS user (``second_user``, created with useradd) against
a real controller, fork server, socket actors and files; expected behaviour for files a user may
not open is Slurm 22.05's, observed on the reference peer (FAILED, ExitCode 0:53; a working
directory the user may not enter falls back to /tmp with slurmstepd's message).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import ray

from sn40l.errors import SocketBusyError
from sn40l.scheduler import stepd
from sn40l.scheduler.client import Client, ControllerError, endpoint
from sn40l.scheduler.controller import controller_dir, start_controller
from sn40l.scheduler.private import prunable

CLUSTER = "sec"
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class UserPython:
    """How the second user starts this checkout's Python: the interpreter and its env."""

    exe: str
    env: dict


@pytest.fixture(scope="module")
def sec(ray_session):
    from sn40l.cluster import Cluster

    cluster = Cluster.start(nodes=1, sockets_per_node=8, name=CLUSTER)
    start_controller(CLUSTER, kill_wait_s=2)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def user_py(second_user) -> UserPython:
    """This interpreter if the user may run it; else the system Python of the same version
    with this checkout and its site-packages on PYTHONPATH (the venv's interpreter may live in
    root's 0700 home)."""
    site = sysconfig.get_paths()["purelib"]
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe, env in ((sys.executable, {}),
                     (f"/usr/bin/python{ver}", {"PYTHONPATH": f"{REPO}:{site}"})):
        try:
            probe = run_as(second_user, [exe, "-c", "import sn40l.cli, msgpack"], env=env)
        except OSError:  # not executable by the user
            continue
        if probe.returncode == 0:
            return UserPython(exe, env)
    # Only when the checkout or its venv cannot be read by other users at all (e.g. both under
    # a 0700 home): the unprivileged-user tests then cannot start the user's side.
    pytest.skip(f"user {second_user.pw_name} can neither run {sys.executable} nor "
                f"/usr/bin/python{ver} with {REPO} and {site} on PYTHONPATH: the checkout or "
                "its venv is not readable by other users")


def run_as(user, argv: list[str], env: dict | None = None, cwd: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "USER": user.pw_name,
            "LOGNAME": user.pw_name, "SN40L_STATE_DIR": os.environ["SN40L_STATE_DIR"],
            "SN40L_CLUSTER": CLUSTER}
    return subprocess.run(argv, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          cwd=cwd or user.pw_dir, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def user_sl(user, py: UserPython, *args: str) -> subprocess.CompletedProcess:
    return run_as(user, [py.exe, "-m", "sn40l.cli", *args], env=py.env)


def user_submit(user, py: UserPython, *args: str) -> int:
    out = user_sl(user, py, "sbatch", "--parsable", *args)
    assert out.returncode == 0 and out.stdout.strip().isdigit(), (out.stdout, out.stderr)
    return int(out.stdout)


def root_submit(*args: str, cwd, env: dict | None = None) -> int:
    with Client(CLUSTER) as c:
        return int(c.submit_argv(list(args), env={**os.environ, **(env or {})},
                                 cwd=str(cwd))["job_id"])


def wait_final(job: int, timeout: float = 60) -> dict:
    with Client(CLUSTER) as c:
        return c.wait(job, timeout_s=timeout)


def wait_running(job: int, timeout: float = 30) -> dict:
    with Client(CLUSTER) as c:
        return c.wait(job, timeout_s=timeout, states=("RUNNING",))


def rundir(job: int) -> Path:
    return controller_dir(Path(os.environ["SN40L_STATE_DIR"]), CLUSTER) / "jobs" / str(job) / "run0"


def wait_file(path: Path, timeout: float = 10) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path


def exit_code(rec: dict) -> str:
    return f"{rec['exit_code']}:{rec['exit_signal']}"


SQUATTER = """import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0" + sys.argv[1]); s.listen(8); s.settimeout(0.1)
print("bound", flush=True)
got, conns = 0, []
while not os.path.exists(sys.argv[2]):
    try:
        c, _ = s.accept(); c.setblocking(False); conns.append(c)
    except socket.timeout:
        pass
    for c in conns:
        try:
            got += len(c.recv(65536))
        except BlockingIOError:
            pass
print("received", got, flush=True)
"""


# -- the fork server ----------------------------------------------------------------------
def test_fork_server_takes_requests_only_from_the_controller(sec, second_user, user_py,
                                                             tmp_path):
    assert wait_final(root_submit("--wrap", "true", cwd=tmp_path))["state"] == "COMPLETED"
    state = Path(os.environ["SN40L_STATE_DIR"]).resolve()
    server = "\0sn40l-stepd" + endpoint(CLUSTER, state)[len("\0sn40l-slurmctld"):]
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"  # a root-private job directory whose script would leave a mark
    evil.mkdir(mode=0o700)
    script = evil / "script"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o700)
    (evil / "launch.json").write_text(json.dumps({
        "argv": [str(script)], "script": str(script), "env": {}, "workdir": "/tmp",
        "stdout": "/dev/null", "stderr": "/dev/null", "stdin": None, "open_mode": "append",
        "export": "ALL"}))
    (evil / "launch.json").chmod(0o600)
    old = tmp_path / "old"  # the attack of #11 as it was: a bare path, launch.json says uid 0
    old.mkdir(mode=0o777)
    (old / "launch.json").write_text(json.dumps({
        "argv": [str(script)], "env": {}, "workdir": "/tmp", "stdout": "/dev/null",
        "stderr": "/dev/null", "uid": 0, "gid": 0}))
    # root, but not the controller: refused by the peer check (the server may close the
    # connection before the request is even sent: a broken pipe is that refusal)
    for payload in (stepd.request(str(evil), 0, 0), str(old).encode()):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(server)
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
    # another user naming uid 0, and malformed requests: refused, and nothing breaks
    code = ("import socket, sys\n"
            "for d in sys.argv[2:]:\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
            "    s.connect('\\0' + sys.argv[1])\n"
            "    try: s.sendall(d.encode())\n"
            "    except (BrokenPipeError, ConnectionResetError): pass\n"
            "    s.close()")
    sent = run_as(second_user, [user_py.exe, "-c", code, server[1:],
                                stepd.request(str(evil), 0, 0).decode(), str(old), "x",
                                "exit"],
                  env=user_py.env)
    assert sent.returncode == 0, sent.stderr
    time.sleep(1.5)
    assert not marker.exists()
    assert not any((d / f).exists() for d in (evil, old) for f in ("pid.json", "exit.json"))
    # the server still serves the controller
    assert wait_final(root_submit("--wrap", "true", cwd=tmp_path))["state"] == "COMPLETED"


def test_a_fork_server_name_bound_by_another_user_gets_no_step(sec, second_user, user_py,
                                                               tmp_path):
    """Another user who binds the fork server's name while no server runs is sent nothing:
    the job fails naming that user's uid, and the next job after it goes starts normally."""
    state = Path(os.environ["SN40L_STATE_DIR"]).resolve()
    name = "sn40l-stepd" + endpoint(CLUSTER, state)[len("\0sn40l-slurmctld"):]
    assert wait_final(root_submit("--wrap", "true", cwd=tmp_path))["state"] == "COMPLETED"
    servers = [p for p in psutil.process_iter(["cmdline"])
               if p.info["cmdline"] and name in p.info["cmdline"]]
    assert len(servers) == 1, servers
    servers[0].kill()  # the server of this controller ends (as it would after a crash)
    servers[0].wait(10)
    stop = Path(tempfile.mkdtemp()) / "stop"
    stop.parent.chmod(0o755)
    squat = subprocess.Popen([user_py.exe, "-c", SQUATTER.replace("SOCK_STREAM", "SOCK_SEQPACKET"),
                              name, str(stop)],
                             user=second_user.pw_uid, group=second_user.pw_gid, extra_groups=[],
                             env={"PATH": "/usr/bin:/bin", **user_py.env}, cwd="/",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert squat.stdout.readline().strip() == "bound", squat.stderr.read()
        job = root_submit("--wrap", "echo secret-step", cwd=tmp_path)
        rec = wait_final(job)
        assert rec["state"] == "FAILED"
        assert f"of uid {second_user.pw_uid}" in rec["launch_error"]
    finally:
        stop.touch()
        out, _ = squat.communicate(timeout=10)
        shutil.rmtree(stop.parent)
    assert out.strip() == "received 0"
    assert wait_final(root_submit("--wrap", "true", cwd=tmp_path))["state"] == "COMPLETED"


# -- the controller's endpoint --------------------------------------------------------------


def test_commands_send_nothing_to_another_user_bound_at_the_controller_s_name(
        second_user, user_py, tmp_path):
    """Any local user may bind an abstract name first; root's sbatch must not hand that
    process its script and environment, nor take its replies for the controller's."""
    name = "squatted"
    state = Path(os.environ["SN40L_STATE_DIR"]).resolve()
    stop = Path(tempfile.mkdtemp()) / "stop"  # a path the user may test for
    stop.parent.chmod(0o755)
    squat = subprocess.Popen([user_py.exe, "-c", SQUATTER, endpoint(name, state)[1:], str(stop)],
                             user=second_user.pw_uid, group=second_user.pw_gid, extra_groups=[],
                             env={"PATH": "/usr/bin:/bin", **user_py.env}, cwd="/",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert squat.stdout.readline().strip() == "bound", squat.stderr.read()
        env = {**os.environ, "SN40L_CLUSTER": name, "SECRET_TOKEN": "hunter2"}
        for argv in (["sbatch", "--wrap", "echo $SECRET_TOKEN"], ["squeue"]):
            p = subprocess.run([sys.executable, "-m", "sn40l.cli", *argv], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert p.returncode == 1, (argv, p.stdout, p.stderr)
            assert f"runs as uid {second_user.pw_uid}" in p.stderr
            assert "refusing to send it anything" in p.stderr and "Traceback" not in p.stderr
    finally:
        stop.touch()
        out, _ = squat.communicate(timeout=10)
        shutil.rmtree(stop.parent)
    assert out.strip() == "received 0"


# -- files are opened as the user ----------------------------------------------------------
def test_output_input_and_workdir_are_used_as_the_submitting_user(sec, second_user, user_py,
                                                                   request):
    shared = Path(tempfile.mkdtemp(prefix="sn40l-shared-", dir="/tmp"))  # reachable by all
    shared.chmod(0o777)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    victim = shared / "victim"  # root's file in a directory the user may write
    victim.write_text("precious\n")
    victim.chmod(0o644)
    clobber = user_submit(second_user, user_py, "-o", str(victim), "--wrap", "true")
    shadow = user_submit(second_user, user_py, "-i", "/etc/shadow", "-o", "stolen.out",
                         "--wrap", "cat")
    who = user_submit(second_user, user_py, "--export=NONE", "-D", "/root", "-o",
                      f"{second_user.pw_dir}/who.out", "--wrap",
                      "id -u; id -G; echo $HOME $USER $LOGNAME $SHELL; pwd")
    rec = wait_final(clobber)
    assert (rec["state"], exit_code(rec)) == ("FAILED", "0:53")
    assert rec["launch_error"] == f"Could not open stdout file {victim}: Permission denied"
    assert victim.read_text() == "precious\n" and victim.stat().st_uid == 0
    rec = wait_final(shadow)
    assert (rec["state"], exit_code(rec)) == ("FAILED", "0:53")
    assert rec["launch_error"] == "Could not open stdin file /etc/shadow: Permission denied"
    assert not (Path(second_user.pw_dir) / "stolen.out").exists()
    assert wait_final(who)["state"] == "COMPLETED"
    out = (Path(second_user.pw_dir) / "who.out").read_text().splitlines()
    pw = second_user
    assert out == ["slurmstepd: error: couldn't chdir to `/root': Permission denied: going to "
                   "/tmp instead", str(pw.pw_uid), str(pw.pw_gid),
                   f"{pw.pw_dir} {pw.pw_name} {pw.pw_name} {pw.pw_shell}", "/tmp"]
    assert (Path(pw.pw_dir) / "who.out").stat().st_uid == pw.pw_uid


# -- private state -------------------------------------------------------------------------
def test_state_and_other_users_jobs_are_private(sec, second_user, user_py, tmp_path):
    job = root_submit("--wrap", "sleep 30", cwd=tmp_path, env={"SECRET_TOKEN": "hunter2"})
    wait_running(job)
    run = rundir(job)
    pgid = json.loads(wait_file(run / "pid.json").read_text())["pgid"]
    ctl = controller_dir(Path(os.environ["SN40L_STATE_DIR"]), CLUSTER)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert [mode(p) for p in (ctl.parent, ctl, ctl / "jobs", run)] == [0o700] * 4
    assert [mode(p) for p in (ctl / "slurm.db", ctl / "lease.key", run / "launch.json",
                              run / "pid.json")] == [0o600] * 4
    assert mode(run / "script") == 0o500
    # the user cannot read the database, the job's files or the job's environment
    probe = ("import json, sys\nout = {}\nfor p in sys.argv[1:]:\n"
             "    try:\n        open(p, 'rb').read(); out[p] = 'read'\n"
             "    except OSError as e:\n        out[p] = type(e).__name__\n"
             "print(json.dumps(out))")
    paths = [str(ctl / "slurm.db"), str(run / "launch.json"), str(run / "script"),
             f"/proc/{pgid}/environ"]
    got = run_as(second_user, [user_py.exe, "-c", probe, *paths], env=user_py.env)
    assert json.loads(got.stdout) == {p: "PermissionError" for p in paths}, got.stderr
    shown = user_sl(second_user, user_py, "scontrol", "show", "job", str(job))
    assert shown.returncode != 0 and "hunter2" not in shown.stdout + shown.stderr
    with Client(CLUSTER) as c:
        c.cancel(job)
    wait_final(job)


def test_old_job_directories_are_pruned_after_the_retention():
    entries = {1: 1000.0, 2: 1250.0, 3: 900.0, 4: 1000.0}
    assert prunable(entries, active={4}, now=1300.0, retention_s=300) == [1, 3]
    assert prunable(entries, active=set(), now=1299.0, retention_s=300) == [3]
    assert prunable(entries, active={1, 2, 3, 4}, now=1e9, retention_s=300) == []


# -- leases --------------------------------------------------------------------------------
def test_a_job_s_sockets_refuse_foreign_and_tokenless_work(sec, tmp_path):
    holder = root_submit("--gres=rdu:8", "--wrap", "sleep 30", cwd=tmp_path)
    wait_running(holder)
    cap = json.loads(wait_file(rundir(holder) / "launch.json").read_text())["env"]["SN40L_LEASE"]
    job_id, token = cap.split(":")
    assert int(job_id) == holder and len(token) == 64
    sock = sec.socket(3)
    for forged in (holder, str(holder), f"{holder + 1}:{token}", f"{holder}:{'0' * 64}", None):
        with pytest.raises(SocketBusyError, match=f"allocated to job {holder}"):
            ray.get(sock.alloc.remote("intruder", "hbm", [4], job=forged))
    for forged in (None, holder, f"{holder}:{'0' * 64}"):
        with pytest.raises(SocketBusyError, match=f"allocated to job {holder}"):
            ray.get(sock.release.remote(forged))
    assert ray.get(sock.leased_to.remote()) == holder
    ray.get(sock.alloc.remote("mine", "hbm", [4], job=cap))  # the holder's capability works
    ray.get(sock.free.remote("mine", job=cap))
    with Client(CLUSTER) as c, pytest.raises(ControllerError, match="capability"):
        c.call("job_run", job_id=holder, capability=f"{holder}:{'0' * 64}", pef=b"",
               prompt_ids=[1], max_new_tokens=1, weights="random")
    with Client(CLUSTER) as c:
        c.cancel(holder)
    wait_final(holder)
    assert ray.get(sock.leased_to.remote()) is None


# -- an unprivileged user's job on its own sockets ------------------------------------------
def test_unprivileged_users_job_runs_on_its_sockets(sec, second_user, user_py):
    from sn40l.cluster.runner import ModelRunner
    from sn40l.compiler import CompileConfig, compile_model

    job = user_submit(second_user, user_py, "--gres=rdu:8", "-o", "run.out", "-e", "run.err",
                      "--wrap",
                      f"{user_py.exe} -m sn40l.cli run tiny --tp 8 --seq-len 64 "
                      "--prompt-ids 1,2,3 --max-new-tokens 4 --json; "
                      "env | grep -c '^SN40L_RAY\\|^RAY_' || true")
    rec = wait_final(job, timeout=150)
    text = (Path(second_user.pw_dir) / "run.out").read_text()
    assert rec["state"] == "COMPLETED", text
    result = json.loads(text[:text.rindex("}") + 1])
    assert text.strip().endswith("\n0")  # no Ray address or token reached the job
    assert result["sockets"] == list(range(8))
    # the same model on the same sockets, driven directly over Ray by root
    art = compile_model(CompileConfig("tiny", 8, 1, "decode", 1, 64))
    runner = ModelRunner(sec, list(range(8)), art, weights="random", seed=0, tag="ref")
    runner.load()
    try:
        expected = runner.generate([1, 2, 3], 4).tokens
    finally:
        runner.unload()
    assert result["tokens"] == expected and len(expected) == 4


# -- a job's processes end with it ----------------------------------------------------------
ESCAPES = """#!/bin/sh
sleep 300 & echo $! >> pids
setsid sh -c 'sleep 301 & echo $! >> pids; exec sleep 302' & echo $! >> pids
( sleep 303 & echo $! >> pids ) &
sleep 1; echo ready >> pids
wait
"""


@pytest.mark.parametrize("victim", ["batch shell", "step"])
def test_sigkill_of_the_batch_shell_or_step_leaves_no_process(sec, second_user, user_py,
                                                              victim):
    home = Path(second_user.pw_dir)
    (home / "pids").unlink(missing_ok=True)
    script = home / "escapes.sh"
    script.write_text(ESCAPES)
    os.chown(script, second_user.pw_uid, second_user.pw_gid)
    job = user_submit(second_user, user_py, "-o", "esc.out", str(script))
    deadline = time.monotonic() + 30
    while "ready" not in ((home / "pids").read_text() if (home / "pids").exists() else ""):
        assert time.monotonic() < deadline, "the job never got ready"
        time.sleep(0.1)
    pids = [int(x) for x in (home / "pids").read_text().split() if x.isdigit()]
    info = json.loads((rundir(job) / "pid.json").read_text())
    assert len(pids) == 4 and all(psutil.pid_exists(p) for p in pids)
    os.kill(info["pgid"] if victim == "batch shell" else info["stepd"], signal.SIGKILL)
    rec = wait_final(job)
    assert (rec["state"], exit_code(rec)) == ("FAILED", "0:9")
    deadline = time.monotonic() + 5
    while True:
        left = [p.pid for p in psutil.process_iter(["uids"])
                if p.info["uids"] and p.info["uids"].real == second_user.pw_uid
                and p.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], f"processes of the job survived: {left}"
