"""What squeue and sinfo print: ``-o`` format strings over tables of fields.

A format is ``%[.][#][width]letter`` fields between literal text (``.`` right-justifies; a
width pads and truncates, as Slurm does; ``#`` sizes the column to its widest value). Each
command has one table, letter -> :class:`Column` (its header and the text of a row, read from
typed values: :class:`~sn40l.scheduler.job.Job`, and sn40l.scheduler.replies' nodes and
partitions). A letter not in the table prints as ``%letter`` under the header ``LETTER``.
Defaults are Slurm's own, so scripts that parse them keep working. sacct and scontrol show are
in :mod:`sn40l.scheduler.details`.
"""

from __future__ import annotations

import re
import time
from collections import namedtuple
from collections.abc import Callable

from sn40l.scheduler import hostlist
from sn40l.scheduler.job import Job
from sn40l.scheduler.timespec import format_duration, format_timestamp
from sn40l.scheduler.types import JobState

SQUEUE_DEFAULT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
SQUEUE_LONG = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"
SINFO_DEFAULT = "%#P %.5a %.10l %.6D %.6t %N"
SINFO_NODES = "%#N %.6D %#P %6t"
SINFO_LONG = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N"
SINFO_NODES_LONG = "%#N %.6D %#P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E"  # Slurm 22.05

TYPE_CHECKING = False  # typing's flag without importing typing (a command's start-up)
if TYPE_CHECKING:
    from sn40l.scheduler.nodeinfo import ClusterInfo, NodeInfo, PartitionInfo  # annotations only


# Table entries and rows are named tuples, not dataclasses: they are defined on every start of a
# command, where a frozen dataclass costs about 1 ms to define and a named tuple a tenth of that.
class Column(namedtuple("Column", "header value")):
    """One format letter: ``header`` (str) and ``value(row, now) -> str``, the text of a row at
    time ``now``."""

    __slots__ = ()


_FIELD = re.compile(r"%(\.)?(#)?(\d*)([A-Za-z])")


def render(fmt: str, rows: list, table: dict[str, Column], header: bool = True,
           now: float | None = None) -> list[str]:
    """Lines of ``rows`` under a ``%[.][#][width]X`` format, each letter looked up in
    ``table``; times running at ``now`` (default: the clock)."""
    now = time.time() if now is None else now
    parts: list[tuple[str, object]] = []
    pos = 0
    for m in _FIELD.finditer(fmt):
        if m.start() > pos:
            parts.append(("lit", fmt[pos:m.start()]))
        parts.append(("field", (bool(m.group(1)), bool(m.group(2)),
                                int(m.group(3)) if m.group(3) else None, m.group(4))))
        pos = m.end()
    if pos < len(fmt):
        parts.append(("lit", fmt[pos:]))
    columns = [table.get(spec[3]) if kind == "field" else None for kind, spec in parts]
    cells = [[(col.value(r, now) if col else f"%{spec[3]}") if kind == "field" else None
              for (kind, spec), col in zip(parts, columns)] for r in rows]
    titles = [(col.header if col else spec[3].upper()) if kind == "field" else None
              for (kind, spec), col in zip(parts, columns)]
    widths = []
    for i, (kind, spec) in enumerate(parts):
        if kind != "field":
            widths.append(None)
            continue
        right, auto, width, letter = spec
        if auto:
            width = max([len(titles[i])] + [len(c[i]) for c in cells])
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

    lines = [line(titles)] if header else []
    lines += [line(c) for c in cells]
    return lines


# -- squeue -------------------------------------------------------------------------------
class QueueRow(namedtuple("QueueRow", "job jobid")):
    """One squeue row: a :class:`~sn40l.scheduler.job.Job`, and the id shown (``A_[1-3%2]`` for
    collapsed array tasks)."""

    __slots__ = ()


def queue_rows(jobs: list[Job], expand_arrays: bool) -> list[QueueRow]:
    """squeue's rows in its order; without ``expand_arrays`` (``-r``) the pending tasks of one
    array become one row ``A_[i-j,k%T]``."""
    if expand_arrays:
        return squeue_order([QueueRow(j, j.display_id) for j in jobs])
    out, groups = [], {}
    for j in jobs:
        if j.array_job_id is not None and j.state is JobState.PENDING:
            groups.setdefault(j.array_job_id, []).append(j)
        else:
            out.append(QueueRow(j, j.display_id))
    for array_id, tasks in groups.items():
        first = tasks[0]
        if len(tasks) == 1:
            out.append(QueueRow(first, first.display_id))
            continue
        body = hostlist.ranges(sorted(t.array_task_id for t in tasks))
        throttle = f"%{first.array_throttle}" if first.array_throttle else ""
        out.append(QueueRow(first, f"{array_id}_[{body}{throttle}]"))
    return squeue_order(out)


