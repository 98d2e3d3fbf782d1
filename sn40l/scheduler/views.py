"""What squeue, sinfo, sacct and scontrol print, in Slurm's formats.

squeue and sinfo take ``-o`` format strings of ``%[.][width]letter`` fields (``.`` right-
justifies; a width pads and truncates, as Slurm does); sacct takes ``--format`` field names with
optional ``%width`` and marks truncation with ``+``. Defaults are Slurm's own, so scripts that
parse them keep working.
"""

from __future__ import annotations

import re
import time

from sn40l.scheduler import hostlist
from sn40l.scheduler.job import tasks_per_node
from sn40l.scheduler.timespec import format_duration, format_timestamp

STATE_CODES = {"PENDING": "PD", "RUNNING": "R", "COMPLETING": "CG", "COMPLETED": "CD",
               "FAILED": "F", "CANCELLED": "CA", "TIMEOUT": "TO", "NODE_FAIL": "NF",
               "REQUEUED": "RQ", "SUSPENDED": "S", "OUT_OF_MEMORY": "OOM", "PREEMPTED": "PR",
               "BOOT_FAIL": "BF", "DEADLINE": "DL"}
LONG_STATES = {v: k for k, v in STATE_CODES.items()}

SQUEUE_DEFAULT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
SQUEUE_LONG = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"
SINFO_DEFAULT = "%#P %.5a %.10l %.6D %.6t %N"
SINFO_NODES = "%#N %.6D %#P %6t"
SINFO_LONG = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N"
SINFO_NODES_LONG = "%#N %.6D %#P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E"  # Slurm 22.05

SQUEUE_HEADERS = {"i": "JOBID", "A": "JOBID", "F": "ARRAY_JOB_ID", "K": "ARRAY_TASK_ID",
                  "j": "NAME", "u": "USER", "U": "UID", "t": "ST", "T": "STATE", "M": "TIME",
                  "l": "TIME_LIMIT", "L": "TIME_LEFT", "D": "NODES", "C": "CPUS",
                  "R": "NODELIST(REASON)", "r": "REASON", "N": "NODELIST", "P": "PARTITION",
                  "Q": "PRIORITY", "V": "SUBMIT_TIME", "S": "START_TIME", "e": "END_TIME",
                  "b": "TRES_PER_NODE", "o": "COMMAND", "Z": "WORK_DIR", "E": "DEPENDENCY",
                  "q": "QOS", "a": "ACCOUNT", "k": "COMMENT", "B": "EXEC_HOST", "y": "NICE",
                  "n": "REQ_NODES", "x": "EXC_NODES", "c": "MIN_CPUS", "m": "MIN_MEMORY",
                  "h": "OVER_SUBSCRIBE", "g": "GROUP", "G": "GROUP"}

_FIELD = re.compile(r"%(\.)?(#)?(\d*)([A-Za-z])")


def render(fmt: str, rows: list[dict], value, headers: dict[str, str],
           header: bool = True) -> list[str]:
    """Lines of ``rows`` under a ``%[.][#][width]X`` format; ``value(row, letter)`` gives text."""
    parts = []
    pos = 0
    for m in _FIELD.finditer(fmt):
        if m.start() > pos:
            parts.append(("lit", fmt[pos:m.start()]))
        parts.append(("field", (bool(m.group(1)), bool(m.group(2)),
                                int(m.group(3)) if m.group(3) else None, m.group(4))))
        pos = m.end()
    if pos < len(fmt):
        parts.append(("lit", fmt[pos:]))
    cells = [[value(r, p[1][3]) if p[0] == "field" else None for p in parts] for r in rows]
    widths = []
    for i, (kind, spec) in enumerate(parts):
        if kind != "field":
            widths.append(None)
            continue
        right, auto, width, letter = spec
        if auto:
            width = max([len(headers.get(letter, letter))] + [len(c[i]) for c in cells])
        widths.append(width)

    def line(texts: list[str | None]) -> str:
        out = []
        for i, (kind, spec) in enumerate(parts):
            if kind == "lit":
                out.append(spec)
                continue
            text = texts[i]
            width = widths[i]
            if width is not None:
                text = text[:width]
                text = text.rjust(width) if spec[0] else text.ljust(width)
            out.append(text)
        return "".join(out).rstrip() if not fmt.endswith(" ") else "".join(out)

    lines = []
    if header:
        lines.append(line([headers.get(p[1][3], p[1][3].upper()) if p[0] == "field" else None
                           for p in parts]))
    lines += [line(c) for c in cells]
    return lines


