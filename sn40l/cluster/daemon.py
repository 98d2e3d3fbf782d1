"""The process that owns an embedded local Ray and the socket actors of ``sn40l cluster up``.

``sn40l cluster up`` (without ``--address``) starts this module in a new session. It starts Ray
in-process, brings the sockets up, writes the cluster record (with its own pid and the Ray
address), and then waits. SIGTERM (``sn40l cluster down``) stops the sockets (and their
shared-memory segments) and Ray, removes Ray's socket files and then the record. A failure
during start-up is written to ``clusters/<name>.error`` for ``up`` to show.
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
from sn40l.cluster.record import load_partitions, record_path, remove_record, write_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sn40l.cluster.daemon")
    parser.add_argument("--name", default="default")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--sockets-per-node", type=int, default=None)
    parser.add_argument("--profile", default="sn40l")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--partitions", default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    error_file = record_path(args.name).with_suffix(".error")
    stop = threading.Event()
    starting = [True]

    def on_signal(*_):
        stop.set()
        if starting[0]:  # `cluster up` gave up (its --timeout): abandon the start-up
            raise _Stopped("stopped during start-up")

    try:
        ensure_ray(None, num_cpus=args.num_cpus)
        # ray.init installs its own SIGTERM handler (which exits at once); ours replaces it so
        # that `cluster down` runs the clean-up below: sockets, segments, Ray.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        cluster = Cluster.start(nodes=args.nodes, sockets_per_node=args.sockets_per_node,
                                profile=args.profile, name=args.name, timeout_s=args.timeout)
        starting[0] = False
    except BaseException as exc:  # noqa: BLE001 - reported to `cluster up`
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        _shutdown_ray()
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
        _shutdown_ray()
        remove_record(args.name)  # last: `cluster down` waits for the record to go
    return 0


class _Stopped(BaseException):
    """SIGTERM/SIGINT arrived while the cluster was still starting."""


def _shutdown_ray() -> None:
    """Stop the embedded Ray and remove the Unix socket files its session left."""
    if not ray.is_initialized():
        return
    try:
        from ray._private import worker  # the session directory of this process's Ray

        session = worker._global_node.get_session_dir_path()
    except (ImportError, AttributeError):  # pragma: no cover - other Ray versions
        session = None
    ray.shutdown()
    if session:
        sockets = os.path.join(session, "sockets")
        for entry in os.listdir(sockets) if os.path.isdir(sockets) else ():
            try:
                os.unlink(os.path.join(sockets, entry))
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