def squeue_order(rows: list[QueueRow]) -> list[QueueRow]:
    """squeue's default order (``-S P,t,-p``): partition, then state by its code (so PD rows
    come before R), then priority, highest first; ties by job id and array task."""
    return sorted(rows, key=lambda r: (r.job.partition, r.job.state.code, -r.job.priority,
                                       r.job.array_job_id or r.job.id,
                                       r.job.array_task_id or 0))


def _nodelist(job: Job) -> str:
    return hostlist.compress(sorted(job.alloc or {}))


def _elapsed(job: Job, now: float) -> float:
    return (job.end_time or now) - job.start_time if job.start_time else 0


def _time_left(job: Job, now: float) -> str:
    if job.time_limit is None:
        return "UNLIMITED"
    return format_duration(max(0, job.time_limit - _elapsed(job, now)))


def _end(job: Job) -> str:
    if job.end_time:
        return format_timestamp(job.end_time)
    if job.start_time and job.time_limit is not None:
        return format_timestamp(job.start_time + job.time_limit)
    return "N/A"


def alloc_cpus(job: Job) -> int:
    """CPUs the job holds, or before it runs the CPUs it asks for."""
    if job.alloc:
        return sum(a.cpus for a in job.alloc.values())
    return job.req.nodes * job.req.cpus_per_node


def _job(fn: Callable[[Job], str]) -> Callable[[QueueRow, float], str]:
    return lambda row, now: fn(row.job)


def _at(fn: Callable[[Job, float], str]) -> Callable[[QueueRow, float], str]:
    return lambda row, now: fn(row.job, now)


SQUEUE_FIELDS: dict[str, Column] = {
    "i": Column("JOBID", lambda row, now: row.jobid),
    "A": Column("JOBID", _job(lambda j: str(j.id))),
    "F": Column("ARRAY_JOB_ID", _job(lambda j: str(j.array_job_id or j.id))),
    "K": Column("ARRAY_TASK_ID", _job(lambda j: "N/A" if j.array_task_id is None
                                      else str(j.array_task_id))),
    "j": Column("NAME", _job(lambda j: j.name)),
    "u": Column("USER", _job(lambda j: j.user)),
    "U": Column("UID", _job(lambda j: str(j.uid))),
    "t": Column("ST", _job(lambda j: j.state.code)),
    "T": Column("STATE", _job(lambda j: j.state.value)),
    "M": Column("TIME", _at(lambda j, now: format_duration(_elapsed(j, now))
                            if j.start_time else "0:00")),
    "l": Column("TIME_LIMIT", _job(lambda j: format_duration(j.time_limit))),
    "L": Column("TIME_LEFT", _at(_time_left)),
    "D": Column("NODES", _job(lambda j: str(len(j.alloc) if j.alloc else j.req.nodes))),
    "C": Column("CPUS", _job(lambda j: str(alloc_cpus(j)))),
    "R": Column("NODELIST(REASON)", _job(
        lambda j: f"({j.reason or 'None'})" if j.state is JobState.PENDING or not j.alloc
        else _nodelist(j))),
    "r": Column("REASON", _job(lambda j: j.reason or "None")),
    "N": Column("NODELIST", _job(_nodelist)),
    "P": Column("PARTITION", _job(lambda j: j.partition)),
    "Q": Column("PRIORITY", _job(lambda j: str(j.priority))),
    "V": Column("SUBMIT_TIME", _job(lambda j: format_timestamp(j.submit_time))),
    "S": Column("START_TIME", _job(lambda j: format_timestamp(j.start_time)
                                   if j.start_time else "N/A")),
    "e": Column("END_TIME", _job(_end)),
    "b": Column("TRES_PER_NODE", _job(lambda j: f"gres/rdu:{j.req.gres_rdu}"
                                      if j.req.gres_rdu else "N/A")),
    "o": Column("COMMAND", _job(lambda j: j.req.command or "(null)")),
    "Z": Column("WORK_DIR", _job(lambda j: j.req.workdir)),
    "E": Column("DEPENDENCY", _job(lambda j: j.req.dependency or "(null)")),
    "q": Column("QOS", _job(lambda j: j.req.qos or "normal")),
    "a": Column("ACCOUNT", _job(lambda j: j.req.account or "(null)")),
    "k": Column("COMMENT", _job(lambda j: j.req.comment or "(null)")),
    "B": Column("EXEC_HOST", _job(lambda j: j.batch_host or "n/a")),
    "y": Column("NICE", _job(lambda j: str(j.req.nice or 0))),
    "n": Column("REQ_NODES", _job(lambda j: hostlist.compress(list(j.req.nodelist or ())))),
    "x": Column("EXC_NODES", _job(lambda j: hostlist.compress(list(j.req.exclude or ())))),
    "c": Column("MIN_CPUS", _job(lambda j: str(j.req.cpus_per_task or 1))),
    "m": Column("MIN_MEMORY", _job(lambda j: f"{j.req.mem_mb}M" if j.req.mem_mb else "0")),
    "h": Column("OVER_SUBSCRIBE", _job(lambda j: "NO" if j.req.exclusive else "OK")),
    "g": Column("GROUP", _job(lambda j: str(j.gid))),
    "G": Column("GROUP", _job(lambda j: str(j.gid))),
}