# -- squeue -------------------------------------------------------------------------------
def collapse_arrays(jobs: list[dict]) -> list[dict]:
    """Pending tasks of one array become one row ``A_[i-j,k%T]`` (squeue without -r)."""
    out, groups = [], {}
    for j in jobs:
        if j.get("array_job_id") is not None and j["state"] == "PENDING":
            groups.setdefault(j["array_job_id"], []).append(j)
        else:
            out.append(j)
    for array_id, tasks in groups.items():
        if len(tasks) == 1:
            out.append(tasks[0])
            continue
        first = dict(tasks[0])
        ids = hostlist.compress([f"x{t['array_task_id']}" for t in tasks])
        body = ids[2:-1] if ids.startswith("x[") else ids[1:]
        throttle = first.get("array_throttle") or 0
        first["display_id"] = f"{array_id}_[{body}{'%' + str(throttle) if throttle else ''}]"
        out.append(first)
    return squeue_order(out)


def squeue_order(jobs: list[dict]) -> list[dict]:
    """squeue's default order (``-S P,t,-p``): partition, then state by its code (so PD rows
    come before R), then priority, highest first; ties by job id and array task."""
    return sorted(jobs, key=lambda j: (j["partition"], STATE_CODES.get(j["state"], j["state"]),
                                       -(j.get("priority") or 0),
                                       j.get("array_job_id") or j["id"],
                                       j.get("array_task_id") or 0))


def _nodelist(job: dict) -> str:
    return hostlist.compress(sorted(job.get("alloc") or {}))


def squeue_value(job: dict, letter: str, now: float | None = None) -> str:
    now = now or time.time()
    req = job["req"]
    state = job["state"]
    started = job.get("start_time")
    if letter in ("i",):
        return job.get("display_id") or str(job["id"])
    if letter == "A":
        return str(job["id"])
    if letter == "F":
        return str(job.get("array_job_id") or job["id"])
    if letter == "K":
        return "N/A" if job.get("array_task_id") is None else str(job["array_task_id"])
    if letter == "j":
        return job["name"]
    if letter == "u":
        return job["user"]
    if letter == "U":
        return str(job["uid"])
    if letter == "t":
        return STATE_CODES.get(state, state[:2])
    if letter == "T":
        return state
    if letter == "M":
        if not started:
            return "0:00"
        return format_duration((job.get("end_time") or now) - started)
    if letter == "l":
        return format_duration(job.get("time_limit"))
    if letter == "L":
        if job.get("time_limit") is None:
            return "UNLIMITED"
        used = ((job.get("end_time") or now) - started) if started else 0
        return format_duration(max(0, job["time_limit"] - used))
    if letter == "D":
        return str(len(job["alloc"]) if job.get("alloc") else req["nodes"])
    if letter == "C":
        if job.get("alloc"):
            return str(sum(a["cpus"] for a in job["alloc"].values()))
        n = req["nodes"]
        tpn = tasks_per_node(n, req["ntasks"], req.get("ntasks_per_node"))
        return str(n * tpn * (req.get("cpus_per_task") or 1))
    if letter == "R":
        if state in ("PENDING",) or not job.get("alloc"):
            return f"({job.get('reason') or 'None'})"
        return _nodelist(job)
    if letter == "r":
        return job.get("reason") or "None"
    if letter == "N":
        return _nodelist(job)
    if letter == "P":
        return job["partition"]
    if letter == "Q":
        return str(job["priority"])
    if letter == "V":
        return format_timestamp(job["submit_time"])
    if letter == "S":
        return format_timestamp(started) if started else "N/A"
    if letter == "e":
        if job.get("end_time"):
            return format_timestamp(job["end_time"])
        if started and job.get("time_limit") is not None:
            return format_timestamp(started + job["time_limit"])
        return "N/A"
    if letter == "b":
        return f"gres/rdu:{req['gres_rdu']}" if req.get("gres_rdu") else "N/A"
    if letter == "o":
        return req.get("command") or "(null)"
    if letter == "Z":
        return req["workdir"]
    if letter == "E":
        return req.get("dependency") or "(null)"
    if letter == "q":
        return req.get("qos") or "normal"
    if letter == "a":
        return req.get("account") or "(null)"
    if letter == "k":
        return req.get("comment") or "(null)"
    if letter == "B":
        return job.get("batch_host") or "n/a"
    if letter == "y":
        return str(req.get("nice") or 0)
    if letter == "n":
        return hostlist.compress(req.get("nodelist") or [])
    if letter == "x":
        return hostlist.compress(req.get("exclude") or [])
    if letter == "c":
        return str(req.get("cpus_per_task") or 1)
    if letter == "m":
        return f"{req['mem_mb']}M" if req.get("mem_mb") else "0"
    if letter == "h":
        return "NO" if req.get("exclusive") else "OK"
    if letter in ("g", "G"):
        return str(job["gid"])
    return f"%{letter}"


