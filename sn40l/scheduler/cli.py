"""``sn40l sbatch|squeue|scancel|sinfo|sacct|scontrol|srun``: the Slurm commands.

Each parses its own options (getopt_long rules, Slurm's messages and exit codes) and makes one
request to the controller over its Unix socket; neither Ray nor numpy is imported unless the
controller must first be started (on first use after ``sn40l cluster up``).
"""

from __future__ import annotations

import os
import sys
import time

from sn40l.scheduler.client import Client, ControllerError, ControllerUnavailable
from sn40l.scheduler.connect import connect
from sn40l.scheduler.types import FINAL_STATES
from sn40l.scheduler.getopt import Opt, Parser, UsageError

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
    except ControllerUnavailable as exc:
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
        recs = client.call("show_job", job=str(job_id))
        if all(r["state"] in FINAL_STATES for r in recs):
            return max((r.get("exit_code") or (1 if r["state"] != "COMPLETED" else 0))
                       for r in recs)
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


def _state_list(text: str) -> list[str] | None:
    from sn40l.scheduler.views import LONG_STATES, STATE_CODES

    out = []
    for typed in text.split(","):
        s = typed.strip().upper()
        if s == "ALL":
            return None
        if s in LONG_STATES:
            out.append(LONG_STATES[s])
        elif s in STATE_CODES:
            out.append(s)
        else:
            raise ValueError(typed.strip())
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
        jobs = client.call("queue", **args)
    except ControllerError as exc:
        print(f"slurm_load_jobs error: {exc}", file=sys.stderr)
        return 1
    jobs = views.squeue_order(jobs) if opts.get("array") else views.collapse_arrays(jobs)
    fmt = opts.get("format") or (views.SQUEUE_LONG if opts.get("long") else
                                 views.SQUEUE_DEFAULT)
    now = time.time()
    lines = views.render(fmt, jobs, lambda j, f: views.squeue_value(j, f, now),
                         views.SQUEUE_HEADERS, header=not opts.get("noheader"))
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

    opts, operands, _ = Parser("sinfo", SINFO_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: sinfo [-N] [-l] [-R] [-p partition] [-t states] [-h] [-o format]")
        return 0
    info = connect("sinfo").call("nodes")
    if opts.get("nodes"):
        wanted = set(hostlist.expand(opts["nodes"]))
        info["nodes"] = [n for n in info["nodes"] if n["name"] in wanted]
        for p in info["partitions"]:
            p["nodes"] = [n for n in p["nodes"] if n in wanted]
    header = not opts.get("noheader")
    if opts.get("reasons"):
        rows = [n for n in info["nodes"] if n["reason"]]
        print_rows = [f"{'REASON':<20} {'USER':<9} {'TIMESTAMP':<19} NODELIST"] if header \
            else []
        from sn40l.scheduler.timespec import format_timestamp

        for n in rows:
            print_rows.append(f"{n['reason'][:20]:<20} {'root':<9} "
                              f"{format_timestamp(n['since']):<19} {n['name']}")
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
    for line in views.render(fmt, rows, views.sinfo_value, views.SINFO_HEADERS, header):
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
    from sn40l.scheduler import views
    from sn40l.scheduler.timespec import parse_time_point

    opts, operands, _ = Parser("sacct", SACCT_OPTS).parse(argv)
    if opts.get("help"):
        print("Usage: sacct [-j jobs] [-u users] [-a] [-S start] [-E end] [-s states] "
              "[--name names] [-X] [-n] [-p|-P] [-b|-l] [-o fields]")
        return 0
    if opts.get("helpformat"):
        print(" ".join(views.SACCT_FIELDS))
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
        fields = views.SACCT_BRIEF
    elif opts.get("long"):
        fields = views.SACCT_LONG
    else:
        fields = views.SACCT_DEFAULT
    try:
        jobs = connect("sacct").call("sacct", **args)
    except ControllerError as exc:
        _err("sacct", str(exc))
        return 1
    rows = views.sacct_rows(jobs, with_steps=not opts.get("allocations"))
    delimiter = None
    if opts.get("parsable") or opts.get("parsable2"):
        delimiter = opts.get("delimiter") or "|"
    try:
        lines = views.render_sacct(rows, fields, header=not opts.get("noheader"),
                                   delimiter=delimiter, trailing=bool(opts.get("parsable")))
    except KeyError as exc:
        _err("sacct", f"Invalid field requested: \"{exc.args[0]}\"")
        return 1
    for line in lines:
        print(line)
    return 0


# -- scontrol -----------------------------------------------------------------------------
def cmd_scontrol(argv: list[str]) -> int:
    from sn40l.scheduler import hostlist, views

    args = [a for a in argv if a not in ("-d", "--details", "-o", "--oneliner")]
    oneliner = any(a in ("-o", "--oneliner") for a in argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print("Usage: scontrol show job|node|partition|hostnames [ID] | hold|release|requeue|"
              "requeuehold JOBID... | update JobId=ID KEY=VALUE... | update NodeName=NAME "
              "State=DOWN|DRAIN|RESUME Reason=TEXT | write batch_script JOBID [FILE]")
        return 0
    verb = args[0].lower()

    def out(text: str) -> None:
        if oneliner:
            text = " ".join(text.split("\n   ")).rstrip() + "\n"
        sys.stdout.write(text + ("" if oneliner else "\n"))

    if verb == "show":
        if len(args) < 2:
            _err("scontrol", "show what? (job, node, partition, hostnames, hostlist)")
            return 1
        what = args[1].lower()
        ident = args[2] if len(args) > 2 else None
        if what in ("hostnames", "hostname"):
            for h in hostlist.expand(ident or os.environ.get("SLURM_JOB_NODELIST", "")):
                print(h)
            return 0
        if what == "hostlist":
            print(hostlist.compress((ident or "").split(",")))
            return 0
        client = connect("scontrol")
        if what in ("job", "jobs", "jobid"):
            try:
                if ident:
                    jobs = client.call("show_job", job=ident)
                else:
                    jobs = client.call("queue", all_states=True)
            except ControllerError as exc:
                print(f"slurm_load_jobs error: {exc}", file=sys.stderr)
                return 1
            if not jobs:
                print("No jobs in the system")
            for job in jobs:
                out(views.show_job(job))
            return 0
        if what in ("node", "nodes"):
            info = client.call("nodes")
            nodes = info["nodes"]
            if ident:
                wanted = set(hostlist.expand(ident))
                nodes = [n for n in nodes if n["name"] in wanted]
                if not nodes:
                    print(f"Node {ident} not found", file=sys.stderr)
                    return 1
            for node in nodes:
                out(views.show_node(node, info))
            return 0
        if what in ("partition", "partitions"):
            parts = client.call("nodes")["partitions"]
            if ident:
                parts = [p for p in parts if p["name"] == ident]
                if not parts:
                    print(f"Partition {ident} not found", file=sys.stderr)
                    return 1
            for p in parts:
                out(views.show_partition(p))
            return 0
        _err("scontrol", f"invalid entity: {args[1]} for keyword: show")
        return 1
    client = connect("scontrol")
    if verb in ("hold", "release", "uhold", "requeue", "requeuehold"):
        tokens = [t for a in args[1:] for t in a.split(",") if t]
        if not tokens:
            _err("scontrol", f"{verb} requires a job id")
            return 1
        try:
            if verb in ("hold", "uhold", "release"):
                errors = client.call("hold", jobs=tokens, release=verb == "release")
            else:
                errors = client.call("requeue", jobs=tokens, hold=verb == "requeuehold")
        except ControllerError as exc:
            errors = [str(exc)]
        for e in errors:
            print(e, file=sys.stderr)
        return 1 if errors else 0
    if verb == "update":
        fields = {}
        for a in args[1:]:
            key, eq, value = a.partition("=")
            if not eq:
                _err("scontrol", f"invalid update argument {a!r}; expected KEY=VALUE")
                return 1
            fields[key] = value
        lower = {k.lower(): k for k in fields}
        try:
            if "jobid" in lower or "job" in lower:
                job = fields.pop(lower.get("jobid") or lower["job"])
                client.call("update_job", job=job, fields=fields)
            elif "nodename" in lower:
                names = hostlist.expand(fields.pop(lower["nodename"]))
                state = fields.pop(lower.get("state", "State"), None)
                reason = fields.pop(lower.get("reason", "Reason"), None)
                if state is None:
                    _err("scontrol", "update of a node needs State=")
                    return 1
                client.call("update_node", names=names, state=state, reason=reason)
            else:
                _err("scontrol", "update needs JobId= or NodeName=")
                return 1
        except ControllerError as exc:
            if exc.code == "InvalidValue":  # a value scontrol itself refuses, as Slurm's does
                _err("scontrol", str(exc))
            else:
                print(f"slurm_update error: {exc}", file=sys.stderr)
            return 1
        return 0
    if verb == "write" and len(args) >= 3 and args[1].lower() == "batch_script":
        try:
            script = client.call("write_script", job=args[2])
        except ControllerError as exc:
            _err("scontrol", str(exc))
            return 1
        target = args[3] if len(args) > 3 else f"slurm-{args[2]}.sh"
        if target == "-":
            sys.stdout.write(script)
        else:
            with open(target, "w") as f:
                f.write(script)
            print(f"batch script for job {args[2]} written to {target}")
        return 0
    _err("scontrol", f"invalid keyword: {args[0]}")
    return 1


# -- srun ---------------------------------------------------------------------------------
def cmd_srun(argv: list[str]) -> int:
    from sn40l.scheduler.srun import srun

    return srun(argv)
