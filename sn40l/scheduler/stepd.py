"""The batch step of a job: runs its script as the job's user and records how it ended (like
slurmstepd).

The controller does not start a Python process per job: ``python -m sn40l.scheduler.stepd
--serve NAME CONTROLLER`` is a small detached fork server (it outlives controller restarts)
listening on the abstract seqpacket socket NAME. Each side of a connection learns who the other
is from the kernel (``SO_PEERCRED``, which a process cannot forge): the server takes a request
only from a process of its own uid whose pid is the pid listening on the controller's endpoint
CONTROLLER, and drops and counts anything else; the controller (:func:`request_step`) sends only
to a server of its own uid, so another user who bound NAME first is refused by uid and learns
nothing. Each request names a job directory and the uid/gid the step runs as; the server forks
a step for it in about a millisecond.
``python -m sn40l.scheduler.stepd JOBDIR`` runs one step directly as the calling user, for
debugging.

A step (the *supervisor*, running as the controller's user) reads ``JOBDIR/launch.json`` (argv,
environment, working directory, I/O files; the file must belong to it and be writable by nobody
else), opens the job's script, and forks the script's process, which - before anything of the
user's runs - starts a new session, sets its groups, gid and uid (``initgroups``, ``setgid``,
``setuid``), opens the input, output and error files and enters the working directory *as the
user*, and execs the script. A file the user may not open fails the job as Slurm 22.05 does
(FAILED, exit code 0:53, "Could not open stdout file ...: Permission denied"); a working directory
the user may not enter falls back to /tmp with slurmstepd's message. ``JOBDIR/pid.json`` tells the
controller the supervisor's pid and the script's process group; ``JOBDIR/exit.json`` is written
atomically when the script ends.

A job's processes end with it. The supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``),
so descendants that leave the script's session are reparented to it; when the script ends (or is
SIGKILLed) it kills the process group and every remaining descendant before it reports. The
fork server is a subreaper too, and every child of it that is not a supervisor is an orphan of a
supervisor that died (SIGKILL): it kills such orphans and their descendants at once.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import pwd
import signal
import socket
import stat
import sys
import time
from dataclasses import dataclass

from sn40l.scheduler.client import peer_credentials

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
IO_SETUP_SIGNAL = 53  # Slurm 22.05 ends a step whose I/O cannot be set up FAILED 0:53 (observed)
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
CLEANUP_S = 10.0  # bound on killing and reaping what a finished script left behind
SCRIPT_FD = 9  # the job's script, inherited by the exec; it is run as /proc/self/fd/9
LAUNCH_KEYS = frozenset({"argv", "env", "workdir", "stdout", "stderr", "stdin", "open_mode",
                         "export", "script"})


class StepError(Exception):
    """A step could not be set up; ``returncode`` is what the controller records (-53, shown
    as 0:53, for I/O as Slurm does; 1 otherwise)."""

    def __init__(self, message: str, returncode: int = -IO_SETUP_SIGNAL):
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Launch:
    """What a step runs (``launch.json``, written by the controller)."""

    argv: list
    env: dict
    workdir: str
    stdout: str
    stderr: str
    stdin: str | None
    open_mode: str
    export: str
    script: str

    @classmethod
    def read(cls, jobdir: str) -> "Launch":
        """Read ``jobdir/launch.json``, which must be a regular file of this process's uid that
        nobody else can write (it decides what runs)."""
        path = os.path.join(jobdir, "launch.json")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            dst = os.stat(jobdir)
            for what, s in (("launch.json", st), ("its directory", dst)):
                if s.st_uid != os.geteuid() or s.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    raise StepError(f"{what} in {jobdir} is not private to uid {os.geteuid()} "
                                    "(owner or mode); refusing to run it", 1)
            data = json.load(f)
        unknown = sorted(set(data) - LAUNCH_KEYS)
        missing = sorted(LAUNCH_KEYS - set(data))
        if unknown or missing:
            raise StepError(f"launch.json: unknown keys {unknown}, missing keys {missing}; "
                            f"expected {sorted(LAUNCH_KEYS)}", 1)
        return cls(**data)


def request(jobdir: str, uid: int, gid: int) -> bytes:
    """What the controller sends the fork server to start the step in ``jobdir``."""
    return json.dumps({"jobdir": str(jobdir), "uid": int(uid), "gid": int(gid)}).encode()


class ServerUntrusted(Exception):
    """The process listening at the fork server's name runs as another user."""


def peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket."""
    pid, uid, _gid = peer_credentials(conn)
    return pid, uid


def request_step(name: str, jobdir: str, uid: int, gid: int, timeout_s: float) -> None:
    """Ask the fork server at abstract ``name`` to start the step in ``jobdir`` as ``uid``/
    ``gid``. ConnectionRefusedError or FileNotFoundError: no server listens there;
    :class:`ServerUntrusted`: one of another uid does (it is sent nothing)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.settimeout(timeout_s)
        conn.connect("\0" + name)
        pid, owner = peer(conn)
        if owner != os.geteuid():
            raise ServerUntrusted(
                f"the step fork server's name {name!r} is bound by pid {pid} of uid {owner}, "
                f"not by the controller's uid {os.geteuid()}: the step was not sent to it")
        conn.sendall(request(jobdir, uid, gid))
    finally:
        conn.close()


