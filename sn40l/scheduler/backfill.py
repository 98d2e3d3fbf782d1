"""Backfill as a pure planner: which pending jobs start now, and when the others could.

:func:`plan` takes the pending jobs (in priority order, each already free of holds, begin
times, dependencies and partition limits), the jobs holding resources, the nodes and ``now``,
and returns a :class:`Plan`. It does no I/O and reads no clock, so it is tested with made-up
times. It follows Slurm's priority FIFO with conservative backfill: each job either starts now
on resources free for its whole time limit, or gets a reservation at the earliest time the
running jobs' limits free enough for it; a lower-priority job starts now only if it fits around
every reservation made before it. The first job of a partition that must wait is pending for
``Resources``, the ones behind it for ``Priority``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sn40l.scheduler.job import Job
from sn40l.scheduler.types import Reason

INF = math.inf


@dataclass(frozen=True)
class NodeCapacity:
    """What the planner knows of a node: its size and whether it takes jobs."""

    name: str
    cpus: int
    rdus: int
    mem_mb: int
    usable: bool = True


@dataclass(frozen=True)
class Use:
    """Resources held on one node over [start, end)."""

    start: float
    end: float
    cpus: int
    rdus: int
    mem: int
    exclusive: bool


@dataclass
class Plan:
    """The outcome of one pass: jobs to start now (id -> nodes, in start order), reservations
    (id -> (start, nodes)), and the reason of every considered job that does not start."""

    start: dict[int, tuple[str, ...]] = field(default_factory=dict)
    reservations: dict[int, tuple[float, tuple[str, ...]]] = field(default_factory=dict)
    reasons: dict[int, Reason] = field(default_factory=dict)
    considered: int = 0


class Timeline:
    """Resource use over time per node: the running jobs until their time limits, plus the
    reservations made during one pass."""

    def __init__(self, nodes: Sequence[NodeCapacity], now: float):
        self.now = now
        self.nodes = {n.name: n for n in nodes}
        self.uses: dict[str, list[Use]] = {n.name: [] for n in nodes}
        # what is held at `now` per node: [cpus, rdus, mem, any use, an exclusive use]
        self.held: dict[str, list] = {n.name: [0, 0, 0, False, False] for n in nodes}
        self._running: list[Job] = []  # running jobs whose uses are not made yet

    def _hold(self, name: str, use: Use) -> None:
        self.uses[name].append(use)
        if use.start <= self.now:
            h = self.held[name]
            h[0] += use.cpus
            h[1] += use.rdus
            h[2] += use.mem
            h[3] = True
            h[4] = h[4] or use.exclusive

    def add_running(self, job: Job) -> None:
        """A job holding its allocation from ``start_time`` (or now) to its time limit. Its
        share of ``held`` counts at once; its uses over time are made only when a job has to
        wait (:meth:`earliest`), so a pass in which everything fits stays linear in the nodes."""
        for name, a in (job.alloc or {}).items():
            h = self.held[name]
            h[0] += a.cpus
            h[1] += len(a.sockets)
            h[2] += a.mem
            h[3] = True
            h[4] = h[4] or job.req.exclusive
        self._running.append(job)

    def _materialize(self) -> None:
        for job in self._running:
            end = job.end_by_limit(job.start_time or self.now)
            if end <= self.now:
                end = self.now + 1  # over its limit, about to be killed
            for name, a in (job.alloc or {}).items():
                self.uses[name].append(Use(-INF, end, a.cpus, len(a.sockets), a.mem,
                                           job.req.exclusive))
        self._running = []

    def reserve(self, job: Job, start: float, nodes: Iterable[str]) -> None:
        cpus, rdus, mem = job.need
        end = job.end_by_limit(start)
        for name in nodes:
            self._hold(name, Use(start, end, cpus, rdus, mem, job.req.exclusive))

    def _fits(self, node: NodeCapacity, t0: float, t1: float, need: tuple[int, int, int],
              excl: bool) -> bool:
        cpus, rdus, mem = need
        uses = self.uses[node.name]
        for x in [t0] + [u.start for u in uses if t0 < u.start < t1]:
            c = r = m = 0
            busy = False
            for u in uses:
                if u.start <= x < u.end:
                    if u.exclusive:
                        return False
                    c, r, m, busy = c + u.cpus, r + u.rdus, m + u.mem, True
            if excl and busy:
                return False
            if c + cpus > node.cpus or r + rdus > node.rdus or m + mem > node.mem_mb:
                return False
        return True

    def fit_now(self, job: Job, candidates: Sequence[str]) -> tuple[str, ...]:
        """Nodes among ``candidates`` with room for the job now, or (). Before any
        reservation this is :meth:`earliest` at ``now`` (what runs only frees room as it
        ends), in time linear in the nodes."""
        (cpus, rdus, mem), excl, want = job.need, job.req.exclusive, job.req.nodes

        def fits(name: str) -> bool:
            node, (c, r, m, busy, held_excl) = self.nodes[name], self.held[name]
            if not node.usable or held_excl or (excl and busy):
                return False
            return c + cpus <= node.cpus and r + rdus <= node.rdus and m + mem <= node.mem_mb

        fit = [n for n in candidates if fits(n)]
        required = list(job.req.nodelist or ())
        if not all(r in fit for r in required):
            return ()
        chosen = required + [n for n in fit if n not in required][:want - len(required)]
        return tuple(chosen) if len(chosen) >= want else ()

    def earliest(self, job: Job, candidates: Sequence[str]) -> tuple[float, tuple[str, ...]]:
        """(start, nodes) of the earliest slot among ``candidates`` where the job runs for its
        whole time limit; (inf, ()) if there is none."""
        self._materialize()
        need, excl, want = job.need, job.req.exclusive, job.req.nodes
        required = list(job.req.nodelist or ())
        cands = [self.nodes[n] for n in candidates if self.nodes[n].usable]
        times = sorted({self.now} | {u.end for uses in self.uses.values() for u in uses
                                     if self.now < u.end < INF}
                       | {u.start for uses in self.uses.values() for u in uses
                          if u.start > self.now})
        for t in times:
            fit = [n.name for n in cands if self._fits(n, t, job.end_by_limit(t), need, excl)]
            if not all(r in fit for r in required):
                continue
            chosen = required + [n for n in fit if n not in required][:want - len(required)]
            if len(chosen) >= want:
                return t, tuple(chosen)
        return INF, ()


def candidates(job: Job, partitions: Mapping[str, Sequence[str]]) -> list[str]:
    """The nodes of the job's partition it did not ``--exclude``, in the partition's order."""
    exclude = set(job.req.exclude or ())
    return [n for n in partitions[job.partition] if n not in exclude]


def plan(pending: Iterable[Job], running: Iterable[Job], nodes: Sequence[NodeCapacity],
         now: float, partitions: Mapping[str, Sequence[str]],
         array_running: Mapping[int, int] | None = None, max_jobs: int = 100) -> Plan:
    """One scheduling pass over ``pending`` (priority order). ``array_running`` counts the
    running tasks of each array (for ``%N`` throttles); ``max_jobs`` is Slurm's
    bf_max_job_test: the pass stops pulling jobs once it has considered that many (the caller
    leaves the rest pending for ``Priority``)."""
    out = Plan()
    timeline = Timeline(nodes, now)
    for job in running:
        timeline.add_running(job)
    counts = dict(array_running or {})
    blocked: set[str] = set()
    for job in pending:
        if job.array_throttle and counts.get(job.array_job_id, 0) >= job.array_throttle:
            out.reasons[job.id] = Reason.JOB_ARRAY_TASK_LIMIT
            continue
        out.considered += 1
        cands = candidates(job, partitions)
        chosen = () if out.reservations else timeline.fit_now(job, cands)
        start = now
        if not chosen:
            start, chosen = timeline.earliest(job, cands)
        if start <= now and chosen:
            out.start[job.id] = chosen
            timeline.reserve(job, now, chosen)
            if job.array_job_id is not None:
                counts[job.array_job_id] = counts.get(job.array_job_id, 0) + 1
        else:
            if chosen:
                timeline.reserve(job, start, chosen)
                out.reservations[job.id] = (start, chosen)
            out.reasons[job.id] = (Reason.PRIORITY if job.partition in blocked
                                   else Reason.RESOURCES)
            blocked.add(job.partition)
        if out.considered >= max_jobs:
            break
    return out


def estimate(job: Job, pending: Iterable[Job], running: Iterable[Job],
             nodes: Sequence[NodeCapacity], now: float,
             partitions: Mapping[str, Sequence[str]]) -> tuple[float, tuple[str, ...]]:
    """When and where ``job`` would start behind everything in ``pending`` (--test-only)."""
    timeline = Timeline(nodes, now)
    for other in running:
        timeline.add_running(other)
    for other in pending:
        start, chosen = timeline.earliest(other, candidates(other, partitions))
        if chosen:
            timeline.reserve(other, max(start, now), chosen)
    start, chosen = timeline.earliest(job, candidates(job, partitions))
    return max(start, now), chosen
