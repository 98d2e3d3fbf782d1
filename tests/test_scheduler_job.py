"""The typed job model (sn40l.scheduler.job) and the store's row mapping: records the real
core writes to a real SQLite store load as typed jobs and map back to the same record."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from sn40l.scheduler.core import Partition, SchedulerCore, Who
from sn40l.scheduler.job import Dep, tasks_per_node
from sn40l.scheduler.request import build_request
from sn40l.scheduler.records import (job_from_record, job_to_record, job_to_wire,
                                     request_from_record)
from sn40l.scheduler.replies import shown_from_wire
from sn40l.scheduler.store import Store
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
    return core.submit(request_from_record(req), ME)["job_id"]


def test_every_record_the_core_writes_maps_to_a_typed_job_and_back(core, tmp_path):
    first = submit(core, tmp_path, "-N2", "-n5", "-t", "10", "--mem-per-cpu=100",
                   "--gres=rdu:2", "-o", "out-%j.txt", "-e", "err.txt", "-J", "wide")
    arr = submit(core, tmp_path, "-a", "0-6:3%2", "-n1", "--signal=B:USR1@30")
    dep = submit(core, tmp_path, f"--dependency=afterok:{first}:{arr}_3,afterany:{first}",
                 "-H", "-w", "n1", "--nice=5", "--export=NONE", "--begin", "now+60")
    submit(core, tmp_path, "-x", "n0", "--exclusive", "--mem=1G", "--no-requeue")
    core.schedule()
    stored = core.store.query_jobs()
    assert len(stored) == 6  # one job, three array tasks, two more jobs
    for job in stored:
        # what the store read back is what the core holds, and it maps to a record and back
        assert job == core.jobs[job.id] and job.alloc == core.jobs[job.id].alloc
        rec = json.loads(json.dumps(job_to_record(job)))
        again = job_from_record(rec)
        assert again == job and again.alloc == job.alloc
    by_id = {j.id: j for j in stored}
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
    rec = job_to_record(core.store.get_job(submit(core, tmp_path)))
    with pytest.raises(ValueError, match=r"unknown field\(s\) colour;"):
        job_from_record(dict(rec, colour="blue"))
    with pytest.raises(ValueError, match=r"job request has unknown field\(s\) ntask;"):
        job_from_record(dict(rec, req=dict(rec["req"], ntask=3)))


def test_a_change_is_a_new_job_value(core, tmp_path):
    job = core.store.get_job(submit(core, tmp_path, "-t", "5"))
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


def test_the_wire_record_is_the_row_mapping_without_script_and_environment(core, tmp_path):
    job = core.jobs[submit(core, tmp_path, "-a", "1-2", "-J", "w")]
    wire = job_to_wire(job, full=True, stdout_path="/o", dependency_shown="(null)")
    rec = job_to_record(job)
    assert {k: v for k, v in wire.items() if k not in ("req", "display_id", "stdout_path",
                                                        "dependency_shown")} == \
        {k: v for k, v in rec.items() if k != "req"}
    assert "script" not in wire["req"] and "env" not in wire["req"]
    assert wire["req"]["env_count"] == 1 and wire["display_id"] == job.display_id
    assert {k: v for k, v in wire["req"].items() if k != "env_count"} == \
        {k: v for k, v in rec["req"].items() if k not in ("script", "env")}
    with pytest.raises(ValueError, match=r"unknown wire field\(s\) colour;"):
        job_to_wire(job, colour="blue")


def test_a_compact_wire_record_leaves_out_defaults_and_reads_back_as_the_same_job(
        core, tmp_path):
    job = core.jobs[submit(core, tmp_path, "-J", "c", "--nice=0", "-d", "singleton")]
    full, compact = job_to_wire(job), job_to_wire(job, compact=True)
    assert len(compact) < len(full) and len(compact["req"]) < len(full["req"])
    assert "exit_code" not in compact and "restarts" not in compact  # None and 0 by default
    assert compact["req"]["nice"] == 0  # None by default: 0 is a value and is kept
    assert compact["req"]["dependency"] == "singleton"
    assert shown_from_wire(compact).job == shown_from_wire(full).job == dataclasses.replace(
        job, req=dataclasses.replace(job.req, script="", env={}))


def test_a_record_builds_the_same_value_as_the_constructor_and_refuses_what_is_missing(
        core, tmp_path):
    job = core.jobs[submit(core, tmp_path, "-J", "x")]
    rec = job_to_record(job)
    del rec["priority"], rec["req"]["env"]  # a default and a default factory
    back = job_from_record(rec)
    assert back == dataclasses.replace(job, priority=0, req=dataclasses.replace(job.req, env={}))
    assert back.req.env == {} and back.req.env is not job_from_record(rec).req.env
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.priority = 3  # type: ignore[misc]
    del rec["uid"]
    with pytest.raises(TypeError, match=r"Job record lacks required field\(s\) uid"):
        job_from_record(rec)
