"""``sn40l sbatch|squeue|scancel|sinfo|sacct|scontrol|srun``: the Slurm commands.

Each parses its own options (getopt_long rules, Slurm's messages and exit codes) and makes one
request to the controller over its Unix socket; neither Ray nor numpy is imported unless the
controller must first be started (on first use after ``sn40l cluster up``).
"""

from __future__ import annotations

import os
import sys
import time

from sn40l.scheduler.client import (Client, ControllerError, ControllerUnavailable,
                                    ControllerUntrusted)
from sn40l.scheduler.connect import connect
from sn40l.scheduler.getopt import Opt, Parser, UsageError
from sn40l.scheduler.replies import ReplyError, job_from_wire
from sn40l.scheduler.types import STATE_CODES, JobState

COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "sacct", "scontrol", "srun")


def _err(prog: str, msg: str) -> None:
    print(f"{prog}: error: {msg}", file=sys.stderr)


def run_command(name: str, argv: list[str]) -> int:
    fn = globals()[f"cmd_{name}"]
    try:
        return fn(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        print(f"Try \"{name} --help\" for more information", file=sys.stderr)
        return 255 if name in ("sbatch", "srun") else 1
    except (ControllerUnavailable, ControllerUntrusted, ReplyError) as exc:
        _err(name, str(exc))
        return 1


# -- sbatch -------------------------------------------------------------------------------
def cmd_sbatch(argv: list[str]) -> int:
    from sn40l.scheduler.request import SBATCH_USAGE, SubmitError, build_request

    stdin_text = None
    try:
        if not [a for a in argv if not a.startswith("-")] and not any(
                a.startswith("--wrap") for a in argv) and not sys.stdin.isatty():
            stdin_text = sys.stdin.read()
        req = build_request(argv, stdin_text=stdin_text)
    except SubmitError as exc:
        print(f"sbatch: {exc}", file=sys.stderr)
        return exc.exit_code
    if req.get("help"):
        print(SBATCH_USAGE, end="")
        return 0
    client = connect("sbatch")
    try:
        out = client.call("submit", req=req)
    except ControllerError as exc:
        _err("sbatch", f"Batch job submission failed: {exc}")
        return 1
    if out.get("test_only"):
        if not out["nodes"]:
            _err("sbatch", "Job can never start: Requested node configuration is not available")
            return 1
        from sn40l.scheduler import hostlist
        from sn40l.scheduler.timespec import format_timestamp

        print(f"sbatch: Job {out.get('job_id', 0) or 'N/A'} to start at "
              f"{format_timestamp(out['start'])} using {out['cpus']} processors on nodes "
              f"{hostlist.compress(out['nodes'])} in partition {out['partition']}",
              file=sys.stderr)
        return 0
    job_id = out["job_id"]
    if req.get("parsable"):
        print(job_id)
    elif not req.get("quiet"):
        print(f"Submitted batch job {job_id}")
    if req.get("wait"):
        return _wait_exit(client, job_id)
    return 0


def _wait_exit(client: Client, job_id: int) -> int:
    while True:
        jobs = [job_from_wire(r) for r in client.call("show_job", job=str(job_id))]
        if all(j.is_final for j in jobs):
            return max(j.exit_code or (0 if j.state is JobState.COMPLETED else 1) for j in jobs)
        time.sleep(0.1)


# -- squeue -------------------------------------------------------------------------------
SQUEUE_OPTS = [
    Opt("u", "user", "yes", "user"), Opt("j", "jobs", "yes", "jobs"),
    Opt("t", "states", "yes", "states"), Opt("p", "partition", "yes", "partition"),
    Opt("r", "array", "no", "array"), Opt("l", "long", "no", "long"),
    Opt("o", "format", "yes", "format"), Opt("h", "noheader", "no", "noheader"),
    Opt("n", "name", "yes", "name"), Opt("", "me", "no", "me"),
    Opt("a", "all", "no", "all"), Opt("M", "clusters", "yes", "clusters"),
    Opt("", "help", "no", "help"), Opt("v", "verbose", "no", "verbose"),
]


_BY_CODE = {code: state for state, code in STATE_CODES.items()}


def _state_list(text: str) -> list[str] | None:
    """The long state names of a ``-t``/``-s`` list (codes or names, any case); None for
    ``all``; ValueError naming the first unknown one."""
    out = []
    for typed in text.split(","):
        s = typed.strip().upper()
        if s == "ALL":
            return None
        state = _BY_CODE.get(s) or JobState.__members__.get(s)
        if state is None:
            raise ValueError(typed.strip())
        out.append(state.value)
    return out


def cmd_squeue(argv: list[str]) -> int:
    from sn40l.scheduler import views

    opts, operands, _ = Parser("squeue", SQUEUE_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: squeue [-u user] [-j jobs] [-t states] [-p partition] [-n name] [-r] "
              "[-l] [-h] [-o format] [--me]")
        return 0
    args: dict = {}
    if opts.get("user"):
        args["users"] = opts["user"].split(",")
    if opts.get("me"):
        import pwd

        args["users"] = [pwd.getpwuid(os.getuid()).pw_name]
    if opts.get("jobs"):
        args["jobs"] = opts["jobs"].split(",")
    if opts.get("partition"):
        args["partitions"] = opts["partition"].split(",")
    if opts.get("name"):
        args["names"] = opts["name"].split(",")
    if opts.get("states"):
        try:
            states = _state_list(opts["states"])
        except ValueError as exc:
            from sn40l.scheduler.types import SQUEUE_VALID_STATES

            _err("squeue", f"Invalid job state specified: {exc}")
            _err("squeue", f"Valid job states include: {SQUEUE_VALID_STATES}")
            return 1
        if states is None:
            args["all_states"] = True
        else:
            args["states"] = states
    client = connect("squeue")
    try:
        jobs = client.call("queue", compact=True, **args)
    except ControllerError as exc:
        print(f"slurm_load_jobs error: {exc}", file=sys.stderr)
        return 1
    rows = views.queue_rows([job_from_wire(r) for r in jobs], bool(opts.get("array")))
    fmt = opts.get("format") or (views.SQUEUE_LONG if opts.get("long") else
                                 views.SQUEUE_DEFAULT)
    lines = views.render(fmt, rows, views.SQUEUE_FIELDS, header=not opts.get("noheader"))
    if opts.get("long"):
        print(time.strftime("%a %b %d %H:%M:%S %Y"))
    for line in lines:
        print(line)
    return 0


# -- scancel ------------------------------------------------------------------------------
SCANCEL_OPTS = [
    Opt("u", "user", "yes", "user"), Opt("n", "name", "yes", "name"),
    Opt("", "jobname", "yes", "name"), Opt("t", "state", "yes", "state"),
    Opt("p", "partition", "yes", "partition"), Opt("s", "signal", "yes", "signal"),
    Opt("b", "batch", "no", "batch"), Opt("f", "full", "no", "full"),
    Opt("Q", "quiet", "no", "quiet"), Opt("v", "verbose", "no", "verbose"),
    Opt("M", "clusters", "yes", "clusters"), Opt("", "me", "no", "me"),
    Opt("", "help", "no", "help"),
]


def _signal_number(text: str) -> int:
    import signal

    t = text.upper()
    if t.isdigit():
        return int(t)
    name = t if t.startswith("SIG") else "SIG" + t
    return int(getattr(signal, name))


def cmd_scancel(argv: list[str]) -> int:
    opts, operands, _ = Parser("scancel", SCANCEL_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: scancel [-u user] [-n name] [-t state] [-p partition] [-s signal] "
              "[job_id[_array_id]...]")
        return 0
    tokens = [t for op in operands for t in op.split(",") if t]
    args: dict = {"jobs": tokens}
    if opts.get("me"):
        import pwd

        opts["user"] = pwd.getpwuid(os.getuid()).pw_name
    for key in ("user", "name", "partition"):
        if opts.get(key):
            args[key] = opts[key]
    if opts.get("state"):
        try:
            args["states"] = _state_list(opts["state"])
        except ValueError as exc:
            _err("scancel", f"Invalid job state specified: {exc}")
            return 1
    if opts.get("signal"):
        try:
            args["signal_num"] = _signal_number(opts["signal"])
        except (AttributeError, ValueError):
            _err("scancel", f"Invalid signal name: {opts['signal']}")
            return 1
    if not tokens and not any(k in args for k in ("user", "name", "partition", "states")):
        _err("scancel", "No job identification provided")
        return 1
    try:
        out = connect("scancel").call("cancel", **args)
    except ControllerError as exc:
        _err("scancel", str(exc))
        return 1
    for msg in out["errors"]:
        _err("scancel", msg)
    return 1 if out["errors"] else 0


# -- sinfo --------------------------------------------------------------------------------
SINFO_OPTS = [
    Opt("N", "Node", "no", "node"), Opt("l", "long", "no", "long"),
    Opt("p", "partition", "yes", "partition"), Opt("h", "noheader", "no", "noheader"),
    Opt("o", "format", "yes", "format"), Opt("R", "list-reasons", "no", "reasons"),
    Opt("t", "states", "yes", "states"), Opt("n", "nodes", "yes", "nodes"),
    Opt("s", "summarize", "no", "summarize"), Opt("a", "all", "no", "all"),
    Opt("M", "clusters", "yes", "clusters"), Opt("", "help", "no", "help"),
    Opt("v", "verbose", "no", "verbose"),
]


def cmd_sinfo(argv: list[str]) -> int:
    from sn40l.scheduler import hostlist, views
    from sn40l.scheduler.nodeinfo import cluster_from_wire

    opts, operands, _ = Parser("sinfo", SINFO_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: sinfo [-N] [-l] [-R] [-p partition] [-t states] [-h] [-o format]")
        return 0
    info = cluster_from_wire(connect("sinfo").call("nodes"))
    if opts.get("nodes"):
        info = info.only(set(hostlist.expand(opts["nodes"])))
    header = not opts.get("noheader")
    if opts.get("reasons"):
        print_rows = [f"{'REASON':<20} {'USER':<9} {'TIMESTAMP':<19} NODELIST"] if header \
            else []
        from sn40l.scheduler.timespec import format_timestamp

        for n in info.nodes:
            if n.reason:
                print_rows.append(f"{n.reason[:20]:<20} {'root':<9} "
                                  f"{format_timestamp(n.since):<19} {n.name}")
        print("\n".join(print_rows))
        return 0
    states = opts["states"].lower().split(",") if opts.get("states") else None
    partitions = opts["partition"].split(",") if opts.get("partition") else None
    per_node = bool(opts.get("node"))
    rows = views.sinfo_rows(info, per_node, partitions, states)
    if opts.get("format"):
        fmt = opts["format"]
    elif per_node:
        fmt = views.SINFO_NODES_LONG if opts.get("long") else views.SINFO_NODES
    else:
        fmt = views.SINFO_LONG if opts.get("long") else views.SINFO_DEFAULT
    if opts.get("long"):
        print(time.strftime("%a %b %d %H:%M:%S %Y"))
    for line in views.render(fmt, rows, views.SINFO_FIELDS, header):
        print(line)
    return 0


# -- sacct --------------------------------------------------------------------------------
SACCT_OPTS = [
    Opt("j", "jobs", "yes", "jobs"), Opt("u", "user", "yes", "user"),
    Opt("", "uid", "yes", "user"), Opt("a", "allusers", "no", "allusers"),
    Opt("S", "starttime", "yes", "start"), Opt("E", "endtime", "yes", "end"),
    Opt("o", "format", "yes", "format"), Opt("X", "allocations", "no", "allocations"),
    Opt("n", "noheader", "no", "noheader"), Opt("p", "parsable", "no", "parsable"),
    Opt("P", "parsable2", "no", "parsable2"), Opt("s", "state", "yes", "state"),
    Opt("", "name", "yes", "name"), Opt("r", "partition", "yes", "partition"),
    Opt("b", "brief", "no", "brief"), Opt("l", "long", "no", "long"),
    Opt("D", "duplicates", "no", "duplicates"), Opt("", "delimiter", "yes", "delimiter"),
    Opt("e", "helpformat", "no", "helpformat"), Opt("L", "allclusters", "no", "allclusters"),
    Opt("M", "clusters", "yes", "clusters"), Opt("", "help", "no", "help"),
    Opt("v", "verbose", "no", "verbose"),
]


def cmd_sacct(argv: list[str]) -> int:
    from sn40l.scheduler import details
    from sn40l.scheduler.replies import shown_from_wire
    from sn40l.scheduler.timespec import parse_time_point

    opts, operands, _ = Parser("sacct", SACCT_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: sacct [-j jobs] [-u users] [-a] [-S start] [-E end] [-s states] "
              "[--name names] [-X] [-n] [-p|-P] [-b|-l] [-o fields]")
        return 0
    if opts.get("helpformat"):
        print(" ".join(f.name for f in details.SACCT_FIELDS.values()))
        return 0
    args: dict = {}
    if opts.get("jobs"):
        args["jobs"] = opts["jobs"].split(",")
    if opts.get("user"):
        args["users"] = opts["user"].split(",")
    if opts.get("allusers"):
        args["all_users"] = True
    if opts.get("name"):
        args["names"] = opts["name"].split(",")
    if opts.get("partition"):
        args["partitions"] = opts["partition"].split(",")
    if opts.get("state"):
        try:
            args["states"] = _state_list(opts["state"])
        except ValueError as exc:
            _err("sacct", f"Invalid job state specified: {exc}")
            return 1
    try:
        if opts.get("start"):
            args["start"] = parse_time_point(opts["start"])
        elif not opts.get("jobs"):
            args["start"] = parse_time_point("today")  # Slurm: since midnight
        if opts.get("end"):
            args["end"] = parse_time_point(opts["end"])
    except ValueError as exc:
        _err("sacct", f"Invalid time specification: {exc}")
        return 1
    if opts.get("format"):
        fields = [f for f in opts["format"].replace(" ", ",").split(",") if f]
    elif opts.get("brief"):
        fields = details.SACCT_BRIEF
    elif opts.get("long"):
        fields = details.SACCT_LONG
    else:
        fields = details.SACCT_DEFAULT
    try:
        client = connect("sacct")
        jobs = client.call("sacct", compact=True, **args)
    except ControllerError as exc:
        _err("sacct", str(exc))
        return 1
    rows = details.acct_rows([shown_from_wire(r) for r in jobs],
                             with_steps=not opts.get("allocations"), cluster=client.cluster)
    delimiter = None
    if opts.get("parsable") or opts.get("parsable2"):
        delimiter = opts.get("delimiter") or "|"
    try:
        lines = details.render_sacct(rows, fields, header=not opts.get("noheader"),
                                     delimiter=delimiter, trailing=bool(opts.get("parsable")))
    except details.UnknownField as exc:
        _err("sacct", f"Invalid field requested: \"{exc.args[0]}\"")
        return 1
    for line in lines:
        print(line)
    return 0


# -- scontrol -----------------------------------------------------------------------------
def cmd_scontrol(argv: list[str]) -> int:
    from sn40l.scheduler.scontrol import scontrol

    return scontrol(argv)


# -- srun ---------------------------------------------------------------------------------
def cmd_srun(argv: list[str]) -> int:
    from sn40l.scheduler.srun import srun

    return srun(argv)
