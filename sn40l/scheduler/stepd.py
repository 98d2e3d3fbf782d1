"""The batch step of a job: runs its script and records how it ended (like slurmstepd).

The controller does not start a Python process per job: ``python -m sn40l.scheduler.stepd
--serve NAME`` is a small detached fork server (it outlives controller restarts) listening on
the abstract datagram socket NAME; each datagram names a job directory, and the server forks a
step for it in about a millisecond. ``python -m sn40l.scheduler.stepd JOBDIR`` runs one step
directly (double-forked), for debugging.

A step reads ``JOBDIR/launch.json`` (argv, environment,
working directory, output files, uid/gid), detaches (double fork, so it outlives a controller
restart and is nobody's child but init's), runs the script in a new session whose process group
the controller signals, and writes ``JOBDIR/exit.json`` atomically when the script ends.
``JOBDIR/pid.json`` tells the controller the step's pid and the script's process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _open_out(path: str, mode: str, uid: int, gid: int):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "append" else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    if os.geteuid() == 0 and uid != 0:
        os.fchown(fd, uid, gid)
    return fd


def run(jobdir: str) -> int:
    with open(os.path.join(jobdir, "launch.json")) as f:
        spec = json.load(f)
    env = dict(spec["env"])
    env.setdefault("PATH", DEFAULT_PATH)
    uid, gid = spec["uid"], spec["gid"]
    mode = spec.get("open_mode", "truncate")
    notes = []
    try:
        out_fd = _open_out(spec["stdout"], mode, uid, gid)
        err_fd = out_fd if spec["stderr"] == spec["stdout"] else _open_out(spec["stderr"], mode,
                                                                           uid, gid)
    except OSError as exc:
        _write(os.path.join(jobdir, "exit.json"),
               {"returncode": 1, "end_time": time.time(),
                "error": f"could not open output file: {exc}"})
        return 1
    workdir = spec["workdir"]
    if not os.path.isdir(workdir):
        notes.append(f"slurmstepd: error: couldn't chdir to `{workdir}': No such file or "
                     "directory: going to /tmp instead\n")
        workdir = "/tmp"
    for note in notes:
        os.write(err_fd, note.encode())
    stdin = subprocess.DEVNULL
    if spec.get("stdin"):
        try:
            stdin = open(spec["stdin"], "rb")
        except OSError:
            stdin = subprocess.DEVNULL

    def demote() -> None:
        if os.geteuid() == 0 and uid != 0:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

    try:
        proc = subprocess.Popen(spec["argv"], cwd=workdir, env=env, stdin=stdin,
                                stdout=out_fd, stderr=err_fd, start_new_session=True,
                                preexec_fn=demote if (os.geteuid() == 0 and uid != 0) else None)
    except OSError as exc:
        os.write(err_fd, f"slurmstepd: error: execve(): {spec['argv'][0]}: {exc.strerror}\n"
                 .encode())
        _write(os.path.join(jobdir, "exit.json"),
               {"returncode": 1, "end_time": time.time(), "error": str(exc)})
        return 1
    _write(os.path.join(jobdir, "pid.json"), {"stepd": os.getpid(), "pgid": proc.pid,
                                             "start_time": time.time()})

    def forward(signum, _frame):  # a signal to the step goes to the whole script
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    rc = proc.wait()
    _write(os.path.join(jobdir, "exit.json"), {"returncode": rc, "end_time": time.time()})
    return 0


def _step_child(jobdir: str) -> None:
    """In a freshly forked child: become a session leader with quiet stdio, run the step."""
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        code = run(jobdir)
    except BaseException as exc:  # noqa: BLE001 - recorded for the controller, then exit
        _write(os.path.join(jobdir, "exit.json"),
               {"returncode": 1, "end_time": time.time(), "error": repr(exc)})
        code = 1
    os._exit(code)


def serve(name: str, controller: str | None = None) -> int:
    """The fork server: detach, bind ``name`` (abstract), fork a step per datagram. It exits
    once the controller's endpoint ``controller`` has been gone for a minute (a restarted
    controller starts a new server on demand; running steps never need it)."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
    except OSError:
        return 0  # one is already serving this controller
    if os.fork() > 0:
        os._exit(0)  # the launcher returns; the server is nobody's child but init's
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # steps are reaped by the kernel
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sock.settimeout(5.0)
    gone_since = None
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            if controller is None:
                continue
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect("\0" + controller)
                gone_since = None
            except OSError:
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 60:
                    return 0
            finally:
                probe.close()
            continue
        if data == b"exit":
            return 0
        jobdir = data.decode()
        if os.fork() == 0:
            sock.close()
            _step_child(jobdir)


def main() -> int:
    if sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    jobdir = sys.argv[1]
    if os.fork() > 0:
        return 0  # the launcher returns at once; the grandchild runs the job
    if os.fork() > 0:
        os._exit(0)
    _step_child(jobdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
