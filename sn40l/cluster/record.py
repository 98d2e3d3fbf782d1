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

from sn40l.errors import ConfigError


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_cluster_name(name: object) -> str:
    """A cluster name is 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'
    (it becomes part of actor, file and shared-memory names)."""
    if (not isinstance(name, str) or not 1 <= len(name) <= 64 or name[0] in ".-"
            or not set(name) <= _NAME_CHARS):
        raise ConfigError(f"cluster name {name!r} is not allowed; use 1 to 64 letters, digits, "
                          "'.', '_' or '-', not starting with '.' or '-'")
    return name


def node_name(index: int) -> str:
    """Slurm-style host name of emulated node ``index``: sn00, sn01, ..."""
    return f"sn{index:02d}"


def state_dir() -> Path:
    """``$SN40L_STATE_DIR`` or ``~/.sn40l``; created on first use."""
    path = Path(os.environ.get("SN40L_STATE_DIR") or Path.home() / ".sn40l")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_path(name: str = "default") -> Path:
    check_cluster_name(name)
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


def load_partitions(path: str) -> list[dict]:
    """Scheduler partitions, kept in the cluster record for the scheduler's controller (which
    starts on the first Slurm command), from a YAML file: ``partitions: [{name, nodes,
    default, max_time, default_time, max_nodes}]``. A key outside these is refused."""
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"--partitions {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--partitions {path}: not valid YAML: "
                          f"{str(exc).splitlines()[0]}") from None
    parts = data.get("partitions") if isinstance(data, dict) else None
    if not isinstance(parts, list) or not parts or not all(
            isinstance(p, dict) and p.get("name") for p in parts):
        raise ConfigError(f"--partitions {path}: expected 'partitions:' with a list of "
                          "mappings, each with a 'name' (and nodes, default, max_time, "
                          "default_time, max_nodes)")
    for i, part in enumerate(parts):
        unknown = sorted(set(map(str, part)) - PARTITION_KEYS)
        if unknown:
            raise ConfigError(f"--partitions {path}: partitions[{i}] has unknown key(s) "
                              f"{unknown}; allowed: {', '.join(sorted(PARTITION_KEYS))}")
    return parts


PARTITION_KEYS = frozenset({"name", "nodes", "default", "max_time", "default_time", "max_nodes"})