# -- sinfo --------------------------------------------------------------------------------
SINFO_HEADERS = {"P": "PARTITION", "R": "PARTITION", "a": "AVAIL", "l": "TIMELIMIT",
                 "D": "NODES", "t": "STATE", "T": "STATE", "N": "NODELIST", "c": "CPUS",
                 "C": "CPUS(A/I/O/T)", "G": "GRES", "m": "MEMORY", "E": "REASON",
                 "s": "JOB_SIZE", "r": "ROOT", "h": "OVERSUBS", "g": "GROUPS", "z": "S:C:T",
                 "w": "WEIGHT", "d": "TMP_DISK", "f": "AVAIL_FEATURES"}
SHORT_NODE_STATES = {"IDLE": "idle", "MIXED": "mix", "ALLOCATED": "alloc", "DOWN": "down",
                     "DOWN*": "down*", "DRAINED": "drain", "DRAINING": "drng",
                     "COMPLETING": "comp"}


def sinfo_rows(info: dict, per_node: bool, partitions: list[str] | None = None,
               states: list[str] | None = None) -> list[dict]:
    """One row per (partition, state) group, or per (node, partition) with ``per_node``."""
    nodes = {n["name"]: n for n in info["nodes"]}
    rows = []
    for part in info["partitions"]:
        if partitions and part["name"] not in partitions:
            continue
        groups: dict[str, list[dict]] = {}
        for name in part["nodes"]:
            node = nodes[name]
            short = SHORT_NODE_STATES.get(node["state"], node["state"].lower())
            if states and short.rstrip("*") not in states and node["state"].lower() not in states:
                continue
            if per_node:
                rows.append({"part": part, "nodes": [node], "state": node["state"]})
            else:
                groups.setdefault(node["state"], []).append(node)
        for state, members in groups.items():
            rows.append({"part": part, "nodes": members, "state": state})
    return rows


def sinfo_value(row: dict, letter: str) -> str:
    part, nodes, state = row["part"], row["nodes"], row["state"]
    node = nodes[0]
    if letter == "P":
        return part["name"] + ("*" if part["default"] else "")
    if letter == "R":
        return part["name"]
    if letter == "a":
        return "up" if part["state"] == "UP" else "down"
    if letter == "l":
        return "infinite" if part["max_time"] is None else format_duration(part["max_time"])
    if letter == "D":
        return str(len(nodes))
    if letter == "t":
        return SHORT_NODE_STATES.get(state, state.lower())
    if letter == "T":
        long = {"MIXED": "mixed", "ALLOCATED": "allocated", "DRAINED": "drained",
                "DRAINING": "draining", "COMPLETING": "completing"}
        return long.get(state, state.lower())
    if letter == "N":
        return hostlist.compress([n["name"] for n in nodes])
    if letter == "c":
        return str(node["cpus"])
    if letter == "C":
        a = sum(n["cpus_alloc"] for n in nodes)
        t = sum(n["cpus"] for n in nodes)
        o = sum(n["cpus"] for n in nodes if n["state"].startswith(("DOWN", "DRAIN")))
        return f"{a}/{t - a - o}/{o}/{t}"
    if letter == "G":
        return f"rdu:{node['rdus']}"
    if letter == "m":
        return str(node["mem_mb"])
    if letter == "E":
        return node["reason"] or "none"
    if letter == "s":
        return "1-" + (str(part["max_nodes"]) if part["max_nodes"] else "infinite")
    if letter == "r":
        return "no"
    if letter == "h":
        return "NO"
    if letter == "g":
        return "all"
    if letter == "z":
        return f"1:{node['cpus']}:1"
    if letter == "w":
        return "1"
    if letter == "d":
        return "0"
    if letter == "f":
        return "(null)"
    return f"%{letter}"


