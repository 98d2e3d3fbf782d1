"""The typed job model (sn40l.scheduler.job) and the store's row mapping: records the real
core writes to a real SQLite store load as typed jobs and map back to the same record."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from sn40l.scheduler.core import Partition, SchedulerCore, Who
from sn40l.scheduler.job import Dep, tasks_per_node
from sn40l.scheduler.request import build_request
from sn40l.scheduler.store import Store, job_from_record, job_to_record
from sn40l.scheduler.types import DepKind, JobState

ME = Who(os.getuid(), os.getgid())


@pytest.fixture
def core(tmp_path):
    now = float(int(time.time()))
    store = Store(tmp_path / "slurm.db")
    core = SchedulerCore("t", ["n0", "n1"], 8, 4, 4096, [Partition("p", ["n0", "n1"], True)],
                         store, now=lambda: now)
    yield core
    store.close()


def submit(core, tmp_path, *args: str) -> int:
    req = build_request([*args, "--wrap", "true"], env={"HOME": "/h"}, cwd=str(tmp_path))
    return core.submit(req, ME)["job_id"]


def test_every_record_the_core_writes_maps_to_a_typed_job_and_back(core, tmp_path):
    first = submit(core, tmp_path, "-N2", "-n5", "-t", "10", "--mem-per-cpu=100",
                   "--gres=rdu:2", "-o", "out-%j.txt", "-e", "err.txt", "-J", "wide")
    arr = submit(core, tmp_path, "-a", "0-6:3%2", "-n1", "--signal=B:USR1@30")
    dep = submit(core, tmp_path, f"--dependency=afterok:{first}:{arr}_3,afterany:{first}",
                 "-H", "-w", "n1", "--nice=5", "--export=NONE", "--begin", "now+60")
    submit(core, tmp_path, "-x", "n0", "--exclusive", "--mem=1G", "--no-requeue")
    core.schedule()
    records = core.store.query_jobs()
    assert len(records) == 6  # one job, three array tasks, two more jobs
    for rec in records:
        job = job_from_record(rec)
        again = job_to_record(job)
        # nothing lost or changed; what the record did not carry comes back as a default
        for got, want in ((again, rec), (again["req"], rec["req"])):
            assert {k: got[k] for k in want if k != "req"} == \
                {k: v for k, v in want.items() if k != "req"}
            assert all(got[k] in (None, 0, False) for k in set(got) - set(want))
        assert job_from_record(again) == job
    by_id = {r["id"]: job_from_record(r) for r in records}
    wide = by_id[first]
    assert wide.state is JobState.RUNNING and wide.holds_resources and not wide.is_final
    assert wide.tasks_per_node == 3 and wide.need == (3, 2, 300)
    assert sorted(wide.alloc) == ["n0", "n1"] and len(wide.alloc["n0"].sockets) == 2
    tasks = [j for j in by_id.values() if j.array_job_id == arr]
    assert [t.display_id for t in tasks] == [f"{arr}_0", f"{arr}_3", f"{arr}_6"]
    assert tasks[0].req.array == (0, 3, 6) and tasks[0].array_throttle == 2
    assert tasks[0].req.signal.signum == 10 and tasks[0].req.signal.batch_only
    held = by_id[dep]
    assert held.req.deps == (Dep(DepKind.AFTEROK, first), Dep(DepKind.AFTEROK, arr, 3),
                             Dep(DepKind.AFTERANY, first))
    assert held.req.dep_mode == "all" and held.held == "user" and held.display_id == str(dep)
    assert held.req.nodelist == ("n1",) and held.req.env == {}


def test_a_record_with_a_field_the_model_does_not_know_is_refused_by_name(core, tmp_path):
    rec = core.store.get_job(submit(core, tmp_path))
    with pytest.raises(ValueError, match=r"unknown field\(s\) colour;"):
        job_from_record(dict(rec, colour="blue"))
    with pytest.raises(ValueError, match=r"job request has unknown field\(s\) ntask;"):
        job_from_record(dict(rec, req=dict(rec["req"], ntask=3)))


def test_a_change_is_a_new_job_value(core, tmp_path):
    job = job_from_record(core.store.get_job(submit(core, tmp_path, "-t", "5")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = JobState.RUNNING  # type: ignore[misc]
    done = dataclasses.replace(job, state=JobState.COMPLETED, end_time=1.0)
    assert done.is_final and not job.is_final
    assert job.end_by_limit(100.0) == 400.0
    assert dataclasses.replace(job, time_limit=None).end_by_limit(100.0) == float("inf")


@pytest.mark.parametrize("nodes,ntasks,per_node,expected", [
    (1, 1, None, 1), (2, 5, None, 3), (3, 3, None, 1), (2, 4, 4, 4), (0, 3, None, 3)])
def test_tasks_per_node(nodes, ntasks, per_node, expected):
    assert tasks_per_node(nodes, ntasks, per_node) == expected
