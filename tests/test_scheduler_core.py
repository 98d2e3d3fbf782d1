"""The scheduler core on its own: real SQLite store, a fake clock, no Ray and no processes.

Backfill (Slurm's sched/backfill semantics): the first job that must wait gets a reservation at
the time the running jobs' limits free its resources; a lower-priority job starts now only if
it ends before that reservation or fits beside it.
"""

from __future__ import annotations

import os
import time

import pytest

from sn40l.errors import SchedulerError
from sn40l.scheduler import verbs
from sn40l.scheduler.client import ControllerError, ControllerUnavailable
from sn40l.scheduler.core import Partition, RequestError, SchedulerCore, Who
from sn40l.scheduler.records import request_from_record
from sn40l.scheduler.request import SubmitError, build_request
from sn40l.scheduler.store import Store
from sn40l.scheduler.types import JobState, KillCause, Reason


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.t = float(int(time.time()))  # sbatch resolves --begin now+N against real time

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def core(tmp_path):
    clock = Clock()
    store = Store(tmp_path / "slurm.db")
    core = SchedulerCore("t", ["n0", "n1"], 8, 4, 1024, [Partition("p", ["n0", "n1"], True)],
                         store, now=clock)
    core.clock = clock
    yield core
    store.close()


ME = Who(os.getuid(), os.getgid())


def submit(core, tmp_path, *args: str) -> int:
    req = build_request([*args, "--wrap", "true"], env={}, cwd=str(tmp_path))
    return core.submit(request_from_record(req), ME)["job_id"]


def state(core, job_id: int) -> tuple[str, str]:
    job = core.jobs[job_id]
    return job.state, job.reason


def test_backfill_reserves_for_the_first_waiting_job_and_lets_only_short_ones_slip_in(
        core, tmp_path):
    running = submit(core, tmp_path, "-N1", "-n4", "-t", "10")  # fills n0 until t+600
    assert [j.id for j in core.schedule()] == [running]
    wide = submit(core, tmp_path, "-N2", "-n8", "-t", "10")  # needs both nodes: waits for n0
    long = submit(core, tmp_path, "-N1", "-n4", "-t", "20")  # would run past the reservation
    short = submit(core, tmp_path, "-N1", "-n4", "-t", "5")  # ends before it: backfilled
    started = core.schedule()
    assert [j.id for j in started] == [short]
    assert state(core, short) == (JobState.RUNNING, Reason.NONE)
    assert core.jobs[short].alloc.keys() == {"n1"}
    assert state(core, wide) == (JobState.PENDING, Reason.RESOURCES)
    assert state(core, long) == (JobState.PENDING, Reason.PRIORITY)
    # time passes: nothing changes until the running jobs end
    core.clock.t += 299
    assert core.schedule() == []
    for job_id in (running, short):
        core.completing(job_id, JobState.COMPLETED, 0, 0)
        core.release(job_id)
    assert [j.id for j in core.schedule()] == [wide]
    assert state(core, long) == (JobState.PENDING, Reason.RESOURCES)


def test_a_job_without_time_limit_blocks_backfill_behind_it(core, tmp_path):
    first = submit(core, tmp_path, "-N1", "-n4")  # UNLIMITED on n0
    core.schedule()
    wide = submit(core, tmp_path, "-N2", "-n8", "-t", "1")  # can never get n0 back
    short = submit(core, tmp_path, "-N1", "-n1", "-t", "1")
    assert [j.id for j in core.schedule()] == [short]  # no reservation to protect
    assert state(core, first)[0] == JobState.RUNNING
    assert state(core, wide) == (JobState.PENDING, Reason.RESOURCES)


def test_begin_time_is_read_from_the_clock(core, tmp_path):
    later = submit(core, tmp_path, "--begin", "now+60")
    assert core.schedule() == []
    assert state(core, later) == (JobState.PENDING, Reason.BEGIN_TIME)
    core.clock.t += 61
    assert [j.id for j in core.schedule()] == [later]


