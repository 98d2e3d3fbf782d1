"""The record of a running cluster in the state directory, so later commands can find it.

``$SN40L_STATE_DIR/clusters/<name>.json`` holds the Ray address, the cluster's shape and, for a
cluster on an embedded local Ray, the pid of the daemon process that owns that Ray. Records are
written atomically (write to a temporary file, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil


def state_dir() -> Path:
    """``$SN40L_STATE_DIR`` or ``~/.sn40l``; created on first use."""
    path = Path(os.environ.get("SN40L_STATE_DIR") or Path.home() / ".sn40l")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(name: str = "default") -> Path:
    return state_dir() / "clusters" / f"{name}.json"


def write_record(record: dict) -> Path:
    path = record_path(record["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_record(name: str = "default") -> dict | None:
    """The record of cluster ``name``, or None when there is none or its daemon has died."""
    path = record_path(name)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = record.get("daemon_pid")
    if pid is not None and not _alive(pid):
        remove_record(name)  # the daemon died without cleaning up: the cluster is gone
        return None
    return record


def remove_record(name: str = "default") -> None:
    try:
        record_path(name).unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
