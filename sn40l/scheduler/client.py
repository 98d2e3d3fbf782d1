"""Talking to the controller: a Unix stream socket in Linux's abstract namespace, msgpack frames.

The endpoint's name derives from the state directory and the cluster name, so every process
that shares ``$SN40L_STATE_DIR`` finds the same controller without files to clean up, and any
local user can connect: the controller learns who is calling from the kernel (``SO_PEERCRED``),
never from the request. The client checks the other way too: any local user may bind an
abstract name, so before it sends anything the client asks the kernel who listens there and
talks only to root, itself, or the owner of the state directory or of the controller's
directory in it (the user the controller runs as); anyone else gets nothing, not a script nor
an environment. This module imports neither Ray nor numpy, so a Slurm command costs one
round trip on top of Python's start-up.

Frame: 4-byte big-endian length + msgpack map. Request ``{"op": name, ...}``; reply
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": text, "code": name}``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from pathlib import Path

import msgpack

from sn40l.errors import SchedulerError

MAX_FRAME = 64 * 1024 * 1024
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def state_dir() -> Path:
    path = Path(os.environ.get("SN40L_STATE_DIR") or Path.home() / ".sn40l")
    return path


def cluster_name() -> str:
    return os.environ.get("SN40L_CLUSTER") or "default"


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket, as the
    kernel knows it (``SO_PEERCRED``: a process cannot forge it)."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def controller_dir(state: Path, cluster: str) -> Path:
    """The controller's private state directory (its database, keys and job directories)."""
    return Path(state) / "slurm" / cluster


def endpoint(cluster: str | None = None, state: Path | None = None) -> str:
    """The abstract socket name of a cluster's controller."""
    state = Path(state or state_dir()).expanduser().resolve()
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:16]
    return f"\0sn40l-slurmctld/{digest}/{cluster or cluster_name()}"


class ControllerUnavailable(SchedulerError):
    """No controller answers at the endpoint."""


class ControllerUntrusted(SchedulerError):
    """The process at a controller's endpoint runs as a user no controller of it runs as."""


class ControllerError(SchedulerError):
    """The controller refused a request; ``str`` is its message, ``code`` its kind."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code


def send_frame(sock: socket.socket, obj: object) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(struct.pack(">I", len(data)) + data)


def recv_frame(sock: socket.socket) -> object | None:
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ConnectionError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
    body = _recv_exact(sock, n)
    if body is None:
        raise ConnectionError("connection closed in the middle of a frame")
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if not buf:
                return None
            raise ConnectionError("connection closed in the middle of a frame")
        buf += chunk
    return bytes(buf)


class Client:
    """A connection to one cluster's controller; the Python API of the scheduler.

    ``Client().submit(wrap="hostname", ntasks=2)`` or ``Client().submit_argv([...])``; every
    Slurm command is a method here. Reuses one connection for many requests.
    """

    def __init__(self, cluster: str | None = None, state: Path | str | None = None,
                 timeout_s: float = 60.0):
        self.cluster = cluster or cluster_name()
        self.state = Path(state) if state else state_dir()
        self.address = endpoint(self.cluster, self.state)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout_s)
            try:
                s.connect(self.address)
            except (ConnectionRefusedError, FileNotFoundError):
                s.close()
                raise ControllerUnavailable(
                    f"no controller of cluster {self.cluster!r} is running (state directory "
                    f"{self.state})") from None
            self._check_peer(s)
            self._sock = s
        return self._sock

    def _check_peer(self, s: socket.socket) -> None:
        """Refuse (closing ``s``) a listener that is not root, us, or the owner of the state
        directory or of the controller's directory in it: someone else who bound the
        endpoint's name first."""
        pid, uid, _gid = peer_credentials(s)
        trusted = {0, os.getuid()}
        for path in (self.state, controller_dir(self.state, self.cluster)):
            try:
                trusted.add(path.stat().st_uid)
            except OSError:
                pass  # not there yet, or we may not look
        if uid not in trusted:
            s.close()
            raise ControllerUntrusted(
                f"the process listening at cluster {self.cluster!r}'s controller endpoint "
                f"(pid {pid}) runs as uid {uid}, not as root, you, or the owner of the "
                f"controller's state directory: refusing to send it anything")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, op: str, **args) -> object:
        """One request; raises ControllerError with the controller's message on refusal."""
        for attempt in (0, 1):
            sock = self._connect()
            try:
                send_frame(sock, {"op": op, **args})
                reply = recv_frame(sock)
                if reply is None:
                    raise ConnectionError("controller closed the connection")
                break
            except (ConnectionError, BrokenPipeError, socket.timeout) as exc:
                self.close()
                if attempt or isinstance(exc, socket.timeout):
                    raise ControllerUnavailable(f"controller of cluster {self.cluster!r} did "
                                                f"not answer: {exc}") from None
        if not reply.get("ok"):
            raise ControllerError(reply.get("error", "unknown error"), reply.get("code", "error"))
        return reply.get("result")

    def ping(self) -> dict:
        return self.call("ping")

    # -- the Python API --------------------------------------------------------------------
    def submit_argv(self, argv: list[str], env: dict | None = None, cwd: str | None = None,
                    stdin_text: str | None = None) -> dict:
        """Submit as ``sbatch argv`` would; returns ``{"job_id": N, ...}``."""
        from sn40l.scheduler.request import build_request

        req = build_request(argv, env=env, cwd=cwd, stdin_text=stdin_text)
        return self.call("submit", req=req)

    def submit(self, script: str | None = None, wrap: str | None = None, **options) -> int:
        """Submit a batch script path or a ``wrap`` command with sbatch's long options as
        keyword arguments (``ntasks=2``, ``gres="rdu:8"``, ``time="1:00"``); returns the job id."""
        argv = []
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (None, False):
                argv.append(f"{flag}={value}")
        if wrap is not None:
            argv.append(f"--wrap={wrap}")
        elif script is not None:
            argv.append(script)
        return int(self.submit_argv(argv)["job_id"])

    def jobs(self, **filters) -> list[dict]:
        return self.call("queue", **filters)

    def job(self, job_id: int | str) -> dict:
        return self.call("show_job", job=str(job_id))

    def wait(self, job_id: int | str, timeout_s: float = 60.0,
             states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                     "OUT_OF_MEMORY")) -> dict:
        """Poll until the job (every task of an array) reaches one of ``states``; returns the
        record (``{"tasks": [...]}`` for an array), as the controller sent it."""
        from sn40l.scheduler.replies import job_from_wire

        deadline = time.monotonic() + timeout_s
        while True:
            recs = self.call("show_job", job=str(job_id), all_tasks=True)
            now = [job_from_wire(r).state.value for r in recs]
            if all(state in states for state in now):
                return recs[0] if len(recs) == 1 else {"tasks": recs}
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {now} after {timeout_s:.0f} s")
            time.sleep(0.05)

    def cancel(self, *job_ids: int | str, **filters) -> dict:
        return self.call("cancel", jobs=[str(j) for j in job_ids], **filters)
