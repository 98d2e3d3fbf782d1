"""What sacct and scontrol show print: one job (its steps, a node, a partition) in detail.

sacct takes ``--format`` field names (any case) with an optional ``%width`` (``%-width`` left-
justifies) and marks a cut value with ``+``; its fields are one table, name -> :class:`AcctField`
(width and the text of an :class:`AcctRow`, a job or one of its steps). A name not in the table
is refused (:class:`UnknownField`), as Slurm's sacct does. ``scontrol show job|node|partition``
prints Slurm 22.05's lines in its order (tests/golden/slurm/). Both read typed values
(sn40l.scheduler.replies); squeue and sinfo are in :mod:`sn40l.scheduler.views`.
"""

from __future__ import annotations

import time
from collections import namedtuple
from collections.abc import Callable

from sn40l.scheduler import hostlist
from sn40l.scheduler.job import Job
from sn40l.scheduler.replies import Shown, Step
from sn40l.scheduler.timespec import format_duration, format_timestamp
from sn40l.scheduler.types import JobState
from sn40l.scheduler.views import alloc_cpus

TYPE_CHECKING = False  # typing's flag without importing typing (a command's start-up)
if TYPE_CHECKING:
    from sn40l.scheduler.nodeinfo import NodeInfo, PartitionInfo  # annotations only


class UnknownField(KeyError):
    """A sacct ``--format`` field that sacct does not have; ``args[0]`` is the name as typed."""


# -- sacct --------------------------------------------------------------------------------
# Rows and table entries are named tuples (see sn40l.scheduler.views: cheaper to define).
class AcctRow(namedtuple("AcctRow", "job step jobid jobid_raw name state start end exit_code "
                                    "exit_signal cpus nnodes nodelist cluster")):
    """One sacct line: a :class:`~sn40l.scheduler.job.Job`, and ``step`` None for the job's own
    line or the :class:`~sn40l.scheduler.replies.Step`; then the values that differ between
    the two, worked out once (ids, name, state text, start/end times, exit code and signal,
    CPUs, node count, node list), and the cluster whose controller ran the job."""

    __slots__ = ()


def acct_rows(shown: list[Shown], with_steps: bool, cluster: str = "") -> list[AcctRow]:
    """Each job's line, followed (with ``with_steps``) by its steps': batch first.
    ``cluster``: the name of the cluster whose controller answered (Slurm's ClusterName)."""
    rows = []
    for s in shown:
        job = s.job
        alloc = job.alloc or {}
        cpus = sum(a.cpus for a in alloc.values())
        state = job.state.value
        if job.state is JobState.CANCELLED and job.cancelled_by is not None:
            state = f"CANCELLED by {job.cancelled_by}"
        rows.append(AcctRow(job, None, job.display_id, str(job.id), job.name, state,
                            job.start_time, job.end_time, job.exit_code or 0,
                            job.exit_signal or 0, cpus, len(alloc) if alloc else job.req.nodes,
                            hostlist.compress(sorted(alloc)) if alloc else "None assigned",
                            cluster))
        if not with_steps:
            continue
        for step in sorted(s.steps, key=lambda st: st.order):
            rows.append(AcctRow(job, step, f"{job.display_id}.{step.step}",
                                f"{job.id}.{step.step}", step.name, str(step.state),
                                step.start_time, step.end_time, step.exit_code, step.exit_signal,
                                cpus if step.cpus is None else step.cpus, len(step.nodes),
                                hostlist.compress(step.nodes), cluster))
    return rows


def _tres(cpus: int, rdus: int, mem_mb: int, nodes: int) -> str:
    parts = [f"cpu={cpus}"]
    if rdus:
        parts.append(f"gres/rdu={rdus}")
    if mem_mb:
        parts.append(f"mem={mem_mb}M")
    parts.append(f"node={nodes}")
    return ",".join(parts)


def _alloc_tres(row: AcctRow) -> str:
    alloc = row.job.alloc
    if not alloc:
        return ""
    if row.step is None:
        return _tres(row.cpus, sum(len(a.sockets) for a in alloc.values()),
                     sum(a.mem for a in alloc.values()), len(alloc))
    if row.step.step == "batch":
        host = alloc.get(row.job.batch_host)
        rdus = len(host.sockets) if host else 0
    else:
        rdus = sum(len(a.sockets) for a in alloc.values())
    return _tres(row.cpus, rdus, 0, row.nnodes)


def _req_tres(job: Job) -> str:
    n = job.req.nodes
    return _tres(n * job.req.cpus_per_node, n * job.req.gres_rdu, (job.req.mem_mb or 0) * n, n)