# -- sacct --------------------------------------------------------------------------------
SACCT_DEFAULT = ["JobID", "JobName", "Partition", "Account", "AllocCPUS", "State", "ExitCode"]
SACCT_BRIEF = ["JobID", "State", "ExitCode"]
SACCT_LONG = ["JobID", "JobIDRaw", "JobName", "Partition", "User", "UID", "Account",
              "AllocCPUS", "NNodes", "NodeList", "State", "ExitCode", "Submit", "Start", "End",
              "Elapsed", "ElapsedRaw", "Timelimit", "AllocTRES", "ReqTRES", "WorkDir"]
SACCT_WIDTHS = {"jobid": 12, "jobidraw": 12, "jobname": 10, "partition": 10, "account": 10,
                "alloccpus": 10, "ncpus": 10, "state": 10, "exitcode": 8, "elapsed": 10,
                "elapsedraw": 10, "start": 19, "end": 19, "submit": 19, "eligible": 19,
                "timelimit": 10, "timelimitraw": 12, "nnodes": 8, "nodelist": 15,
                "alloctres": 10, "reqtres": 10, "user": 9, "uid": 6, "group": 9, "gid": 6,
                "workdir": 10, "reason": 10, "priority": 10, "qos": 10, "comment": 10,
                "ntasks": 8, "reqcpus": 8, "reqmem": 10, "reqnodes": 8, "allocnodes": 10,
                "arrayjobid": 12, "arraytaskid": 12, "cluster": 10, "derivedexitcode": 10,
                "restarts": 8, "reqgres": 12, "allocgres": 12}
LEFT_FIELDS = {"jobid", "jobidraw"}


def _tres(cpus: int, rdus: int, mem_mb: int, nodes: int) -> str:
    parts = [f"cpu={cpus}"]
    if rdus:
        parts.append(f"gres/rdu={rdus}")
    if mem_mb:
        parts.append(f"mem={mem_mb}M")
    parts.append(f"node={nodes}")
    return ",".join(parts)


def sacct_rows(jobs: list[dict], with_steps: bool) -> list[dict]:
    rows = []
    for job in jobs:
        rows.append({"kind": "job", "job": job})
        if with_steps:
            steps = sorted(job.get("steps", []), key=lambda s: (
                s["step"] != "batch", int(s["step"]) if s["step"].isdigit() else -1))
            for step in steps:
                rows.append({"kind": "step", "job": job, "step": step})
    return rows