@pytest.mark.parametrize("field,value,message", [
    ("NumNodes", "abc", 'Invalid numeric value "abc" for requested node count.'),
    ("NumNodes", "0", 'Invalid numeric value "0" for requested node count.'),
    ("Nice", "abc", "Invalid Nice value: abc"),
    ("Priority", "x", "Invalid Priority value: x"),
    ("TimeLimit", "abc", "Invalid TimeLimit value: abc"),
])
def test_scontrol_update_refuses_bad_values_by_name(core, tmp_path, field, value, message):
    job = submit(core, tmp_path, "-H")
    admin = Who(0, 0)
    with pytest.raises(RequestError) as err:
        verbs.update_job(core, admin, str(job), {"Comment": "first", field: value})
    assert str(err.value) == message
    # nothing half-applied, in memory or in the store
    for job in (core.jobs[job], core.store.get_job(job)):
        assert job.req.nodes == 1 and job.req.comment is None and job.priority == 0


def test_scheduler_errors_join_the_project_family():
    for cls in (RequestError, SubmitError, ControllerError, ControllerUnavailable):
        assert issubclass(cls, SchedulerError)


def test_every_change_is_a_new_job_value_written_through_to_the_store(core, tmp_path):
    def same_in_store(job_id):
        job = core.jobs[job_id]
        assert core.store.get_job(job_id) == job
        return job

    job_id = submit(core, tmp_path, "-t", "1", "-n2")
    before = core.jobs[job_id]
    core.schedule()
    running = same_in_store(job_id)
    assert before.state == JobState.PENDING  # the old value is untouched
    assert running.state == JobState.RUNNING and running.launch_time == core.clock.t
    assert core.nodes["n0"].cpus_used == 2 and core.next_step(job_id) == 0
    assert same_in_store(job_id).next_step == 1
    assert core.timed_out(job_id).kill_reason == KillCause.TIMEOUT
    assert core.final_state_for(same_in_store(job_id), -15) == (JobState.TIMEOUT, 0, 15)
    core.completing(job_id, JobState.TIMEOUT, 0, 15)
    assert same_in_store(job_id).state == JobState.COMPLETING
    assert core.nodes["n0"].cpus_used == 2  # held until released
    core.release(job_id)
    done = same_in_store(job_id)
    assert (done.state, done.reason, done.final_state) == (JobState.TIMEOUT, Reason.TIME_LIMIT,
                                                           None)
    assert core.nodes["n0"].cpus_used == 0 and not core.nodes["n0"].jobs
    # requeue a finished job held: a new run, priority kept aside until released
    assert verbs.requeue(core, ME, [str(job_id)], hold=True) == ([], [])
    held = same_in_store(job_id)
    assert (held.state, held.reason, held.restarts, held.priority) == (
        JobState.PENDING, Reason.JOB_HELD_USER, 1, 0)
    assert held.priority_before_hold == running.priority
    assert verbs.hold(core, ME, [str(job_id)], release=True) == []
    assert same_in_store(job_id).priority == running.priority


def test_a_launch_failure_on_a_dead_socket_requeues_and_a_cancel_kills(core, tmp_path):
    job_id = submit(core, tmp_path)
    core.schedule()
    core.completing(job_id, JobState.NODE_FAIL, 0, 0, launch_error="socket died", requeue=True)
    requeued = core.release(job_id)
    assert (requeued.state, requeued.restarts, requeued.launch_error) == (
        JobState.PENDING, 1, "socket died")
    core.clock.t += 2  # past the requeue's BeginTime
    core.schedule()
    errors, kill, signal = verbs.cancel(core, ME, [str(job_id), "99"])
    assert errors == [] and signal == [] and [j.id for j in kill] == [job_id]
    assert core.store.get_job(job_id).kill_reason == KillCause.CANCEL
    assert core.final_state_for(kill[0], 143) == (JobState.CANCELLED, 0, 15)
