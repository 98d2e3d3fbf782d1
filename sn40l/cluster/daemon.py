"""The process that owns an embedded local Ray and the socket actors of ``sn40l cluster up``.

``sn40l cluster up`` (without ``--address``) starts this module in a new session. It starts Ray
in-process, brings the sockets up, writes the cluster record (with its own pid and the Ray
address), and then waits. SIGTERM (``sn40l cluster down``) stops the sockets and Ray and removes
the record. A failure during start-up is written to ``clusters/<name>.error`` for ``up`` to show.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

import ray

from sn40l.cluster.cluster import Cluster, ensure_ray, local_auth_mode
from sn40l.cluster.record import record_path, remove_record, write_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sn40l.cluster.daemon")
    parser.add_argument("--name", default="default")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--sockets-per-node", type=int, default=None)
    parser.add_argument("--profile", default="sn40l")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--partitions", default=None)
    args = parser.parse_args(argv)
    error_file = record_path(args.name).with_suffix(".error")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        ensure_ray(None, num_cpus=args.num_cpus)
        cluster = Cluster.start(nodes=args.nodes, sockets_per_node=args.sockets_per_node,
                                profile=args.profile, name=args.name)
    except BaseException as exc:  # noqa: BLE001 - reported to `cluster up`, then re-raised
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        if ray.is_initialized():
            ray.shutdown()
        return 1
    write_record({"name": args.name, "address": ray.get_runtime_context().gcs_address,
                  "nodes": cluster.spec.nodes, "sockets_per_node": cluster.spec.sockets_per_node,
                  "profile": cluster.profile.name, "daemon_pid": os.getpid(),
                  "embedded": True, "auth": local_auth_mode(),
                  "partitions": load_partitions(args.partitions) if args.partitions else None})
    while not stop.wait(0.5):
        pass
    try:
        cluster.stop()
    finally:
        remove_record(args.name)
        ray.shutdown()
    return 0


def load_partitions(path: str) -> list[dict]:
    """Scheduler partitions, kept in the cluster record for the scheduler's controller (which
    starts on the first Slurm command), from a YAML file: ``partitions: [{name, nodes, default, max_time,
    default_time, max_nodes}]``."""
    import yaml

    from sn40l.errors import ConfigError

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"--partitions {path}: {exc.strerror}") from None
    parts = data.get("partitions") if isinstance(data, dict) else None
    if not isinstance(parts, list) or not parts or not all(
            isinstance(p, dict) and p.get("name") for p in parts):
        raise ConfigError(f"--partitions {path}: expected 'partitions:' with a list of "
                          "mappings, each with a 'name' (and nodes, default, max_time, "
                          "default_time, max_nodes)")
    return parts


if __name__ == "__main__":
    sys.exit(main())
