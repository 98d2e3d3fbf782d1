"""The backfill planner on its own (sn40l.scheduler.backfill.plan): typed jobs made by hand, two
4-CPU nodes, made-up times; no store, no clock, no processes."""

from __future__ import annotations

import itertools

from sn40l.scheduler.backfill import NodeCapacity, estimate, plan
from sn40l.scheduler.job import Alloc, Job, JobRequest
from sn40l.scheduler.types import JobState, Reason

NOW = 1000.0
NODES = [NodeCapacity("n0", 4, 8, 1024), NodeCapacity("n1", 4, 8, 1024)]
PARTS = {"p": ["n0", "n1"]}
_ids = itertools.count(1)


def job(nodes: int = 1, ntasks: int = 4, minutes: int | None = 10, **kw) -> Job:
    req = JobRequest(name="j", nodes=nodes, nodes_max=nodes, ntasks=ntasks, workdir="/",
                     submit_dir="/", script="#!/bin/sh\n", exclusive=kw.pop("exclusive", False),
                     nodelist=kw.pop("nodelist", None))
    return Job(id=next(_ids), state=JobState.PENDING, reason="None", uid=1, gid=1, user="u",
               name="j", partition="p", submit_time=0.0, req=req,
               time_limit=None if minutes is None else minutes * 60, **kw)


def running(on: str, cpus: int = 4, started: float = NOW, minutes: int | None = 10) -> Job:
    j = job(ntasks=cpus, minutes=minutes)
    return Job(**{**j.__dict__, "state": JobState.RUNNING, "start_time": started,
                  "alloc": {on: Alloc(cpus, (), 0)}})


def test_the_first_waiting_job_gets_a_reservation_and_only_a_short_job_slips_in():
    busy = running("n0")  # n0 full until NOW+600
    wide, long, short = job(nodes=2, ntasks=8), job(minutes=20), job(minutes=5)
    out = plan([wide, long, short], [busy], NODES, NOW, PARTS)
    # conservative backfill: every waiting job holds a slot, the long one behind the wide one
    assert out.reservations == {wide.id: (NOW + 600, ("n0", "n1")),
                                long.id: (NOW + 1200, ("n0",))}
    assert out.start == {short.id: ("n1",)}  # ends at NOW+300, before the reservation
    assert out.reasons == {wide.id: Reason.RESOURCES, long.id: Reason.PRIORITY}


def test_a_long_job_that_would_delay_the_reservation_does_not_start():
    busy = running("n0")
    wide, long = job(nodes=2, ntasks=8), job(minutes=11)  # NOW+660 > NOW+600
    out = plan([wide, long], [busy], NODES, NOW, PARTS)
    assert out.start == {} and out.reasons[long.id] == Reason.PRIORITY
    # ten minutes later the running job has ended: the wide job starts, the long one waits
    out = plan([wide, long], [], NODES, NOW + 600, PARTS)
    assert out.start == {wide.id: ("n0", "n1")}
    assert out.reasons == {long.id: Reason.RESOURCES}


def test_a_job_without_time_limit_blocks_every_reservation_on_its_node():
    forever = running("n0", minutes=None)
    wide, short = job(nodes=2, ntasks=8), job(ntasks=1, minutes=1)
    out = plan([wide, short], [forever], NODES, NOW, PARTS)
    assert wide.id not in out.reservations  # n0 never comes back
    assert out.start == {short.id: ("n1",)}


def test_a_job_past_its_limit_is_counted_as_ending_next_second():
    late = running("n0", started=NOW - 3600)  # limit ran out 50 minutes ago
    wide = job(nodes=2, ntasks=8)
    assert plan([wide], [late], NODES, NOW, PARTS).reservations[wide.id][0] == NOW + 1


def test_exclusive_and_required_nodes():
    small = running("n1", cpus=1)
    excl = job(ntasks=1, exclusive=True)
    pinned = job(ntasks=1, nodelist=("n1",))
    out = plan([excl, pinned], [small], NODES, NOW, PARTS)
    assert out.start == {excl.id: ("n0",), pinned.id: ("n1",)}  # excl avoids the busy n1


def test_array_throttle_and_the_job_test_limit():
    tasks = [job(ntasks=1, array_job_id=50, array_task_id=k, array_throttle=2)
             for k in range(3)]
    out = plan(tasks, [], NODES, NOW, PARTS, array_running={50: 1})
    assert list(out.start) == [tasks[0].id]  # one already runs: one more may start
    assert out.reasons == {tasks[1].id: Reason.JOB_ARRAY_TASK_LIMIT,
                           tasks[2].id: Reason.JOB_ARRAY_TASK_LIMIT}
    many = [job(ntasks=1) for _ in range(5)]
    out = plan(iter(many), [], NODES, NOW, PARTS, max_jobs=2)
    assert out.considered == 2 and list(out.start) == [many[0].id, many[1].id]


def test_estimate_places_a_job_behind_the_queue():
    busy = running("n0")
    queued = job(nodes=1, ntasks=4, minutes=30)  # takes n1 now, until NOW+1800
    probe = job(nodes=2, ntasks=8)
    assert estimate(probe, [queued], [busy], NODES, NOW, PARTS) == (NOW + 1800, ("n0", "n1"))
