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
from sn40l.scheduler.client import ControllerError, ControllerUnavailable
from sn40l.scheduler.core import Partition, RequestError, SchedulerCore, Who
from sn40l.scheduler.request import SubmitError, build_request
from sn40l.scheduler.store import Store
from sn40l.scheduler.types import JobState, Reason


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
    return core.submit(req, ME)["job_id"]


def state(core, job_id: int) -> tuple[str, str]:
    job = core.jobs[job_id]
    return job["state"], job["reason"]


def test_backfill_reserves_for_the_first_waiting_job_and_lets_only_short_ones_slip_in(
        core, tmp_path):
    running = submit(core, tmp_path, "-N1", "-n4", "-t", "10")  # fills n0 until t+600
    assert [j["id"] for j in core.schedule()] == [running]
    wide = submit(core, tmp_path, "-N2", "-n8", "-t", "10")  # needs both nodes: waits for n0
    long = submit(core, tmp_path, "-N1", "-n4", "-t", "20")  # would run past the reservation
    short = submit(core, tmp_path, "-N1", "-n4", "-t", "5")  # ends before it: backfilled
    started = core.schedule()
    assert [j["id"] for j in started] == [short]
    assert state(core, short) == (JobState.RUNNING, Reason.NONE)
    assert core.jobs[short]["alloc"].keys() == {"n1"}
    assert state(core, wide) == (JobState.PENDING, Reason.RESOURCES)
    assert state(core, long) == (JobState.PENDING, Reason.PRIORITY)
    # time passes: nothing changes until the running jobs end
    core.clock.t += 299
    assert core.schedule() == []
    for job_id in (running, short):
        job = core.jobs[job_id]
        core.completing(job, JobState.COMPLETED, 0, 0)
        core.release(job)
    assert [j["id"] for j in core.schedule()] == [wide]
    assert state(core, long) == (JobState.PENDING, Reason.RESOURCES)


def test_a_job_without_time_limit_blocks_backfill_behind_it(core, tmp_path):
    first = submit(core, tmp_path, "-N1", "-n4")  # UNLIMITED on n0
    core.schedule()
    wide = submit(core, tmp_path, "-N2", "-n8", "-t", "1")  # can never get n0 back
    short = submit(core, tmp_path, "-N1", "-n1", "-t", "1")
    assert [j["id"] for j in core.schedule()] == [short]  # no reservation to protect
    assert state(core, first)[0] == JobState.RUNNING
    assert state(core, wide) == (JobState.PENDING, Reason.RESOURCES)


def test_begin_time_is_read_from_the_clock(core, tmp_path):
    later = submit(core, tmp_path, "--begin", "now+60")
    assert core.schedule() == []
    assert state(core, later) == (JobState.PENDING, Reason.BEGIN_TIME)
    core.clock.t += 61
    assert [j["id"] for j in core.schedule()] == [later]


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
        core.update_job(admin, str(job), {field: value})
    assert str(err.value) == message
    assert core.jobs[job]["req"]["nodes"] == 1  # nothing half-applied


def test_scheduler_errors_join_the_project_family():
    for cls in (RequestError, SubmitError, ControllerError, ControllerUnavailable):
        assert issubclass(cls, SchedulerError)
