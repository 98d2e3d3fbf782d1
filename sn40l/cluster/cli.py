"""``sn40l cluster up|status|down``: start, inspect and stop an emulated cluster."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from sn40l.cluster.record import (check_cluster_name, load_partitions, read_record, record_path,
                                  remove_record, state_dir, write_record)
from sn40l.errors import ClusterError, ConfigError
from sn40l.hardware.units import format_bytes
from sn40l.output import emit_json
from sn40l.progress import progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="start, inspect and stop an emulated cluster")
    verbs = p.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="start N nodes x S socket actors")
    up.add_argument("--nodes", type=int, default=1, help="emulated nodes (default 1)")
    up.add_argument("--sockets-per-node", type=int, default=None,
                    help="sockets per node: a layout of the profile (sn40l: 8 or 16)")
    up.add_argument("--profile", default="sn40l",
                    help="sn40l, dgx-a100, dgx-h100 or the path of a profile .yaml")
    up.add_argument("--address", default=None,
                    help="'auto' or HOST:PORT of an existing Ray cluster (default: an embedded "
                         "local Ray owned by a background process)")
    up.add_argument("--name", default="default", help="cluster name (default 'default')")
    up.add_argument("--quiet", action="store_true", help="no progress on stderr")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for start-up")
    up.add_argument("--partitions", default=None,
                    help="YAML file of scheduler partitions (default: one partition 'sn40l' "
                         "with every node)")
    up.set_defaults(func=cmd_up)
    st = verbs.add_parser("status", help="each socket's state and per-tier used/free")
    st.add_argument("--name", default="default")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.set_defaults(func=cmd_status)
    tr = verbs.add_parser("trace", help="write every socket's modeled events as Chrome trace "
                                         "JSON (open it in Perfetto)")
    tr.add_argument("-o", "--output", required=True, help="path of the .json file to write")
    tr.add_argument("--clear", action="store_true", help="empty the sockets' event logs after")
    tr.add_argument("--name", default="default")
    tr.set_defaults(func=cmd_trace)
    down = verbs.add_parser("down", help="stop the sockets (and the embedded Ray)")
    down.add_argument("--name", default="default")
    down.set_defaults(func=cmd_down)


def _already_running(record: dict) -> ClusterError:
    return ClusterError(
        f"cluster {record['name']!r} is already running ({record['nodes']} nodes x "
        f"{record['sockets_per_node']} sockets, profile {record['profile']}, Ray at "
        f"{record['address']}); stop it first with 'sn40l cluster down'")


def _validate_up(args: argparse.Namespace):
    from sn40l.hardware.profile import load_profile

    check_cluster_name(args.name)
    if args.nodes < 1 or args.nodes > 256:
        raise ConfigError(f"--nodes {args.nodes} is out of range; allowed 1 to 256")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:
        raise ConfigError(f"--timeout {args.timeout:g} is out of range; allowed more than 0 "
                          f"up to {MAX_TIMEOUT_S} seconds")
    if args.partitions:
        _check_partitions(args.partitions, args.nodes)
    profile = load_profile(args.profile)
    if args.sockets_per_node is not None:
        profile = profile.with_sockets_per_node(args.sockets_per_node)
    if args.address:
        _check_address(args.address, args.timeout)
    return profile


MAX_TIMEOUT_S = 86400


def _check_partitions(path: str, nodes: int) -> None:
    """A bad partitions file (unknown nodes, bad time limits) fails here, before anything
    starts, with the scheduler's own message."""
    from sn40l.cluster.record import node_name
    from sn40l.scheduler.controller import _partitions  # the scheduler's one set of rules

    try:
        _partitions(load_partitions(path), [node_name(i) for i in range(nodes)])
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--partitions {path}: {exc}") from None


def _check_address(address: str, timeout_s: float) -> None:
    """HOST:PORT of a Ray head must accept a TCP connection (Ray itself would retry for
    minutes, past any --timeout); 'auto' is left to Ray."""
    import socket

    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} must be 'auto' or HOST:PORT with a port "
                          "from 1 to 65535")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout_s, 10)
                                 ).close()
    except OSError as exc:
        raise ConfigError(f"--address {address}: no Ray cluster answers there "
                          f"({exc.strerror or exc})") from None