# -- sinfo --------------------------------------------------------------------------------
SHORT_NODE_STATES = {"IDLE": "idle", "MIXED": "mix", "ALLOCATED": "alloc", "DOWN": "down",
                     "DOWN*": "down*", "DRAINED": "drain", "DRAINING": "drng",
                     "COMPLETING": "comp"}
LONG_NODE_STATES = {"MIXED": "mixed", "ALLOCATED": "allocated", "DRAINED": "drained",
                    "DRAINING": "draining", "COMPLETING": "completing"}


class SinfoRow(namedtuple("SinfoRow", "part nodes state")):
    """One sinfo row: a partition (:class:`~sn40l.scheduler.replies.PartitionInfo`), its nodes
    in one state (a tuple of :class:`~sn40l.scheduler.replies.NodeInfo`; one node with ``-N``)
    and that state."""

    __slots__ = ()

    @property
    def node(self) -> NodeInfo:
        """The row's first node (the per-node columns show it)."""
        return self.nodes[0]


def sinfo_rows(info: ClusterInfo, per_node: bool, partitions: list[str] | None = None,
               states: list[str] | None = None) -> list[SinfoRow]:
    """One row per (partition, state) group, or per (node, partition) with ``per_node``."""
    nodes = {n.name: n for n in info.nodes}
    rows = []
    for part in info.partitions:
        if partitions and part.name not in partitions:
            continue
        groups: dict[str, list[NodeInfo]] = {}
        for name in part.nodes:
            node = nodes[name]
            short = SHORT_NODE_STATES.get(node.state, node.state.lower())
            if states and short.rstrip("*") not in states and node.state.lower() not in states:
                continue
            if per_node:
                rows.append(SinfoRow(part, (node,), node.state))
            else:
                groups.setdefault(node.state, []).append(node)
        rows += [SinfoRow(part, tuple(members), state) for state, members in groups.items()]
    return rows


def _cpu_states(row: SinfoRow) -> str:
    """CPUS(A/I/O/T): allocated, idle, other (down or drained nodes), total."""
    a = sum(n.cpus_alloc for n in row.nodes)
    t = sum(n.cpus for n in row.nodes)
    o = sum(n.cpus for n in row.nodes if n.state.startswith(("DOWN", "DRAIN")))
    return f"{a}/{t - a - o}/{o}/{t}"


def _row(fn: Callable[[SinfoRow], str]) -> Callable[[SinfoRow, float], str]:
    return lambda row, now: fn(row)


def _fixed(text: str) -> Callable[[SinfoRow, float], str]:
    return lambda row, now: text


SINFO_FIELDS: dict[str, Column] = {
    "P": Column("PARTITION", _row(lambda r: r.part.name + ("*" if r.part.default else ""))),
    "R": Column("PARTITION", _row(lambda r: r.part.name)),
    "a": Column("AVAIL", _row(lambda r: "up" if r.part.state == "UP" else "down")),
    "l": Column("TIMELIMIT", _row(lambda r: "infinite" if r.part.max_time is None
                                  else format_duration(r.part.max_time))),
    "D": Column("NODES", _row(lambda r: str(len(r.nodes)))),
    "t": Column("STATE", _row(lambda r: SHORT_NODE_STATES.get(r.state, r.state.lower()))),
    "T": Column("STATE", _row(lambda r: LONG_NODE_STATES.get(r.state, r.state.lower()))),
    "N": Column("NODELIST", _row(lambda r: hostlist.compress([n.name for n in r.nodes]))),
    "c": Column("CPUS", _row(lambda r: str(r.node.cpus))),
    "C": Column("CPUS(A/I/O/T)", _row(_cpu_states)),
    "G": Column("GRES", _row(lambda r: f"rdu:{r.node.rdus}")),
    "m": Column("MEMORY", _row(lambda r: str(r.node.mem_mb))),
    "E": Column("REASON", _row(lambda r: r.node.reason or "none")),
    "s": Column("JOB_SIZE", _row(lambda r: "1-" + (str(r.part.max_nodes) if r.part.max_nodes
                                                   else "infinite"))),
    "r": Column("ROOT", _fixed("no")),
    "h": Column("OVERSUBS", _fixed("NO")),
    "g": Column("GROUPS", _fixed("all")),
    "z": Column("S:C:T", _row(lambda r: f"1:{r.node.cpus}:1")),
    "w": Column("WEIGHT", _fixed("1")),
    "d": Column("TMP_DISK", _fixed("0")),
    "f": Column("AVAIL_FEATURES", _fixed("(null)")),
}
