"""``sn40l sweep`` / ``sn40l plot`` as a user runs them, on the shared session cluster: flags and
YAML give the same grid, skipped points say why, --resume runs only what is missing,
--via-slurm runs the points as array tasks on the emulated scheduler, and every row matches a
single ``sn40l run`` of the same point. ``run`` itself uses the running cluster."""

from __future__ import annotations

import csv
import json

import pytest
import ray

from sn40l.cli import main
from sn40l.scheduler.controller import stop_controller

TINY = ["--model", "tiny", "--seq-len", "64", "--prompt-len", "4", "--max-new-tokens", "4"]


@pytest.fixture
def on_shared(cluster2x8):
    """Flags that point a command at the shared cluster."""
    return ["--cluster", cluster2x8.spec.name, "--address",
            ray.get_runtime_context().gcs_address]


def _rows(path) -> list[dict]:
    return json.loads(path.with_suffix(".json").read_text())["rows"]


def _run_json(capsys, on_shared, tp: int) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["run", "tiny", "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4",
                 "--seq-len", "64", "--tp", str(tp), "--weights", "phantom", "--json",
                 *on_shared]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_flags_sweep_rows_match_single_runs_and_run_uses_the_running_cluster(
        on_shared, tmp_path, capsys):
    out = tmp_path / "res.csv"
    assert main(["sweep", *TINY, "--tp", "1,2,16", "--out", str(out), "-q", *on_shared]) == 0
    err = capsys.readouterr().err
    assert "using running cluster 'shared2x8'" in err
    rows = _rows(out)
    assert [(r["tp"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok"), (16, "skipped")]
    assert "needs 16 sockets per node" in rows[2]["reason"]
    with open(out) as f:  # the CSV holds the same rows, every axis and metric a column
        table = list(csv.DictReader(f))
    assert [t["status"] for t in table] == ["ok", "ok", "skipped"]
    assert {"tp", "batch", "ttft_ms", "tpot_ms", "time_hbm_ms", "wall_s"} <= set(table[0])
    for r in rows[:2]:
        single, err = _run_json(capsys, on_shared, r["tp"])
        assert "using running cluster 'shared2x8'" in err  # not a private cluster
        assert r["ttft_ms"] == pytest.approx(single["ttft_ms"], rel=0.02)
        assert r["tokens_per_s_per_user"] == pytest.approx(single["tokens_per_s_per_user"],
                                                           rel=0.02)
        split = sum(r[k] for k in ("time_compute_ms", "time_hbm_ms", "time_collective_ms",
                                   "time_launch_ms"))
        assert split == pytest.approx(r["tpot_ms"], rel=1e-6)


def test_yaml_sweep_resume_runs_only_missing_points(on_shared, tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: tiny-tp\nworkload: model\naxes:\n  model: tiny\n  tp: [1, 2]\n"
                   "  seq_len: 64\n  prompt_len: 4\n  max_new_tokens: 4\n")
    out = tmp_path / "res.csv"
    assert main(["sweep", str(exp), "--out", str(out), "-q", *on_shared]) == 0
    first = _rows(out)
    assert [r["tp"] for r in first] == [1, 2]
    # the same experiment by flags: the same points (same keys)
    assert main(["sweep", *TINY, "--tp", "1,2", "--out", str(tmp_path / "f.csv"), "-q",
                 *on_shared]) == 0
    assert [r["key"] for r in _rows(tmp_path / "f.csv")] == [r["key"] for r in first]
    # existing results are not overwritten without --resume
    assert main(["sweep", str(exp), "--out", str(out), "-q", *on_shared]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", str(exp), "--tp", "1,2,4", "--out", str(out), "--resume", "-q",
                 *on_shared]) == 0
    again = _rows(out)
    assert [r["tp"] for r in again] == [1, 2, 4]
    assert again[:2] == first  # untouched: not run again


@pytest.mark.parametrize("text, expect", [
    ("workload: model\naxis: {tp: 1}\n", "unknown key 'axis'; allowed keys: name, workload"),
    ("workload: model\naxes: {model: tiny, tpp: [1]}\n", "unknown axis 'tpp'"),
    ("workload: gemm\n", "unknown WorkloadKind 'gemm'; allowed: model, collective, coe"),
    ("workload: model\naxes: {model: tiny, tp: [0]}\n", "'tp' value 0 must be a whole number"),
    ("workload: collective\naxes: {size: 4Q}\n", "'size' value '4Q'"),
    ("workload: model\naxes: {model: tiny, spec_tokens: [2]}\n",
     "spec_tokens needs a draft model (axis draft)"),
    ("workload: model\naxes: {model: tiny, draft: tiny-draft}\n", "axis draft needs spec_tokens"),
    ("workload: model\naxes: {model: tiny, draft_placement: other}\n",
     "draft_placement needs a draft model (axis draft)"),
    ("workload: model\naxes: {model: tiny, draft: tiny-draft, spec_tokens: 2, "
     "draft_placement: far}\n", "'draft_placement' value 'far'"),
])
def test_bad_experiments_are_refused_by_name(tmp_path, capsys, text, expect):
    exp = tmp_path / "bad.yaml"
    exp.write_text(text)
    assert main(["sweep", str(exp), "--out", str(tmp_path / "r.csv")]) == 1
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


def test_draft_axes_rows_match_single_speculative_runs(on_shared, tmp_path, capsys):
    out = tmp_path / "spec.csv"
    assert main(["sweep", *TINY, "--tp", "1", "--weights", "random", "--draft", "tiny-draft",
                 "--spec-tokens", "2,3", "--draft-placement", "same,other", "--out", str(out),
                 "-q", *on_shared]) == 0
    rows = _rows(out)
    assert [(r["spec_tokens"], r["draft_placement"], r["status"]) for r in rows] == [
        (2, "same", "ok"), (2, "other", "ok"), (3, "same", "ok"), (3, "other", "ok")]

    def single(*extra) -> dict:
        capsys.readouterr()
        assert main(["run", "tiny", "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4",
                     "--seq-len", "64", "--tp", "1", "--weights", "random", "--json", *extra,
                     *on_shared]) == 0
        return json.loads(capsys.readouterr().out)

    plain = single()
    # the placement is a real axis: the draft's own sockets change the modeled time
    assert rows[1]["tokens_per_s_per_user"] != rows[0]["tokens_per_s_per_user"]
    for r in rows:
        spec = single("--draft", "tiny-draft", "--spec-tokens", str(r["spec_tokens"]),
                      "--draft-placement", r["draft_placement"])
        assert r["acceptance_rate"] == spec["acceptance_rate"]  # measured: same tokens
        assert r["draft_ms"] == pytest.approx(spec["draft_ms"], rel=1e-9)
        assert r["ttft_ms"] == pytest.approx(spec["ttft_ms"], rel=1e-9)
        assert r["tokens_per_s_per_user"] == pytest.approx(spec["tokens_per_s_per_user"],
                                                           rel=1e-9)
        assert r["spec_speedup"] == pytest.approx(
            spec["tokens_per_s_per_user"] / plain["tokens_per_s_per_user"], rel=0.02)
        assert r["time_hbm_ms"] is None  # no decode-step split for a speculative step


def test_via_slurm_runs_points_as_array_tasks(on_shared, cluster2x8, tmp_path, capsys):
    out = tmp_path / "slurm.csv"
    try:
        assert main(["sweep", *TINY, "--tp", "2,16", "--out", str(out), "--via-slurm", "-q",
                     *on_shared]) == 0
        err = capsys.readouterr().err
        assert "submitted array job" in err
        rows = _rows(out)
        assert [(r["tp"], r["status"]) for r in rows] == [(2, "ok"), (16, "skipped")]
        assert (tmp_path / "slurm.slurm" / "task-0.out").exists()
        single, _ = _run_json(capsys, on_shared, 2)
        assert rows[0]["tokens_per_s_per_user"] == pytest.approx(
            single["tokens_per_s_per_user"], rel=0.02)
    finally:
        stop_controller(cluster2x8.spec.name)


def test_draft_on_other_nodes_runs_as_an_array_task_like_in_process(on_shared, cluster2x8,
                                                                    tmp_path, capsys):
    spec = ["--tp", "2", "--weights", "random", "--draft", "tiny-draft", "--spec-tokens", "2",
            "--draft-placement", "other", "-q", *on_shared]
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    assert main(["sweep", *TINY, *spec, "--out", str(here)]) == 0
    try:
        assert main(["sweep", *TINY, *spec, "--out", str(there), "--via-slurm"]) == 0
        assert "submitted array job" in capsys.readouterr().err
    finally:
        stop_controller(cluster2x8.spec.name)
    (a,), (b,) = _rows(here), _rows(there)
    assert a["status"] == b["status"] == "ok"  # the task held 2 sockets on each of 2 nodes
    for k in ("ttft_ms", "tokens_per_s_per_user", "draft_ms", "acceptance_rate"):
        assert b[k] == pytest.approx(a[k], rel=1e-9), k


def test_coe_points_run_as_array_tasks_like_in_process(on_shared, cluster2x8, tmp_path,
                                                       capsys):
    coe = ["--workload", "coe", "--experts", "2", "--batch", "1,2", "--prompt-len", "4",
           "--max-new-tokens", "2", "--rounds", "1", "--warmup", "1", "-q", *on_shared]
    here, there = tmp_path / "here.csv", tmp_path / "there.csv"
    assert main(["sweep", *coe, "--out", str(here)]) == 0
    try:
        assert main(["sweep", *coe, "--out", str(there), "--via-slurm"]) == 0
        assert "submitted array job" in capsys.readouterr().err
    finally:
        stop_controller(cluster2x8.spec.name)
    local, tasks = _rows(here), _rows(there)
    assert [(r["batch"], r["status"]) for r in tasks] == [(1, "ok"), (2, "ok")]
    assert (tmp_path / "there.slurm" / "task-1.out").exists()
    for a, b in zip(local, tasks):
        for k in ("latency_ms", "time_switch_ms", "hit_rate", "router_ms", "expert_ms"):
            assert b[k] == pytest.approx(a[k], rel=1e-9), k


def test_collective_sweep_and_plots_have_the_expected_series(on_shared, tmp_path):
    out = tmp_path / "ar.csv"
    assert main(["sweep", "--workload", "collective", "--tp", "2,4", "--size", "4K,1M",
                 "--iters", "2", "--out", str(out), "-q", *on_shared]) == 0
    rows = _rows(out)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    for r in rows:  # nccl-tests: busbw = algbw x 2(n-1)/n for AllReduce
        n = r["tp"]
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * (n - 1) / n)
    assert main(["plot", str(out), "-o", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "busbw.png").stat().st_size > 10_000

    from sn40l.sweep.plots import figures
    from sn40l.sweep.results import read_results

    data = read_results(out)
    fig = figures(data["experiment"], data["rows"])["busbw"]
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["sockets=2", "sockets=4"]
    assert ax.get_ylim()[0] == 0 and "GB/s" in ax.get_ylabel()
    assert ax.get_legend() is not None


def test_strong_scaling_plot_has_ideal_line_and_efficiency_from_zero():
    from sn40l.sweep.plots import figures

    exp = {"workload": "model", "axes": {"model": "m", "tp": [1, 2, 4]}}
    rows = [{"status": "ok", "tp": t, "batch": 1, "model": "m", "tokens_per_s": 100.0 * t * e,
             "time_hbm_ms": 1.0 / t, "time_launch_ms": 0.01}
            for t, e in ((1, 1.0), (2, 0.9), (4, 0.5))]
    figs = figures(exp, rows)
    assert set(figs) == {"strong_scaling", "breakdown"}
    ax, eff = figs["strong_scaling"].axes[:2]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["measured", "ideal (measured)"]
    assert list(ax.get_lines()[1].get_ydata()) == [100.0, 200.0, 400.0]
    assert list(eff.get_lines()[0].get_ydata()) == pytest.approx([1.0, 0.9, 0.5])
    assert eff.get_ylim() == (0.0, 1.1) and ax.get_ylim()[0] == 0


def test_every_example_experiment_loads():
    from pathlib import Path

    from sn40l.sweep.experiment import Experiment

    files = sorted((Path(__file__).parent.parent / "deploy" / "experiments").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        exp = Experiment.from_yaml(f)
        assert exp.points() and exp.swept, f