def _elapsed(row: AcctRow, now: float) -> int:
    return int((row.end or now) - row.start) if row.start else 0


class AcctField(namedtuple("AcctField", "name width value left", defaults=(False,))):
    """One sacct field: its ``name`` as ``sacct -e`` lists it, its default ``width``,
    ``value(row, now) -> str`` (the text of an :class:`AcctRow` at time ``now``) and whether it
    is ``left``-justified."""

    __slots__ = ()


def _f(name: str, width: int, fn: Callable[[AcctRow], str], left: bool = False) -> AcctField:
    return AcctField(name, width, lambda row, now: fn(row), left)


def _job_only(fn: Callable[[Job], str]) -> Callable[[AcctRow], str]:
    """A field of the job's line only (blank on a step's)."""
    return lambda row: "" if row.step else fn(row.job)


def _stamp(epoch: float | None) -> str:
    return format_timestamp(epoch) if epoch else "Unknown"


_SACCT = [
    _f("JobID", 12, lambda r: r.jobid, left=True),
    _f("JobIDRaw", 12, lambda r: r.jobid_raw, left=True),
    _f("JobName", 10, lambda r: r.name),
    _f("Partition", 10, _job_only(lambda j: j.partition)),
    _f("Account", 10, lambda r: r.job.req.account or ""),
    _f("AllocCPUS", 10, lambda r: str(r.cpus)),
    _f("NCPUS", 10, lambda r: str(r.cpus)),
    _f("State", 10, lambda r: r.state),
    _f("ExitCode", 8, lambda r: f"{r.exit_code}:{r.exit_signal}"),
    _f("DerivedExitCode", 10, lambda r: "0:0"),
    AcctField("Elapsed", 10, lambda r, now: format_duration(_elapsed(r, now), "sacct")),
    AcctField("ElapsedRaw", 10, lambda r, now: str(_elapsed(r, now))),
    _f("Start", 19, lambda r: _stamp(r.start)),
    _f("End", 19, lambda r: _stamp(r.end)),
    _f("Submit", 19, lambda r: format_timestamp(r.job.submit_time)),
    _f("Eligible", 19, lambda r: _stamp(r.job.eligible_time)),
    _f("Timelimit", 10, _job_only(lambda j: format_duration(j.time_limit, "sacct"))),
    _f("TimelimitRaw", 12, _job_only(lambda j: "UNLIMITED" if j.time_limit is None
                                     else str(j.time_limit // 60))),
    _f("NNodes", 8, lambda r: str(r.nnodes)),
    _f("AllocNodes", 10, lambda r: str(r.nnodes)),
    _f("NodeList", 15, lambda r: r.nodelist),
    _f("AllocTRES", 10, _alloc_tres),
    _f("ReqTRES", 10, lambda r: _req_tres(r.job)),
    _f("ReqGRES", 12, lambda r: f"rdu:{r.job.req.gres_rdu}" if r.job.req.gres_rdu else ""),
    _f("AllocGRES", 12, lambda r: f"rdu:{r.job.req.gres_rdu}" if r.job.req.gres_rdu else ""),
    _f("User", 9, _job_only(lambda j: j.user)),
    _f("UID", 6, _job_only(lambda j: str(j.uid))),
    _f("Group", 9, _job_only(lambda j: str(j.gid))),
    _f("GID", 6, _job_only(lambda j: str(j.gid))),
    _f("WorkDir", 10, lambda r: r.job.req.workdir),
    _f("Reason", 10, lambda r: r.job.reason or "None"),
    _f("Priority", 10, lambda r: str(r.job.priority)),
    _f("QOS", 10, lambda r: r.job.req.qos or "normal"),
    _f("Comment", 10, lambda r: r.job.req.comment or ""),
    _f("NTasks", 8, lambda r: str(r.step.ntasks) if r.step else ""),
    _f("ReqCPUS", 8, lambda r: str(r.job.req.nodes * r.job.req.cpus_per_node)),
    _f("ReqMem", 10, lambda r: f"{r.job.req.mem_mb}M" if r.job.req.mem_mb else "0"),
    _f("ReqNodes", 8, lambda r: str(r.job.req.nodes)),
    _f("ArrayJobID", 12, lambda r: "" if r.job.array_job_id is None
       else str(r.job.array_job_id)),
    _f("ArrayTaskID", 12, lambda r: "" if r.job.array_task_id is None
       else str(r.job.array_task_id)),
    _f("Cluster", 10, lambda r: r.cluster),
    _f("Restarts", 8, lambda r: str(r.job.restarts)),
]
SACCT_FIELDS: dict[str, AcctField] = {f.name.lower(): f for f in _SACCT}  # by lower-case name

SACCT_DEFAULT = ["JobID", "JobName", "Partition", "Account", "AllocCPUS", "State", "ExitCode"]
SACCT_BRIEF = ["JobID", "State", "ExitCode"]
SACCT_LONG = ["JobID", "JobIDRaw", "JobName", "Partition", "User", "UID", "Account",
              "AllocCPUS", "NNodes", "NodeList", "State", "ExitCode", "Submit", "Start", "End",
              "Elapsed", "ElapsedRaw", "Timelimit", "AllocTRES", "ReqTRES", "WorkDir"]


def sacct_value(row: AcctRow, name: str, now: float | None = None) -> str:
    """The text of field ``name`` (any case) for ``row``; :class:`UnknownField` if sacct has
    no such field."""
    field = SACCT_FIELDS.get(name.lower())
    if field is None:
        raise UnknownField(name)
    return field.value(row, time.time() if now is None else now)


def render_sacct(rows: list[AcctRow], fields: list[str], header: bool = True,
                 delimiter: str | None = None, trailing: bool = False,
                 now: float | None = None) -> list[str]:
    """sacct's table: right-justified columns of fixed widths (``+`` marks a cut), JobID left;
    or with ``delimiter`` (``-p``/``-P``) the raw values. Every field is checked first."""
    now = time.time() if now is None else now
    specs = []
    for typed in fields:
        name, _, width = typed.partition("%")
        field = SACCT_FIELDS.get(name.lower())
        if field is None:
            raise UnknownField(name)
        left = field.left
        if width.startswith("-"):
            left, width = True, width[1:]
        specs.append((name, field, int(width) if width else field.width, left))
    lines = []
    if delimiter is not None:
        end = delimiter if trailing else ""
        if header:
            lines.append(delimiter.join(s[0] for s in specs) + end)
        for r in rows:
            lines.append(delimiter.join(s[1].value(r, now) for s in specs) + end)
        return lines

    def cell(text: str, width: int, left: bool) -> str:
        if len(text) > width:
            text = text[:width - 1] + "+"
        return text.ljust(width) if left else text.rjust(width)

    if header:
        lines.append(" ".join(cell(s[0], s[2], s[3]) for s in specs) + " ")
        lines.append(" ".join("-" * s[2] for s in specs) + " ")
    for r in rows:
        lines.append(" ".join(cell(s[1].value(r, now), s[2], s[3]) for s in specs) + " ")
    return lines


# -- scontrol show ------------------------------------------------------------------------
def show_job(shown: Shown, now: float | None = None) -> str:
    """``scontrol show job``: Slurm 22.05's lines and field order (tests/golden/)."""
    now = time.time() if now is None else now
    job, req = shown.job, shown.job.req
    alloc = job.alloc or {}
    run = format_duration((job.end_time or now) - job.start_time, "sacct") \
        if job.start_time else "00:00:00"
    n = req.nodes
    cpus = alloc_cpus(job)
    if alloc:
        tres = _job_tres(cpus, sum(a.mem for a in alloc.values()), len(alloc),
                         sum(len(a.sockets) for a in alloc.values()))
    else:
        tres = _job_tres(cpus, req.mem_per_node_mb * n, n, req.gres_rdu * n)
    first = f"JobId={job.id}"
    if job.array_job_id is not None:
        first += f" ArrayJobId={job.array_job_id} ArrayTaskId={job.array_task_id}"
        if job.array_throttle:
            first += f" ArrayTaskThrottle={job.array_throttle}"
    eligible = format_timestamp(job.eligible_time)
    cpt = req.cpus_per_task or 1
    out_path = shown.stdout_path or req.output or "(null)"
    lines = [
        f"{first} JobName={job.name}",
        f"UserId={job.user}({job.uid}) GroupId={_group(job.gid)}({job.gid}) MCS_label=N/A",
        f"Priority={job.priority} Nice={req.nice or 0} Account={req.account or '(null)'} "
        f"QOS={req.qos or 'normal'}",
        f"JobState={job.state.value} Reason={job.reason or 'None'} "
        f"Dependency={shown.dependency or req.dependency or '(null)'}",
        f"Requeue={1 if req.requeue else 0} Restarts={job.restarts} BatchFlag=1 Reboot=0 "
        f"ExitCode={job.exit_code or 0}:{job.exit_signal or 0}",
        f"RunTime={run} TimeLimit={format_duration(job.time_limit, 'sacct')} TimeMin=N/A",
        f"SubmitTime={format_timestamp(job.submit_time)} EligibleTime={eligible}",
        f"AccrueTime={eligible}",
        f"StartTime={format_timestamp(job.start_time)} "
        f"EndTime={format_timestamp(_expected_end(job))} Deadline=N/A",
        f"SuspendTime=None SecsPreSuspend=0 LastSchedEval="
        f"{format_timestamp(job.start_time or job.eligible_time or job.submit_time)}"
        f" Scheduler=Main",
        # commands reach the controller on its own host (an abstract Unix socket), and slurmctld
        # names a submitter on its own host by its address: localhost, as the peer shows
        f"Partition={job.partition} AllocNode:Sid=localhost:{req.alloc_sid}",
        f"ReqNodeList={hostlist.compress(req.nodelist or ()) or '(null)'} "
        f"ExcNodeList={hostlist.compress(req.exclude or ()) or '(null)'}",
        f"NodeList={hostlist.compress(sorted(alloc))}",
    ]
    if job.batch_host:
        lines.append(f"BatchHost={job.batch_host}")
    lines += [
        f"NumNodes={len(alloc) or n} NumCPUs={cpus} NumTasks={req.ntasks} "
        f"CPUs/Task={cpt} ReqB:S:C:T=0:0:*:*",
        f"TRES={tres}",
        f"Socks/Node=* NtasksPerN:B:S:C={req.ntasks_per_node or 0}:0:*:* CoreSpec=*",
        f"MinCPUsNode={cpt * (req.ntasks_per_node or 1)} MinMemoryNode={req.mem_mb or 0} "
        f"MinTmpDiskNode=0",
        "Features=(null) DelayBoot=00:00:00",
        f"OverSubscribe={'NO' if req.exclusive else 'OK'} Contiguous=0 Licenses=(null) "
        f"Network=(null)",
        f"Command={'(null)' if req.wrapped else req.command or '(null)'}",
        f"WorkDir={req.workdir}",
        f"StdErr={shown.stderr_path or req.error or out_path}",
        f"StdIn={req.input or '/dev/null'}",
        f"StdOut={out_path}",
        "Power=",
    ]
    if req.gres_rdu:
        lines.append(f"TresPerNode=gres:rdu:{req.gres_rdu}")
    if req.comment:
        lines.append(f"Comment={req.comment}")
    if job.launch_error:
        lines.append(f"LaunchError={job.launch_error}")
    return "\n   ".join(lines) + "\n   \n"


def _expected_end(job: Job) -> float | None:
    """EndTime=: the end, or for a running job its start plus the time limit (as Slurm)."""
    if job.end_time or not job.start_time or job.time_limit is None:
        return job.end_time
    return job.start_time + job.time_limit


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


def show_node(node: NodeInfo) -> str:
    """``scontrol show node``."""
    alloc_tres = _tres(node.cpus_alloc, node.rdus_alloc, node.mem_alloc, 1) \
        .replace(",node=1", "") if node.cpus_alloc else ""
    lines = [
        f"NodeName={node.name} Arch=x86_64 CoresPerSocket={node.cpus}",
        f"CPUAlloc={node.cpus_alloc} CPUEfctv={node.cpus} CPUTot={node.cpus} CPULoad=0.00",
        "AvailableFeatures=sn40l ActiveFeatures=sn40l",
        f"Gres=rdu:{node.rdus}",
        f"NodeAddr={node.name} NodeHostName={node.name}",
        f"RealMemory={node.mem_mb} AllocMem={node.mem_alloc} FreeMem=N/A Sockets=1",
        f"State={node.state.rstrip('*')}{'+NOT_RESPONDING' if node.state.endswith('*') else ''}"
        f" ThreadsPerCore=1 TmpDisk=0 Weight=1",
        f"Partitions={','.join(node.partitions)}",
        f"CfgTRES=cpu={node.cpus},mem={node.mem_mb}M,billing={node.cpus},gres/rdu={node.rdus}",
        f"AllocTRES={alloc_tres}",
    ]
    if node.reason:
        lines.append(f"Reason={node.reason} [root@{format_timestamp(node.since)}]")
    return "\n   ".join(lines) + "\n"


def show_partition(part: PartitionInfo) -> str:
    """``scontrol show partition``."""
    default_time = format_duration(part.default_time) if part.default_time else "NONE"
    lines = [
        f"PartitionName={part.name}",
        "AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL",
        f"Default={'YES' if part.default else 'NO'} DefaultTime={default_time}",
        f"MaxNodes={part.max_nodes or 'UNLIMITED'} MaxTime={format_duration(part.max_time)} "
        f"MinNodes=0",
        f"Nodes={hostlist.compress(part.nodes)}",
        f"State={part.state} TotalNodes={len(part.nodes)}",
    ]
    return "\n   ".join(lines) + "\n"
