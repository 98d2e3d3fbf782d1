"""The scheduler's pure parts against Slurm's documented grammar: time limits, durations,
host lists, --array, --dependency, getopt_long behaviour, #SBATCH lines, output patterns."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime

import pytest

from sn40l.scheduler import hostlist
from sn40l.scheduler.launch import array_step, expand_pattern
from sn40l.scheduler.types import end_reason
from sn40l.scheduler.job import Job, JobRequest
from sn40l.scheduler.supervise import batch_step_state
from sn40l.scheduler.getopt import Opt, Parser, UsageError
from sn40l.scheduler.request import (SubmitError, batch_directives, build_request, parse_array,
                                     parse_dependency, parse_gres)
from sn40l.scheduler.sbatch_input import SignalSpec, parse_signal
from sn40l.scheduler.srun import failure_lines
from sn40l.scheduler.types import JobState, Reason
from sn40l.scheduler.timespec import (format_duration, parse_begin, parse_time_limit)


@pytest.mark.parametrize("text,seconds", [
    ("10", 600), ("10:30", 630), ("1:02:03", 3723), ("2-3", 2 * 86400 + 3 * 3600),
    ("2-3:04", 2 * 86400 + 3 * 3600 + 240), ("1-00:00:01", 86401),
    ("UNLIMITED", None), ("infinite", None), ("0", None), ("0:02", 2),
])
def test_every_slurm_time_limit_form(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("bad", ["", "1:2:3:4", "abc", "1-", "-5", "1:x", "1.5"])
def test_malformed_time_limits_are_refused(bad):
    with pytest.raises(ValueError):
        parse_time_limit(bad)


def test_durations_print_as_squeue_and_sacct_do():
    assert format_duration(5) == "0:05"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(90061) == "1-01:01:01"
    assert format_duration(5, "sacct") == "00:00:05"
    assert format_duration(None) == "UNLIMITED"


def test_begin_times():
    now = datetime(2026, 11, 22, 10, 0, 0).timestamp()
    assert parse_begin("now+60", now) == now + 60
    assert parse_begin("now+2hours", now) == now + 7200
    assert parse_begin("2026-12-01T08:30", now) == datetime(2026, 12, 1, 8, 30).timestamp()
    assert parse_begin("09:00", now) == datetime(2026, 11, 23, 9, 0).timestamp()  # next one
    assert parse_begin("teatime", now) == datetime(2026, 11, 22, 16, 0).timestamp()
    with pytest.raises(ValueError):
        parse_begin("soonish", now)


def test_host_lists_round_trip():
    assert hostlist.expand("sn[00-03,07]") == ["sn00", "sn01", "sn02", "sn03", "sn07"]
    assert hostlist.expand("sn00,sn[02-03]") == ["sn00", "sn02", "sn03"]
    assert hostlist.compress(["sn00", "sn01", "sn02", "sn05"]) == "sn[00-02,05]"
    assert hostlist.compress(["sn04"]) == "sn04"
    for bad in ("sn[03-01]", "sn[00", "sn]"):
        with pytest.raises(ValueError):
            hostlist.expand(bad)


def test_array_specs():
    assert parse_array("0-15%4").indices == tuple(range(16))
    assert parse_array("0-15%4").throttle == 4
    assert parse_array("1,3,5-7").indices == (1, 3, 5, 6, 7)
    assert parse_array("0-15:4").indices == (0, 4, 8, 12)
    for bad in ("5-1", "a", "1-1001", "0-3%x", ""):
        with pytest.raises(SubmitError):
            parse_array(bad)


def test_dependency_grammar():
    mode, deps = parse_dependency("afterok:12:13,afterany:14_2")
    assert mode == "all" and [(d.kind, d.job, d.task) for d in deps] == [
        ("afterok", 12, None), ("afterok", 13, None), ("afterany", 14, 2)]
    mode, deps = parse_dependency("afterok:1?afternotok:2")
    assert mode == "any" and len(deps) == 2
    assert parse_dependency("after:5+10")[1][0].delay_min == 10
    assert parse_dependency("singleton")[1][0].kind == "singleton"
    for bad in ("afterok", "afterwards:1", "afterok:1,afterok:2?afterok:3", "afterok:x",
                "afterok:1+5"):
        with pytest.raises(SubmitError):
            parse_dependency(bad)


def test_gres():
    assert parse_gres("rdu:8") == 8
    assert parse_gres("rdu") == 1
    assert parse_gres("rdu:sn40l:4") == 4
    with pytest.raises(SubmitError, match="Invalid generic resource"):
        parse_gres("gpu:8")


def test_getopt_long_rules():
    p = Parser("sbatch", [Opt("n", "ntasks", "yes", "n"), Opt("", "ntasks-per-node", "yes",
                                                               "t"),
                          Opt("H", "hold", "no", "h"), Opt("", "nodes", "yes", "N")],
               stop_at_operand=True)
    vals, ops, _ = p.parse(["-Hn4", "--ntasks-per=2", "script.sh", "-n", "9"])
    assert vals == {"h": True, "n": "4", "t": "2"} and ops == ["script.sh", "-n", "9"]
    with pytest.raises(UsageError, match="option '--n' is ambiguous"):
        p.parse(["--n=3"])
    with pytest.raises(UsageError, match="unrecognized option '--bogus'"):
        p.parse(["--bogus"])
    with pytest.raises(UsageError, match="invalid option -- 'z'"):
        p.parse(["-z"])
    with pytest.raises(UsageError, match="requires an argument -- 'n'"):
        p.parse(["-n"])


def test_sbatch_lines_stop_at_the_first_command_and_the_command_line_wins(tmp_path):
    script = ("#!/bin/bash\n#SBATCH -J one\n\n# a comment\n#SBATCH --ntasks=4 # why\n"
              "echo hi\n#SBATCH -J ignored\n")
    assert batch_directives(script) == ["-J", "one", "--ntasks=4"]
    (tmp_path / "job.sh").write_text(script)
    req = build_request(["-J", "two", "job.sh"], env={"A": "1"}, cwd=str(tmp_path))
    assert req["name"] == "two" and req["ntasks"] == 4 and req["env"] == {"A": "1"}
    req = build_request(["-N", "2", "--ntasks-per-node", "16", "--wrap", "x"], env={},
                        cwd=str(tmp_path))
    assert (req["nodes"], req["ntasks"]) == (2, 32)
    req = build_request(["--export=NONE,B=2", "--wrap", "x"], env={"A": "1"},
                        cwd=str(tmp_path))
    assert req["env"] == {"B": "2"}


def test_output_patterns():
    req = JobRequest("train", 1, 1, 1, "/w", "/w", "#!/bin/sh\n")
    job = Job(41, JobState.RUNNING, "None", 1000, 1000, "ada", "train", "p", 0.0, req,
              array_job_id=40, array_task_id=1, batch_host="sn01")
    assert expand_pattern("o-%A_%a-%j-%x-%u-%N-%%.txt", job) == \
        "o-40_1-41-train-ada-sn01-%.txt"
    assert expand_pattern("slurm-%5j.out", replace(job, array_job_id=None)) == "slurm-00041.out"


# -- sbatch input: environment, directives, --signal (checked on Slurm 22.05) --------------
def _req(tmp_path, argv, env=None, script=None):
    if script is not None:
        (tmp_path / "s.sh").write_text(script)
        argv = [*argv, "s.sh"]
    return build_request(argv, env=env or {}, cwd=str(tmp_path))


def test_sbatch_env_beats_directives_and_the_command_line_beats_both(tmp_path):
    script = "#!/bin/sh\n#SBATCH -J directive\n#SBATCH -p fromdirective\ntrue\n"
    env = {"SBATCH_JOB_NAME": "fromenv", "SBATCH_TIMELIMIT": "7", "SBATCH_REQUEUE": ""}
    req = _req(tmp_path, [], env, script)
    assert (req["name"], req["time_limit"], req["partition"]) == ("fromenv", 420,
                                                                   "fromdirective")
    req = _req(tmp_path, ["-J", "cli", "-t", "1"], env, script)
    assert (req["name"], req["time_limit"]) == ("cli", 60)


def test_only_a_directive_at_the_start_of_a_line_counts():
    script = "#!/bin/sh\n  #SBATCH -J indented\n#SBATCH  -J two\n\t#SBATCH -N 4\ntrue\n"
    assert batch_directives(script) == ["-J", "two"]


@pytest.mark.parametrize("text,spec", [
    ("USR1", SignalSpec(10, 60, False)), ("B:USR1@30", SignalSpec(10, 30, True)),
    ("SIGTERM@5", SignalSpec(15, 5, False)), ("R:12@90", SignalSpec(12, 90, False)),
])
def test_signal_option_forms(text, spec):
    assert parse_signal(text) == spec


@pytest.mark.parametrize("bad", ["NOPE", "B:", "X:USR1", "USR1@soon", "99"])
def test_bad_signal_option_is_refused(bad):
    with pytest.raises(SubmitError, match="Invalid --signal specification"):
        parse_signal(bad)


def test_array_task_step_follows_slurm():
    assert [array_step(t) for t in ("0-6:3", "1,3,7", "0-3", "0-15:4%2", None)] == \
        [3, 1, 1, 4, 1]


def test_srun_failure_lines_group_tasks_per_node():
    assert failure_lines([5, 5, 5], ["node1", "node1", "node2"]) == [
        "srun: error: node2: task 2: Exited with exit code 5",
        "srun: error: node1: tasks 0-1: Exited with exit code 5"]
    assert failure_lines([0, 0], ["a", "b"]) == []


def test_end_states_and_reasons_as_slurm_reports_them():
    assert batch_step_state(JobState.TIMEOUT, 15) == JobState.CANCELLED
    assert batch_step_state(JobState.FAILED, 9) == JobState.CANCELLED
    assert batch_step_state(JobState.FAILED, 0) == JobState.FAILED
    assert end_reason(JobState.TIMEOUT, 0, 15) == Reason.TIME_LIMIT
    assert end_reason(JobState.FAILED, 3, 0) == Reason.NON_ZERO_EXIT_CODE
    assert end_reason(JobState.FAILED, 0, 53) == Reason.JOB_LAUNCH_FAILURE
    assert end_reason(JobState.COMPLETED, 0, 0) == Reason.NONE
