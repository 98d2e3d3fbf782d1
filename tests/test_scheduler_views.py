"""The Slurm commands' field tables (sn40l.scheduler.views, sn40l.scheduler.details) over the
replies a real core and SQLite store produce, read back through sn40l.scheduler.replies."""

from __future__ import annotations

import dataclasses
import os
import time

import msgpack
import pytest

from sn40l.scheduler import details, views
from sn40l.scheduler.core import Partition, SchedulerCore, Who
from sn40l.scheduler.nodeinfo import cluster_from_wire
from sn40l.scheduler.replies import ReplyError, job_from_wire, shown_from_wire
from sn40l.scheduler.request import build_request
from sn40l.scheduler.records import job_to_wire, request_from_record
from sn40l.scheduler.store import Store
from sn40l.scheduler.types import JobState

ME = Who(os.getuid(), os.getgid())
NOW = float(int(time.time()))


def _wire(obj):
    """What a client receives: the controller's reply through msgpack."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


@pytest.fixture
def core(tmp_path):
    store = Store(tmp_path / "slurm.db")
    core = SchedulerCore("t", ["n0", "n1"], 8, 16, 4096,
                         [Partition("p", ["n0", "n1"], True), Partition("q", ["n1"], False)],
                         store, now=lambda: NOW)
    for args in (["-N2", "-n4", "--gres=rdu:2", "--mem=100", "-t", "10", "-J", "wide"],
                 ["-a", "0-4%2", "-n", "16", "--exclusive"], ["-H", "--comment=c", "-p", "q"]):
        req = build_request([*args, "--wrap", "true"], env={}, cwd=str(tmp_path))
        core.submit(request_from_record(req), ME)
    core.schedule()
    yield core
    store.close()


def _jobs(core):
    return [job_from_wire(r) for r in _wire([job_to_wire(j) for j in core.jobs.values()])]


def test_every_squeue_and_sinfo_letter_renders_from_typed_values(core):
    jobs = _jobs(core)
    assert {j.state for j in jobs} == {JobState.RUNNING, JobState.PENDING}
    rows = views.queue_rows(jobs, expand_arrays=True)
    fmt = "|".join(f"%{letter}" for letter in views.SQUEUE_FIELDS)
    head, *lines = views.render(fmt, rows, views.SQUEUE_FIELDS, now=NOW)
    assert head.split("|") == [c.header for c in views.SQUEUE_FIELDS.values()]
    assert len(lines) == len(jobs) == 7
    for line in lines:
        cells = line.split("|")
        assert len(cells) == len(views.SQUEUE_FIELDS)
        assert not [c for c in cells if c.startswith("%")], line
    wide = next(line for line in lines if "|wide|" in line).split("|")
    by_letter = dict(zip(views.SQUEUE_FIELDS, wide))
    assert (by_letter["D"], by_letter["C"], by_letter["N"], by_letter["b"]) == \
        ("2", "4", "n[0-1]", "gres/rdu:2")
    info = cluster_from_wire(_wire({"nodes": core.node_rows(),
                                    "partitions": core.partition_rows()}))
    sinfo = views.render("|".join(f"%{letter}" for letter in views.SINFO_FIELDS),
                         views.sinfo_rows(info, per_node=True), views.SINFO_FIELDS)
    assert sinfo[0].split("|") == [c.header for c in views.SINFO_FIELDS.values()]
    assert len(sinfo) == 1 + 3  # n0 and n1 in p, n1 in q
    assert not [line for line in sinfo[1:] if "%" in line]


def test_an_unknown_letter_prints_as_itself_under_its_own_header(core):
    rows = views.queue_rows(_jobs(core), expand_arrays=False)
    lines = views.render("%.4i %Y %4W", rows, views.SQUEUE_FIELDS, now=NOW)
    assert lines[0] == "JOBI Y W"
    assert all(line.split()[1:] == ["%Y", "%W"] for line in lines[1:])
    # pending tasks of one array collapse into one row
    assert [r.jobid for r in rows if r.job.array_job_id is not None
            and r.job.state is JobState.PENDING] == ["2_[0-4%2]"]


def test_every_sacct_field_renders_and_an_unknown_one_is_refused_by_name(core):
    shown = [shown_from_wire(r) for r in _wire([job_to_wire(j, steps=[])
                                                for j in core.jobs.values()])]
    rows = details.acct_rows(shown, with_steps=True)
    names = [f.name for f in details.SACCT_FIELDS.values()]
    head, *lines = details.render_sacct(rows, names, delimiter="|", now=NOW)
    assert head.split("|") == names and len(lines) == len(rows) == 7
    assert all(len(line.split("|")) == len(names) for line in lines)
    assert details.sacct_value(rows[0], "jobid") == details.sacct_value(rows[0], "JOBID")
    with pytest.raises(details.UnknownField) as err:
        details.render_sacct(rows, ["JobID", "NoSuchField%5"])
    assert err.value.args[0] == "NoSuchField"


def test_a_reply_with_a_field_the_client_does_not_know_is_refused_by_name(core):
    record = _wire(job_to_wire(next(iter(core.jobs.values()))))
    with pytest.raises(ReplyError, match="unknown field.*colour"):
        job_from_wire({**record, "colour": "red"})
    nodes = _wire({"nodes": core.node_rows(), "partitions": core.partition_rows()})
    nodes["nodes"][0]["temperature"] = 40
    with pytest.raises(ReplyError, match="temperature"):
        cluster_from_wire(nodes)


def test_pending_array_tasks_collapse_into_one_row_across_digit_widths(core):
    task = next(j for j in _jobs(core) if j.array_job_id is not None)
    tasks = [dataclasses.replace(task, id=task.id + 100 + i, array_task_id=i)
             for i in (8, 9, 10, 11, 13)]
    rows = views.queue_rows(tasks, expand_arrays=False)
    assert [r.jobid for r in rows] == [f"{task.array_job_id}_[8-11,13%2]"]  # as Slurm prints
