"""``sn40l sweep --via-slurm``: the points as one array job on the cluster's emulated Slurm.

The driver writes ``<out>.slurm/plan.json`` (the experiment and one (point, repeat) per array
task), submits ``--array=0-(N-1)`` asking for the most nodes and sockets per node any point
needs, waits for the tasks (so the campaign shows in ``squeue`` and ``sacct`` meanwhile) and
collects each task's row file into the same CSV/JSON as a sweep run here. Each task runs its
point with this module as a batch step, on the sockets the scheduler allocated to it (the job
holds their lease). Points that cannot be placed on the cluster are ``skipped`` rows without a
task. A model or collective task asks for ``tp / nodes`` sockets on each node; a CoE task for
whole nodes (its experts are homed across every socket of a node), as many as the largest CoE
point needs, and each task loads its CoE afresh (in-process, points of one CoE share a load).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sn40l.errors import ConfigError, SchedulerError
from sn40l.progress import progress
from sn40l.sweep.experiment import Experiment, Point
from sn40l.sweep.results import ResultFile, Row, make_row
from sn40l.sweep.types import Status, WorkloadKind

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _client(cluster):
    from sn40l.cluster.record import read_record
    from sn40l.scheduler.client import Client, ControllerUnavailable
    from sn40l.scheduler.controller import start_controller

    client = Client(cluster=cluster.spec.name)
    try:
        client.ping()
    except ControllerUnavailable:
        record = read_record(cluster.spec.name) or {}
        start_controller(cluster.spec.name, partitions=record.get("partitions"))
    return client


def run_via_slurm(exp: Experiment, results: ResultFile, args) -> None:
    from sn40l.cluster.attach import announce, attach
    from sn40l.sweep.run import check_runnable, plan_points

    check_runnable(exp)
    cluster = attach(args.cluster, args.address)
    if cluster is None:
        raise ConfigError("--via-slurm needs a running cluster with its scheduler: start one "
                          "with 'sn40l cluster up'")
    announce("sweep", cluster)
    planned, _ = plan_points(exp, exp.points(), cluster)
    done = results.done()
    spn = cluster.spec.sockets_per_node
    tasks: list[tuple[Point, int, int, int]] = []
    for p, shape, nodes, why, in planned:
        for rep in range(exp.repeats):
            if (p.key, rep) in done:
                continue
            v = p.as_dict
            if shape is None or shape != (cluster.profile.name, spn) or nodes > cluster.spec.nodes:
                why = why or (f"needs {nodes} node(s) of {shape[0]} x {shape[1]} sockets; the "
                              f"cluster's scheduler has {cluster.spec.nodes} of "
                              f"{cluster.profile.name} x {spn}")
                results.add(make_row(exp, p, rep, Status.SKIPPED, {}, why))
            elif exp.workload is WorkloadKind.COE:
                tasks.append((p, rep, nodes, spn))  # whole nodes
            elif v["tp"] % v["nodes"] or v["tp"] // v["nodes"] > spn:
                results.add(make_row(exp, p, rep, Status.SKIPPED, {},
                                     f"TP {v['tp']} cannot be placed as {v['nodes']} node(s) x "
                                     f"{spn} sockets"))
            else:  # nodes: the target's, and a draft's own (draft_placement: other)
                tasks.append((p, rep, nodes, v["tp"] // v["nodes"]))
    if not tasks:
        return
    work = Path(str(results.path.with_suffix("")) + ".slurm")
    work.mkdir(parents=True, exist_ok=True)
    plan = {"experiment": exp.to_dict(), "tasks": [
        {"point": p.index, "repeat": rep, "values": dict(p.values)} for p, rep, _, _ in tasks]}
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    nodes = max(t[2] for t in tasks)
    per = max(t[3] for t in tasks)
    argv = [f"--array=0-{len(tasks) - 1}", f"--job-name=sweep-{exp.name}", f"--nodes={nodes}",
            f"--gres=rdu:{per}", f"--output={work}/task-%a.out",
            f"--wrap={sys.executable} -m sn40l.sweep.slurm {work / 'plan.json'}"]
    client = _client(cluster)
    job = int(client.submit_argv(argv, env=dict(os.environ), cwd=os.getcwd())["job_id"])
    print(f"sn40l sweep: submitted array job {job} ({len(tasks)} tasks)", file=sys.stderr)
    states = _wait(client, job, len(tasks), args.quiet)
    for i, (p, rep, _, _) in enumerate(tasks):
        path = work / f"row-{i}.json"
        if path.exists():
            results.add(_row_from_file(path))
        else:
            out = work / f"task-{i}.out"
            tail = out.read_text()[-300:].strip() if out.exists() else ""
            results.add(make_row(exp, p, rep, Status.FAILED, {},
                                 f"array task {job}_{i} ended {states.get(i, '?')} without a "
                                 f"row{': ' + tail if tail else ''}"))


def _wait(client, job: int, n: int, quiet: bool) -> dict[int, str]:
    with progress(n, f"sweep via slurm (job {job})", quiet=quiet, unit="task") as bar:
        seen = 0
        while True:
            recs = client.call("show_job", job=str(job), all_tasks=True)
            states = {int(r.get("array_task_id") or 0): r["state"] for r in recs}
            ended = sum(s in FINAL for s in states.values())
            if ended > seen:
                bar.update(ended - seen)
                seen = ended
            if len(states) >= n and ended == len(states):
                return states
            time.sleep(0.2)


def _row_from_file(path: Path) -> Row:
    d = json.loads(path.read_text())
    return Row(d["experiment"], d["workload"], d["point"], d["repeat"], Status(d["status"]),
               tuple(map(tuple, d["params"])), tuple(map(tuple, d["metrics"])), d["reason"],
               d["wall_s"], d["key"])


def run_task(plan_path: str) -> int:
    """One array task: run its point on the job's sockets and write ``row-<task>.json``."""
    from sn40l.cluster.cluster import Cluster, ensure_ray
    from sn40l.sweep.run import _one_on

    plan = json.loads(Path(plan_path).read_text())
    i = int(os.environ["SLURM_ARRAY_TASK_ID"])
    task = plan["tasks"][i]
    exp = Experiment.from_mapping(plan["experiment"], where=plan_path)
    point = Point(task["point"], tuple(task["values"].items()))
    ensure_ray(os.environ["SN40L_RAY_ADDRESS"], auth=os.environ.get("SN40L_RAY_AUTH"))
    cluster = Cluster.connect(os.environ["SN40L_CLUSTER"])
    sockets = [int(r) for r in os.environ["SN40L_SOCKETS"].split(",")]
    # the job's capability on its leased sockets ('<job>:<token>'), as sn40l run presents it
    job = os.environ.get("SN40L_LEASE") or int(os.environ["SN40L_JOB_ID"])
    row = _one_on(exp, point, task["repeat"], cluster, sockets, job)
    d = {"experiment": row.experiment, "workload": row.workload, "point": row.point,
         "repeat": row.repeat, "status": str(row.status), "params": list(row.params),
         "metrics": list(row.metrics), "reason": row.reason, "wall_s": row.wall_s,
         "key": row.key}
    out = Path(plan_path).with_name(f"row-{i}.json")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(d))
    os.replace(tmp, out)
    print(f"point {point.index} repeat {task['repeat']}: {row.status} {row.reason}")
    return 0 if row.status is not Status.FAILED else 1


if __name__ == "__main__":
    try:
        sys.exit(run_task(sys.argv[1]))
    except (ConfigError, SchedulerError) as exc:
        print(f"sn40l sweep task: error: {exc}", file=sys.stderr)
        sys.exit(1)