def cmd_up(args: argparse.Namespace) -> int:
    profile = _validate_up(args)  # bad input fails here, before anything starts
    record = read_record(args.name)
    if record is not None:
        raise _already_running(record)
    t0 = time.perf_counter()
    with progress(1, "cluster up", quiet=args.quiet) as bar:
        bar.note(f"{args.nodes} node(s) of {args.sockets_per_node or profile.sockets_per_node}"
                 " sockets")
        if args.address:
            _up_on_existing_ray(args, profile)
        else:
            _up_embedded(args)
        bar.update()
    record = read_record(args.name)
    assert record is not None
    print(f"cluster {args.name!r} up: {record['nodes']} nodes x {record['sockets_per_node']} "
          f"sockets ({record['profile']}), Ray at {record['address']}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def _up_on_existing_ray(args: argparse.Namespace, profile) -> None:
    from sn40l.cluster.cluster import Cluster, ensure_ray
    import ray

    watchdog = _watchdog(args.timeout + 5, f"cluster {args.name!r} did not come up within "
                                       f"{args.timeout:g} s (Ray at {args.address})")
    try:
        ensure_ray(args.address)
        cluster = Cluster.start(nodes=args.nodes, sockets_per_node=profile.sockets_per_node,
                                profile=profile, name=args.name, detached=True,
                                timeout_s=args.timeout)
    finally:
        watchdog.cancel()
    write_record({"name": args.name, "address": ray.get_runtime_context().gcs_address,
                  "nodes": cluster.spec.nodes, "sockets_per_node": cluster.spec.sockets_per_node,
                  "profile": profile.name, "daemon_pid": None, "embedded": False,
                  "auth": os.environ.get("RAY_AUTH_MODE", "disabled"),
                  "partitions": load_partitions(args.partitions) if args.partitions else None})


def _up_embedded(args: argparse.Namespace) -> None:
    error_file = record_path(args.name).with_suffix(".error")
    error_file.unlink(missing_ok=True)
    log_path = state_dir() / "clusters" / f"{args.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sn40l.cluster.daemon", "--name", args.name,
           "--nodes", str(args.nodes), "--profile", args.profile, "--timeout", str(args.timeout)]
    if args.sockets_per_node is not None:
        cmd += ["--sockets-per-node", str(args.sockets_per_node)]
    if args.partitions:
        cmd += ["--partitions", os.path.abspath(args.partitions)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if read_record(args.name) is not None:
            return
        if proc.poll() is not None:
            detail = error_file.read_text() if error_file.exists() else log_path.read_text()[-2000:]
            error_file.unlink(missing_ok=True)  # its first line is the message; the log stays
            raise ClusterError(f"cluster {args.name!r} failed to start: "
                               f"{detail.strip().splitlines()[0] if detail.strip() else '?'} "
                               f"(log: {log_path})")
        time.sleep(0.1)
    _stop_daemon(args.name, proc.pid, grace_s=15)  # it stops what it started, then exits
    proc.wait()
    raise ClusterError(f"cluster {args.name!r} did not come up within {args.timeout:g} s "
                       f"(log: {log_path})")


def _watchdog(timeout_s: float, message: str):
    """A timer that ends this process with ``message`` when a Ray call blocks past
    ``--timeout`` (connecting to Ray cannot be interrupted otherwise)."""
    import threading

    def expire() -> None:
        print(f"sn40l cluster: error: {message}", file=sys.stderr, flush=True)
        os._exit(1)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    return timer


def _connect(name: str):
    from sn40l.cluster.cluster import Cluster, ensure_ray

    record = read_record(name)
    if record is None:
        raise ClusterError(f"no cluster named {name!r} is running; start one with "
                           "'sn40l cluster up'")
    ensure_ray(record["address"], auth=record.get("auth"))
    return record, Cluster.connect(name)


def cmd_status(args: argparse.Namespace) -> int:
    record, cluster = _connect(args.name)
    rows = cluster.status()
    if args.json:
        emit_json({"cluster": record, "sockets": rows}, indent=2)
        return 0
    up = sum(r["state"] == "up" for r in rows)
    print(f"CLUSTER {record['name']}  profile={record['profile']}  nodes={record['nodes']}  "
          f"sockets/node={record['sockets_per_node']}  up={up}/{len(rows)}  "
          f"ray={record['address']}")
    header = f"{'NODE':<6}{'SOCKET':>6}{'RANK':>6} {'STATE':<6}{'JOB':>6}  " + "  ".join(
        f"{t.upper() + ' USED/TOTAL':<22}" for t in ("sram", "hbm", "ddr"))
    print(header)
    for r in rows:
        tiers = "  ".join(
            f"{_used_total(r['tiers'].get(t)):<22}" for t in ("sram", "hbm", "ddr"))
        job = "-" if r["job"] is None else str(r["job"])
        print(f"{r['node']:<6}{r['socket']:>6}{r['rank']:>6} {r['state']:<6}{job:>6}  {tiers}")
    return 0 if up == len(rows) else 1


def _used_total(tier: dict | None) -> str:
    if not tier:
        return "-"
    return f"{format_bytes(tier['used'])} / {format_bytes(tier['capacity'])}"


def cmd_trace(args: argparse.Namespace) -> int:
    from sn40l.socket.clock import write_chrome_trace

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        raise ConfigError(f"-o {args.output}: directory {out_dir} does not exist or is not "
                          "writable")  # checked before the sockets are asked
    _, cluster = _connect(args.name)
    trace = cluster.chrome_trace(clear=args.clear)
    write_chrome_trace(args.output, trace)
    n = sum(e["ph"] == "X" for e in trace["traceEvents"])
    print(f"wrote {n} modeled events of {cluster.world_size} sockets to {args.output}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    record = read_record(args.name)
    if record is None:
        raise ClusterError(f"no cluster named {args.name!r} is running")
    pid = record.get("daemon_pid")
    if pid:
        _stop_daemon(args.name, pid)
    else:
        _, cluster = _connect(args.name)
        cluster.stop()
        remove_record(args.name)
    print(f"cluster {args.name!r} down")
    return 0


def _stop_daemon(name: str, pid: int, grace_s: float = 60.0) -> None:
    """SIGTERM the daemon of an embedded cluster and wait until it has stopped the sockets and
    Ray and every process of its session (its process group: Ray's own processes) is gone;
    after ``grace_s`` the group is killed and what it left in /dev/shm is swept."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pid):
        from sn40l.collectives.shm import sweep

        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.5)
        sweep()
    remove_record(name)


def _group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs (zombies excepted)."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


__all__ = ["register", "write_record"]