def sacct_value(row: dict, field: str, now: float | None = None) -> str:
    now = now or time.time()
    job = row["job"]
    req = job["req"]
    step = row.get("step")
    f = field.lower()
    alloc = job.get("alloc") or {}
    cpus = sum(a["cpus"] for a in alloc.values())
    rdus = sum(len(a["sockets"]) for a in alloc.values())
    mem = sum(a["mem"] for a in alloc.values())
    base_id = job.get("display_id") or str(job["id"])
    if step is not None:
        state = step["state"]
        start, end = step.get("start_time"), step.get("end_time")
        code, sig = step.get("exit_code", 0), step.get("exit_signal", 0)
        name = step["name"]
        jid = f"{base_id}.{step['step']}"
        jid_raw = f"{job['id']}.{step['step']}"
        scpus = step.get("cpus", cpus)
        nnodes = len(step.get("nodes") or [])
        nodelist = hostlist.compress(step.get("nodes") or [])
    else:
        state = job["state"]
        if state == "CANCELLED" and job.get("cancelled_by") is not None:
            state = f"CANCELLED by {job['cancelled_by']}"
        start, end = job.get("start_time"), job.get("end_time")
        code, sig = job.get("exit_code") or 0, job.get("exit_signal") or 0
        name = job["name"]
        jid = base_id
        jid_raw = str(job["id"])
        scpus = cpus
        nnodes = len(alloc) if alloc else req["nodes"]
        nodelist = hostlist.compress(sorted(alloc)) if alloc else "None assigned"
    if f == "jobid":
        return jid
    if f == "jobidraw":
        return jid_raw
    if f == "jobname":
        return name
    if f == "partition":
        return "" if step else job["partition"]
    if f == "account":
        return req.get("account") or ""
    if f in ("alloccpus", "ncpus"):
        return str(scpus)
    if f == "state":
        return state
    if f == "exitcode":
        return f"{code}:{sig}"
    if f == "derivedexitcode":
        return "0:0"
    if f in ("elapsed", "elapsedraw"):
        secs = int((end or now) - start) if start else 0
        return str(secs) if f == "elapsedraw" else format_duration(secs, "sacct")
    if f == "start":
        return format_timestamp(start) if start else "Unknown"
    if f == "end":
        return format_timestamp(end) if end else "Unknown"
    if f == "submit":
        return format_timestamp(job["submit_time"])
    if f == "eligible":
        return format_timestamp(job.get("eligible_time")) if job.get("eligible_time") \
            else "Unknown"
    if f == "timelimit":
        return "" if step else format_duration(job.get("time_limit"), "sacct")
    if f == "timelimitraw":
        return "" if step else ("UNLIMITED" if job.get("time_limit") is None
                                else str(job["time_limit"] // 60))
    if f in ("nnodes", "allocnodes"):
        return str(nnodes)
    if f == "nodelist":
        return nodelist
    if f == "alloctres":
        if not alloc:
            return ""
        if step:
            return _tres(scpus, rdus if step["step"] != "batch" else
                         len(alloc.get(job.get("batch_host"), {}).get("sockets", [])),
                         0, nnodes)
        return _tres(cpus, rdus, mem, len(alloc))
    if f == "reqtres":
        n = req["nodes"]
        tpn = tasks_per_node(n, req["ntasks"], req.get("ntasks_per_node"))
        return _tres(n * tpn * (req.get("cpus_per_task") or 1), n * req.get("gres_rdu", 0),
                     (req.get("mem_mb") or 0) * n, n)
    if f == "reqgres" or f == "allocgres":
        return f"rdu:{req.get('gres_rdu', 0)}" if req.get("gres_rdu") else ""
    if f == "user":
        return "" if step else job["user"]
    if f == "uid":
        return "" if step else str(job["uid"])
    if f in ("group", "gid"):
        return "" if step else str(job["gid"])
    if f == "workdir":
        return req["workdir"]
    if f == "reason":
        return job.get("reason") or "None"
    if f == "priority":
        return str(job["priority"])
    if f == "qos":
        return req.get("qos") or "normal"
    if f == "comment":
        return req.get("comment") or ""
    if f == "ntasks":
        return str(step.get("ntasks", 1)) if step else ""
    if f == "reqcpus":
        n = req["nodes"]
        return str(n * (tasks_per_node(n, req["ntasks"], req.get("ntasks_per_node")))
                   * (req.get("cpus_per_task") or 1))
    if f == "reqmem":
        return f"{req['mem_mb']}M" if req.get("mem_mb") else "0"
    if f == "reqnodes":
        return str(req["nodes"])
    if f == "arrayjobid":
        return str(job["array_job_id"]) if job.get("array_job_id") is not None else ""
    if f == "arraytaskid":
        return str(job["array_task_id"]) if job.get("array_task_id") is not None else ""
    if f == "cluster":
        return job.get("cluster", "")
    if f == "restarts":
        return str(job.get("restarts", 0))
    raise KeyError(field)


SACCT_FIELDS = ["JobID", "JobIDRaw", "JobName", "Partition", "Account", "AllocCPUS", "NCPUS",
                "State", "ExitCode", "DerivedExitCode", "Elapsed", "ElapsedRaw", "Start", "End",
                "Submit", "Eligible", "Timelimit", "TimelimitRaw", "NNodes", "AllocNodes",
                "NodeList", "AllocTRES", "ReqTRES", "ReqGRES", "AllocGRES", "User", "UID",
                "Group", "GID", "WorkDir", "Reason", "Priority", "QOS", "Comment", "NTasks",
                "ReqCPUS", "ReqMem", "ReqNodes", "ArrayJobID", "ArrayTaskID", "Cluster",
                "Restarts"]


def render_sacct(rows: list[dict], fields: list[str], header: bool = True,
                 delimiter: str | None = None, trailing: bool = False) -> list[str]:
    """sacct's table: right-justified columns of fixed widths (``+`` marks a cut), JobID left;
    or with ``delimiter`` (``-p``/``-P``) the raw values."""
    specs = []
    for f in fields:
        name, _, width = f.partition("%")
        key = name.lower()
        if key not in SACCT_WIDTHS:
            raise KeyError(name)
        left = key in LEFT_FIELDS
        if width.startswith("-"):
            left, width = True, width[1:]
        specs.append((name, key, int(width) if width else SACCT_WIDTHS[key], left))
    lines = []
    if delimiter is not None:
        end = delimiter if trailing else ""
        if header:
            lines.append(delimiter.join(s[0] for s in specs) + end)
        for r in rows:
            lines.append(delimiter.join(sacct_value(r, s[0]) for s in specs) + end)
        return lines

    def cell(text: str, width: int, left: bool) -> str:
        if len(text) > width:
            text = text[:width - 1] + "+"
        return text.ljust(width) if left else text.rjust(width)

    if header:
        lines.append(" ".join(cell(s[0], s[2], s[3]) for s in specs) + " ")
        lines.append(" ".join("-" * s[2] for s in specs) + " ")
    for r in rows:
        lines.append(" ".join(cell(sacct_value(r, s[0]), s[2], s[3]) for s in specs) + " ")
    return lines


# -- scontrol show ------------------------------------------------------------------------
def show_job(job: dict, now: float | None = None) -> str:
    """``scontrol show job``: Slurm 22.05's lines and field order (tests/golden/)."""
    now = now or time.time()
    req = job["req"]
    alloc = job.get("alloc") or {}
    run = format_duration(((job.get("end_time") or now) - job["start_time"]), "sacct") \
        if job.get("start_time") else "00:00:00"
    n = req["nodes"]
    tpn = tasks_per_node(n, req["ntasks"], req.get("ntasks_per_node"))
    cpus = sum(a["cpus"] for a in alloc.values()) if alloc else \
        n * tpn * (req.get("cpus_per_task") or 1)
    code = f"{job.get('exit_code') or 0}:{job.get('exit_signal') or 0}"
    if alloc:
        tres = _job_tres(cpus, sum(a["mem"] for a in alloc.values()), len(alloc),
                         sum(len(a["sockets"]) for a in alloc.values()))
    else:
        mem = req.get("mem_mb") or (req.get("mem_per_cpu_mb") or 0) * tpn * (
            req.get("cpus_per_task") or 1)
        tres = _job_tres(cpus, mem * n, n, req.get("gres_rdu", 0) * n)
    first = f"JobId={job['id']}"
    if job.get("array_job_id") is not None:
        first += f" ArrayJobId={job['array_job_id']} ArrayTaskId={job['array_task_id']}"
        if job.get("array_throttle"):
            first += f" ArrayTaskThrottle={job['array_throttle']}"
    eligible = format_timestamp(job.get("eligible_time"))
    cpt = req.get("cpus_per_task") or 1
    min_cpus = cpt * (req.get("ntasks_per_node") or 1)
    out_path = job.get("stdout_path") or req.get("output") or "(null)"
    lines = [
        f"{first} JobName={job['name']}",
        f"UserId={job['user']}({job['uid']}) GroupId={_group(job['gid'])}({job['gid']}) "
        f"MCS_label=N/A",
        f"Priority={job['priority']} Nice={req.get('nice') or 0} Account="
        f"{req.get('account') or '(null)'} QOS={req.get('qos') or 'normal'}",
        f"JobState={job['state']} Reason={job.get('reason') or 'None'} "
        f"Dependency={job.get('dependency_shown') or req.get('dependency') or '(null)'}",
        f"Requeue={1 if req.get('requeue', True) else 0} Restarts={job.get('restarts', 0)} "
        f"BatchFlag=1 Reboot=0 ExitCode={code}",
        f"RunTime={run} TimeLimit={format_duration(job.get('time_limit'), 'sacct')} "
        f"TimeMin=N/A",
        f"SubmitTime={format_timestamp(job['submit_time'])} EligibleTime={eligible}",
        f"AccrueTime={eligible}",
        f"StartTime={format_timestamp(job.get('start_time'))} "
        f"EndTime={format_timestamp(_expected_end(job))} Deadline=N/A",
        f"SuspendTime=None SecsPreSuspend=0 LastSchedEval="
        f"{format_timestamp(job.get('start_time') or job.get('eligible_time') or job['submit_time'])}"
        f" Scheduler=Main",
        f"Partition={job['partition']} AllocNode:Sid={req.get('submit_host', 'localhost')}:0",
        f"ReqNodeList={hostlist.compress(req.get('nodelist') or []) or '(null)'} "
        f"ExcNodeList={hostlist.compress(req.get('exclude') or []) or '(null)'}",
        f"NodeList={hostlist.compress(sorted(alloc))}",
    ]
    if job.get("batch_host"):
        lines.append(f"BatchHost={job['batch_host']}")
    lines += [
        f"NumNodes={len(alloc) or n} NumCPUs={cpus} NumTasks={req['ntasks']} "
        f"CPUs/Task={req.get('cpus_per_task') or 1} ReqB:S:C:T=0:0:*:*",
        f"TRES={tres}",
        f"Socks/Node=* NtasksPerN:B:S:C={req.get('ntasks_per_node') or 0}:0:*:* CoreSpec=*",
        f"MinCPUsNode={min_cpus} MinMemoryNode={req.get('mem_mb') or 0} MinTmpDiskNode=0",
        "Features=(null) DelayBoot=00:00:00",
        f"OverSubscribe={'NO' if req.get('exclusive') else 'OK'} Contiguous=0 "
        f"Licenses=(null) Network=(null)",
        f"Command={'(null)' if req.get('wrapped') else req.get('command') or '(null)'}",
        f"WorkDir={req['workdir']}",
        f"StdErr={job.get('stderr_path') or req.get('error') or out_path}",
        f"StdIn={req.get('input') or '/dev/null'}",
        f"StdOut={out_path}",
        "Power=",
    ]
    if req.get("gres_rdu"):
        lines.append(f"TresPerNode=gres:rdu:{req['gres_rdu']}")
    if req.get("comment"):
        lines.append(f"Comment={req['comment']}")
    if job.get("launch_error"):
        lines.append(f"LaunchError={job['launch_error']}")
    return "\n   ".join(lines) + "\n   \n"


def _expected_end(job: dict) -> float | None:
    """EndTime=: the end, or for a running job its start plus the time limit (as Slurm)."""
    if job.get("end_time") or not job.get("start_time") or job.get("time_limit") is None:
        return job.get("end_time")
    return job["start_time"] + job["time_limit"]


def _job_tres(cpus: int, mem_mb: int, nodes: int, rdus: int) -> str:
    """TRES= of scontrol show job: ``cpu=2,mem=4096M,node=2,billing=2,gres/rdu=16``."""
    parts = [f"cpu={cpus}"] + ([f"mem={mem_mb}M"] if mem_mb else [])
    parts += [f"node={nodes}", f"billing={cpus}"] + ([f"gres/rdu={rdus}"] if rdus else [])
    return ",".join(parts)


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def show_node(node: dict, info: dict) -> str:
    state = node["state"].rstrip("*")
    lines = [
        f"NodeName={node['name']} Arch=x86_64 CoresPerSocket={node['cpus']}",
        f"CPUAlloc={node['cpus_alloc']} CPUEfctv={node['cpus']} CPUTot={node['cpus']} "
        f"CPULoad=0.00",
        f"AvailableFeatures=sn40l ActiveFeatures=sn40l",
        f"Gres=rdu:{node['rdus']}",
        f"NodeAddr={node['name']} NodeHostName={node['name']}",
        f"RealMemory={node['mem_mb']} AllocMem={node['mem_alloc']} FreeMem=N/A Sockets=1",
        f"State={state}{'+NOT_RESPONDING' if node['state'].endswith('*') else ''} "
        f"ThreadsPerCore=1 TmpDisk=0 Weight=1",
        f"Partitions={','.join(node['partitions'])}",
        f"CfgTRES=cpu={node['cpus']},mem={node['mem_mb']}M,billing={node['cpus']},"
        f"gres/rdu={node['rdus']}",
        f"AllocTRES=" + (_tres(node['cpus_alloc'], node['rdus_alloc'], node['mem_alloc'], 1)
                         .replace(',node=1', '') if node["cpus_alloc"] else ""),
    ]
    if node.get("reason"):
        lines.append(f"Reason={node['reason']} [root@{format_timestamp(node.get('since'))}]")
    return "\n   ".join(lines) + "\n"


def show_partition(part: dict) -> str:
    lines = [
        f"PartitionName={part['name']}",
        f"AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL",
        f"Default={'YES' if part['default'] else 'NO'} "
        f"DefaultTime={format_duration(part['default_time']) if part['default_time'] else 'NONE'}",
        f"MaxNodes={part['max_nodes'] or 'UNLIMITED'} "
        f"MaxTime={format_duration(part['max_time'])} MinNodes=0",
        f"Nodes={hostlist.compress(part['nodes'])}",
        f"State={part['state']} TotalNodes={len(part['nodes'])}",
    ]
    return "\n   ".join(lines) + "\n"