def set_child_subreaper() -> None:
    """Make orphaned descendants of this process its children (Linux ``prctl``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def user_env(launch: Launch, pw: pwd.struct_passwd) -> dict:
    """The script's environment: what the job exports; under ``--export=NONE`` (or a list of
    names) also the user's own HOME, USER, LOGNAME and SHELL from the passwd entry, as Slurm
    loads the user's login environment then (observed on Slurm 22.05). Never the controller's."""
    env = dict(launch.env)
    if not launch.export.upper().startswith("ALL"):
        for key, value in (("HOME", pw.pw_dir), ("USER", pw.pw_name),
                           ("LOGNAME", pw.pw_name), ("SHELL", pw.pw_shell or "/bin/sh")):
            env.setdefault(key, value)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("TMPDIR", "/tmp")  # slurmstepd sets it when the job does not
    return env


def _write(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _become(uid: int, gid: int, pw: pwd.struct_passwd) -> None:
    """Drop to the job's user for good (in the script's process, before anything else)."""
    if os.geteuid() == 0:
        os.initgroups(pw.pw_name, gid)
        os.setgid(gid)
        os.setuid(uid)
    elif uid != os.geteuid() or gid != os.getegid():
        raise StepError(f"cannot run a job of uid {uid} (gid {gid}): this step runs as uid "
                        f"{os.geteuid()} and only root may change user", 1)


def _open_io(launch: Launch) -> tuple[int, int, int]:
    """Open stdin, stdout and stderr as the (already set) user, as slurmstepd does."""
    def opened(what: str, path: str, flags: int) -> int:
        try:
            return os.open(path, flags | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise StepError(f"Could not open {what} file {path}: {exc.strerror}") from None

    stdin = opened("stdin", launch.stdin or os.devnull, os.O_RDONLY)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if launch.open_mode == "append"
                                        else os.O_TRUNC)
    out = opened("stdout", launch.stdout, flags)
    err = out if launch.stderr == launch.stdout else opened("stderr", launch.stderr, flags)
    return stdin, out, err


def _script_child(launch: Launch, uid: int, gid: int, pw, script_fd: int, report: int) -> None:
    """The forked script process: session, user, I/O, working directory, exec. Never returns;
    a failure is written to ``report`` as JSON before exiting."""
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.dup2(script_fd, SCRIPT_FD, inheritable=True)
        _become(uid, gid, pw)
        os.umask(0o022)
        # above SCRIPT_FD, so that neither the script nor stdio overwrites the other
        stdin, out, err = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, SCRIPT_FD + 1)
                           for fd in _open_io(launch))
        workdir = launch.workdir
        try:
            os.chdir(workdir)
        except OSError as exc:
            os.write(err, f"slurmstepd: error: couldn't chdir to `{workdir}': {exc.strerror}: "
                          "going to /tmp instead\n".encode())
            os.chdir("/tmp")
        for target, fd in ((0, stdin), (1, out), (2, err)):
            os.dup2(fd, target, inheritable=True)
        try:
            os.execve(f"/proc/self/fd/{SCRIPT_FD}", [launch.script] + list(launch.argv[1:]),
                      user_env(launch, pw))
        except OSError as exc:
            os.write(2, f"slurmstepd: error: execve(): {launch.script}: {exc.strerror}\n"
                     .encode())
            raise StepError(f"execve(): {launch.script}: {exc.strerror}", 1) from None
    except StepError as exc:
        os.write(report, json.dumps({"error": str(exc), "returncode": exc.returncode}).encode())
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then exit
        os.write(report, json.dumps({"error": repr(exc), "returncode": 1}).encode())
    os._exit(1)


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_all(procs) -> None:
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def _end_job_processes(pgid: int) -> None:
    """After the script's end: SIGKILL its process group and every descendant the supervisor
    still has (subreaper: escaped processes are ours), reap them all."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + CLEANUP_S
    while time.monotonic() < deadline:
        _kill_all(_descendants(os.getpid()))
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # nothing of the job is left
        if pid == 0:
            time.sleep(0.01)


