"""The controller's private state: modes, lease tokens, and pruning of old job directories.

Everything the controller keeps is its own and nobody else's: the state directories are 0700,
the database and every job file 0600 (a job's script and environment, its lease token). The
one file a job's user needs, the batch script, belongs to that user (0500) but sits in the
controller's 0700 directory: the step opens it and hands it to the user's process as an open
file descriptor, so nobody else reaches it by path.

Lease tokens: a job's token is HMAC-SHA256(key, "<job id>.<run>") with a 256-bit key kept in
``lease.key`` (0600), so a restarted controller derives the tokens of the jobs it must release
without storing them per job, and a requeued job gets a new token.

Pruning (Slurm's MinJobAge idea): a finished job's directories are needed only until the
controller has recorded its end; they are removed :data:`JOB_DIR_RETENTION_S` after the job
ended (default 300 s, Slurm's MinJobAge default). sacct keeps the job's record.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
from pathlib import Path

JOB_DIR_RETENTION_S = 300.0  # Slurm's MinJobAge default
KEY_BYTES = 32


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) mode 0700; tighten it if it exists."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write ``data`` atomically to ``path`` with ``mode`` (never through a symlink)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def tighten(paths) -> None:
    """Make existing files 0600 (a database written before these rules, its WAL files)."""
    for p in paths:
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


def private_db(path: Path) -> Path:
    """Create the database file 0600 before SQLite opens it (SQLite gives its -wal and -shm
    files the database's mode) and tighten an existing one."""
    path = Path(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    tighten([path, Path(f"{path}-wal"), Path(f"{path}-shm")])
    return path


def lease_key(directory: Path) -> bytes:
    """The controller's lease key (created once, 0600)."""
    path = Path(directory) / "lease.key"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) != KEY_BYTES:
        key = secrets.token_bytes(KEY_BYTES)
        private_file(path, key)
    return key


def job_token(key: bytes, job_id: int, run: int) -> str:
    """The unguessable lease token of run ``run`` of job ``job_id``."""
    return hmac.new(key, f"{job_id}.{run}".encode(), hashlib.sha256).hexdigest()


def prunable(entries: dict[int, float], active: set[int], now: float,
             retention_s: float = JOB_DIR_RETENTION_S) -> list[int]:
    """Job ids whose directories may go: not active, last changed ``retention_s`` or more
    before ``now``. ``entries`` maps job id -> last change (mtime) of its directory."""
    return sorted(j for j, mtime in entries.items()
                  if j not in active and now - mtime >= retention_s)


def _last_change(job_dir: Path) -> float:
    """The newest mtime of a job directory and its runs (a run's exit.json marks its end)."""
    times = [job_dir.stat().st_mtime]
    for run in job_dir.iterdir():
        try:
            times.append(run.stat(follow_symlinks=False).st_mtime)
        except OSError:
            pass
    return max(times)


def prune_job_dirs(jobs_root: Path, active: set[int], now: float,
                   retention_s: float = JOB_DIR_RETENTION_S) -> list[int]:
    """Remove the directories of finished jobs older than the retention; returns their ids."""
    entries = {}
    try:
        with os.scandir(jobs_root) as it:
            for e in it:
                if e.name.isdigit() and e.is_dir(follow_symlinks=False):
                    entries[int(e.name)] = _last_change(Path(e.path))
    except FileNotFoundError:
        return []
    gone = prunable(entries, active, now, retention_s)
    for job_id in gone:
        shutil.rmtree(Path(jobs_root) / str(job_id), ignore_errors=True)
    return gone
