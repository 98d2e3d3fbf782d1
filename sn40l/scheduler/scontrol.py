"""``sn40l scontrol``: show jobs, nodes and partitions; hold, release and requeue jobs; update
jobs and nodes; write a job's batch script. Slurm 22.05's verbs, messages and exit codes.

``show`` prints what :mod:`sn40l.scheduler.details` renders from the controller's reply, read
into typed values (:mod:`sn40l.scheduler.replies`); ``-o``/``--oneliner`` puts each record on
one line.
"""

from __future__ import annotations

import os
import sys

from sn40l.scheduler import details, hostlist
from sn40l.scheduler.client import ControllerError
from sn40l.scheduler.connect import connect
from sn40l.scheduler.nodeinfo import cluster_from_wire
from sn40l.scheduler.replies import shown_from_wire


def _err(msg: str) -> None:
    print(f"scontrol: error: {msg}", file=sys.stderr)


def scontrol(argv: list[str]) -> int:
    """Run ``scontrol argv``; the exit code."""
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
            _err("show what? (job, node, partition, hostnames, hostlist)")
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
            for record in jobs:
                out(details.show_job(shown_from_wire(record)))
            return 0
        if what in ("node", "nodes", "partition", "partitions"):
            info = cluster_from_wire(client.call("nodes"))
            if what.startswith("node"):
                items, show, kind = info.nodes, details.show_node, "Node"
                wanted = set(hostlist.expand(ident)) if ident else None
            else:
                items, show, kind = info.partitions, details.show_partition, "Partition"
                wanted = {ident} if ident else None
            if wanted is not None:
                items = tuple(item for item in items if item.name in wanted)
                if not items:
                    print(f"{kind} {ident} not found", file=sys.stderr)
                    return 1
            for item in items:
                out(show(item))
            return 0
        _err(f"invalid entity: {args[1]} for keyword: show")
        return 1
    client = connect("scontrol")
    if verb in ("hold", "release", "uhold", "requeue", "requeuehold"):
        tokens = [t for a in args[1:] for t in a.split(",") if t]
        if not tokens:
            _err(f"{verb} requires a job id")
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
                _err(f"invalid update argument {a!r}; expected KEY=VALUE")
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
                    _err("update of a node needs State=")
                    return 1
                client.call("update_node", names=names, state=state, reason=reason)
            else:
                _err("update needs JobId= or NodeName=")
                return 1
        except ControllerError as exc:
            if exc.code == "InvalidValue":  # a value scontrol itself refuses, as Slurm's does
                _err(str(exc))
            else:
                print(f"slurm_update error: {exc}", file=sys.stderr)
            return 1
        return 0
    if verb == "write" and len(args) >= 3 and args[1].lower() == "batch_script":
        try:
            script = client.call("write_script", job=args[2])
        except ControllerError as exc:
            _err(str(exc))
            return 1
        target = args[3] if len(args) > 3 else f"slurm-{args[2]}.sh"
        if target == "-":
            sys.stdout.write(script)
        else:
            with open(target, "w") as f:
                f.write(script)
            print(f"batch script for job {args[2]} written to {target}")
        return 0
    _err(f"invalid keyword: {args[0]}")
    return 1