def run(jobdir: str, uid: int, gid: int) -> int:
    """Run the step of ``jobdir`` as ``uid``/``gid``; returns this process's exit code."""
    launch = Launch.read(jobdir)
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise StepError(f"uid {uid} has no passwd entry", 1) from None
    set_child_subreaper()
    script_fd = os.open(launch.script, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    report_r, report_w = os.pipe()  # both close-on-exec: EOF without data = exec succeeded
    child = os.fork()
    if child == 0:
        os.close(report_r)
        _script_child(launch, uid, gid, pw, script_fd, report_w)
    os.close(report_w)
    os.close(script_fd)
    _write(os.path.join(jobdir, "pid.json"), {"stepd": os.getpid(), "pgid": child,
                                             "start_time": time.time()})

    def forward(signum, _frame):  # a signal to the step goes to the whole script
        try:
            os.killpg(child, signum)
        except (ProcessLookupError, PermissionError):
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    failure = b""
    while chunk := os.read(report_r, 65536):
        failure += chunk
    os.close(report_r)
    while True:  # reparented orphans may end first; they are reaped here too
        pid, status = os.wait()
        if pid == child:
            break
    rc = os.waitstatus_to_exitcode(status)
    _end_job_processes(child)
    info: dict = {"returncode": rc, "end_time": time.time()}
    if failure:
        why = json.loads(failure)
        info = {"returncode": int(why["returncode"]), "end_time": time.time(),
                "error": why["error"]}
    _write(os.path.join(jobdir, "exit.json"), info)
    return 0


def _step_child(jobdir: str, uid: int, gid: int) -> None:
    """In a freshly forked child: become a session leader with quiet stdio, run the step."""
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        code = run(jobdir, uid, gid)
    except StepError as exc:
        _write(os.path.join(jobdir, "exit.json"),
               {"returncode": exc.returncode, "end_time": time.time(), "error": str(exc)})
        code = 1
    except BaseException as exc:  # noqa: BLE001 - recorded for the controller, then exit
        _write(os.path.join(jobdir, "exit.json"),
               {"returncode": 1, "end_time": time.time(), "error": repr(exc)})
        code = 1
    os._exit(code)


class _Peers:
    """Who may talk to the fork server: processes of its own uid whose pid is the one
    listening on the controller's endpoint (looked up again when a new pid shows up, since a
    restarted controller is a new process)."""

    def __init__(self, controller: str | None):
        self.controller = controller
        self.pid: int | None = None
        self.refused = 0

    def controller_pid(self) -> int | None:
        """The pid listening on the controller's endpoint, if it runs as our uid."""
        if self.controller is None:
            return None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect("\0" + self.controller)
            pid, uid = peer(probe)
            return pid if uid == os.geteuid() else None
        except OSError:
            return None
        finally:
            probe.close()

    def allowed(self, pid: int, uid: int) -> bool:
        if uid != os.geteuid():
            return False
        if self.controller is None:  # a server without a controller serves only its own uid
            return True
        if pid != self.pid:
            self.pid = self.controller_pid()
        return pid == self.pid


def _parse_request(data: bytes) -> tuple[str, int, int] | None:
    try:
        req = json.loads(data)
        jobdir, uid, gid = req["jobdir"], req["uid"], req["gid"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(jobdir, str) and isinstance(uid, int) and isinstance(gid, int)):
        return None
    return jobdir, uid, gid


def _sweep_orphans(supervisors: set[int], scan: bool) -> bool:
    """Reap ended supervisors; if one died by a signal (or ``scan``), kill every other child
    of the server (orphans of a supervisor that died) with its descendants. Returns whether
    to scan again (orphans were found: their own children may be reparented next)."""
    import psutil

    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in supervisors:
            supervisors.discard(pid)
            scan = scan or os.WIFSIGNALED(status)
    if not scan:
        return False
    try:
        orphans = [c for c in psutil.Process().children() if c.pid not in supervisors]
    except psutil.Error:
        return True
    for child in orphans:
        _kill_all([*_descendants(child.pid), child])
    return bool(orphans)


# How often an idle fork server checks that its controller still listens (seconds).
PROBE_S = 0.5

def serve(name: str, controller: str | None = None) -> int:
    """The fork server: detach, bind ``name`` (abstract), fork a step per request from the
    controller. It exits as soon as the controller's endpoint ``controller`` is gone (probed
    every half second) and no step of it runs, so ``cluster down`` leaves no server behind; a
    restarted controller starts a new server on demand."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.bind("\0" + name)
    except OSError:
        return 0  # the name is taken: a server of ours (or someone else, whom we never send to)
    sock.listen(16)
    if os.fork() > 0:
        os._exit(0)  # the launcher returns; the server is nobody's child but init's
    os.setsid()
    set_child_subreaper()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    peers = _Peers(controller)
    supervisors: set[int] = set()
    sock.settimeout(0.5)
    last_probe = time.monotonic()
    rescan = False
    while True:
        rescan = _sweep_orphans(supervisors, rescan)
        try:
            conn, _addr = sock.accept()
        except socket.timeout:
            if controller is None or time.monotonic() - last_probe < PROBE_S:
                continue
            last_probe = time.monotonic()
            if peers.controller_pid() is None and not supervisors:
                return 0
            continue
        with conn:
            if not peers.allowed(*peer(conn)):
                peers.refused += 1  # a connection from anyone but the controller: dropped
                continue
            conn.settimeout(2.0)  # the controller sends its request right after connecting
            try:
                data = conn.recv(65536)
            except OSError:
                peers.refused += 1
                continue
        if data == b"exit":
            return 0
        req = _parse_request(data)
        if req is None:
            peers.refused += 1
            continue
        pid = os.fork()
        if pid == 0:
            sock.close()
            _step_child(*req)
        supervisors.add(pid)


def main() -> int:
    if sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    jobdir = sys.argv[1]
    if os.fork() > 0:
        return 0  # the launcher returns at once; the grandchild runs the job
    if os.fork() > 0:
        os._exit(0)
    _step_child(jobdir, os.getuid(), os.getgid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
