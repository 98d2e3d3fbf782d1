"""Running an experiment's points on warm clusters, one row per point and repeat.

Clusters: a point needs a cluster *shape* (profile, sockets per node) with at least the nodes
it uses. A running cluster the sweep attached to (``--cluster``, ``--address``, or the one
``sn40l cluster up`` started) serves every point of its shape. Points of another shape run on a
cluster the sweep starts for that shape, once, as large as the largest of those points needs;
points are ordered by shape so that each such cluster is started once and stopped when its
points are done (one private cluster at a time). Between points the sockets are reused: load,
run, unload, no Ray restart.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import ray

from sn40l.cluster.cluster import Cluster, ensure_ray
from sn40l.errors import ConfigError, SN40LError
from sn40l.progress import progress
from sn40l.sweep.experiment import SPEC_PARAMS, Experiment, Point
from sn40l.sweep.results import ResultFile, make_row
from sn40l.sweep.types import Status, WorkloadKind
from sn40l.sweep.workloads import (CoEPool, Compiled, Placement, Skip, coe_nodes, coe_placement,
                                   draft_nodes, run_coe, run_collective, run_model, tp_ranks)

log = logging.getLogger("sn40l.sweep")

Shape = tuple[str, int]  # (profile name, sockets per node)


class ClusterPool:
    """The attached cluster plus at most one cluster of another shape started here."""

    def __init__(self, attached: Cluster | None, announce: Callable[[Cluster, bool], None]):
        self.attached = attached
        self.announce = announce
        self.own: Cluster | None = None
        self._n = 0

    @staticmethod
    def shape_of(cluster: Cluster) -> Shape:
        return (cluster.profile.name, cluster.spec.sockets_per_node)

    def fits(self, cluster: Cluster | None, shape: Shape, nodes: int) -> bool:
        return cluster is not None and self.shape_of(cluster) == shape and \
            cluster.spec.nodes >= nodes

    def get(self, shape: Shape, nodes: int) -> Cluster:
        """A cluster of ``shape`` with at least ``nodes`` nodes (``nodes``: the most any point
        of this shape needs, so it is started once)."""
        if self.fits(self.attached, shape, nodes):
            return self.attached
        if self.fits(self.own, shape, nodes):
            return self.own
        self.close()
        ensure_ray(None)
        self._n += 1
        self.own = Cluster.start(nodes=nodes, sockets_per_node=shape[1], profile=shape[0],
                                 name=f"sweep-{os.getpid()}-{self._n}")
        self.announce(self.own, True)
        return self.own

    def close(self) -> None:
        if self.own is not None:
            self.own.stop()
            self.own = None


def check_runnable(exp: Experiment) -> None:
    """Refuse, before anything starts, settings no point of the grid can run: speculative
    settings without a draft, a draft without ``spec_tokens`` (as ``sn40l run`` refuses
    ``--spec-tokens`` without ``--draft`` and ``--draft`` without ``--spec-tokens``)."""
    given = {k: [x for x in v if x is not None] for k, v in exp.axes if k in SPEC_PARAMS}
    if given.get("draft"):
        if not given.get("spec_tokens"):
            raise ConfigError("axis draft needs spec_tokens (tokens drafted per step, >= 1)")
        return
    loose = [k for k in SPEC_PARAMS[1:] if given.get(k)]
    if loose:
        raise ConfigError(f"{', '.join(loose)} need{'s' if len(loose) == 1 else ''} a draft "
                          "model (axis draft): speculative decoding settings without a draft "
                          "would be ignored")


def _shape(v: dict) -> Shape:
    from sn40l.hardware.profile import load_profile

    try:
        prof = load_profile(v["profile"])
        spn = v.get("sockets_per_node") or prof.sockets_per_node
        return (prof.with_sockets_per_node(spn).name, spn)
    except ConfigError as exc:
        raise Skip(str(exc)) from None


def _serving(points: list[Point]) -> dict:
    return {"max_batch": max(p.get("batch") for p in points),
            "max_context": max(p.get("prompt_len") + p.get("max_new_tokens") for p in points)}


def _nodes(exp: Experiment, v: dict, serving: dict) -> int:
    if exp.workload is WorkloadKind.COE:
        return coe_nodes(v, serving)
    return v["nodes"] + draft_nodes(v)  # 0 but for a model point's draft on other sockets


def plan_points(exp: Experiment, points: list[Point], attached: Cluster | None
                ) -> tuple[list[tuple[Point, Shape | None, int, str]], dict[Shape, int]]:
    """Points in run order with their shape and nodes (or the reason they cannot run), and the
    most nodes each shape needs. Points the attached cluster serves come first."""
    serving = _serving(points) if exp.workload is WorkloadKind.COE else {}
    planned = []
    for p in points:
        v = p.as_dict
        try:
            shape = _shape(v)
            planned.append((p, shape, _nodes(exp, v, serving), ""))
        except Skip as exc:
            planned.append((p, None, 0, str(exc)))
    most: dict[Shape, int] = {}
    for _, shape, nodes, _ in planned:
        if shape is not None:
            most[shape] = max(most.get(shape, 0), nodes)
    first = ClusterPool.shape_of(attached) if attached is not None else None
    order = {s: i for i, s in enumerate(dict.fromkeys(
        [first] + [s for _, s, _, _ in planned if s is not None]))}
    planned.sort(key=lambda x: (order.get(x[1], -1), x[0].index))
    return planned, most


def run_sweep(exp: Experiment, results: ResultFile, attached: Cluster | None, *,
              quiet: bool = False, announce: Callable[[Cluster, bool], None] = lambda c, p: None
              ) -> ResultFile:
    """Run every (point, repeat) not already in ``results``; rows are written as they end."""
    check_runnable(exp)
    points = exp.points()
    planned, most = plan_points(exp, points, attached)
    done = results.done()
    todo = [(p, s, n, why, r) for p, s, n, why in planned for r in range(exp.repeats)
            if (p.key, r) not in done]
    pool = ClusterPool(attached, announce)
    compiled, coes = Compiled(), CoEPool()
    serving = _serving(points) if exp.workload is WorkloadKind.COE else {}
    axes = exp.swept or tuple(k for k, _ in exp.axes)
    try:
        with progress(len(todo), f"sweep {exp.name}", quiet=quiet, unit="point") as bar:
            for p, shape, nodes, why, rep in todo:
                bar.note(p.label(axes) + (f" #{rep}" if exp.repeats > 1 else ""))
                results.add(_one(exp, p, rep, shape, nodes, why, pool, compiled, coes,
                                 serving, most))
                bar.update()
    finally:
        coes.close()
        pool.close()
    return results


def _one(exp, p: Point, rep: int, shape, nodes: int, why: str, pool: ClusterPool,
         compiled: Compiled, coes: CoEPool, serving: dict, most: dict):
    if shape is None:
        return make_row(exp, p, rep, Status.SKIPPED, {}, why)
    v = p.as_dict

    def measure() -> dict:
        cluster = pool.get(shape, most[shape])
        if exp.workload is WorkloadKind.COE:
            return run_coe(v, coe_placement(cluster, list(range(nodes))), serving, coes)
        spn = cluster.spec.sockets_per_node
        ranks = tp_ranks(v["tp"], v["nodes"], spn)
        shift = v["nodes"] * spn  # the draft's own nodes follow the target's (draft_nodes)
        draft = [r + shift for r in ranks] if draft_nodes(v) else []
        return _run_tp(exp, v, Placement(cluster, tuple(ranks), draft_ranks=tuple(draft)),
                       compiled, p, rep)

    return _timed_row(exp, p, rep, measure)


def _one_on(exp, p: Point, rep: int, cluster: Cluster, sockets: list[int],
            job: "int | str"):
    """A point on the sockets a job holds (``--via-slurm`` tasks). A model or collective
    uses the first ``tp / nodes`` of the job's sockets on each of its first ``nodes`` nodes; a
    CoE the job's nodes, which it must hold whole (as the in-process sweep gives it nodes
    0..n-1 of its cluster, with the CoE sized for every point of the experiment)."""
    v = p.as_dict
    spn = cluster.spec.sockets_per_node
    by_node: dict[int, list[int]] = {}
    for r in sockets:
        by_node.setdefault(r // spn, []).append(r)

    def measure() -> dict:
        if exp.workload is WorkloadKind.COE:
            serving = _serving(exp.points())
            need = coe_nodes(v, serving)
            whole = [n for n in sorted(by_node) if len(by_node[n]) == spn]
            if len(whole) < need:
                raise Skip(f"the CoE needs {need} whole node(s) of {spn} sockets; the job's "
                           f"sockets {sockets} hold {len(whole)}")
            pool = CoEPool()
            try:
                return run_coe(v, coe_placement(cluster, whole[:need], job), serving, pool)
            finally:
                pool.close()
        per, extra = v["tp"] // v["nodes"], draft_nodes(v)
        picked = [r for n in sorted(by_node)[:v["nodes"] + extra] for r in by_node[n][:per]]
        if len(picked) != v["tp"] * (2 if extra else 1):  # the target's, then the draft's
            raise Skip(f"the job's sockets {sockets} hold no TP {v['tp']} over "
                       f"{v['nodes']} node(s)" + (" and its draft's" if extra else ""))
        where = Placement(cluster, tuple(picked[:v["tp"]]), job, tuple(picked[v["tp"]:]))
        return _run_tp(exp, v, where, Compiled(), p, rep)

    return _timed_row(exp, p, rep, measure)


def _run_tp(exp, v: dict, where: Placement, compiled: Compiled, p: Point, rep: int) -> dict:
    tag = f"sweep-{os.getpid()}-{p.index}-{rep}"
    if exp.workload is WorkloadKind.MODEL:
        return run_model(v, where, compiled, tag)
    return run_collective(v, where, tag)


def _timed_row(exp, p: Point, rep: int, measure: Callable[[], dict]):
    """Run ``measure`` into an ok row; a point that cannot run is a skipped row, an error
    a failed one (the sweep goes on)."""
    t0 = time.perf_counter()
    try:
        metrics = measure()
        return make_row(exp, p, rep, Status.OK, metrics, wall_s=time.perf_counter() - t0)
    except Skip as exc:
        return make_row(exp, p, rep, Status.SKIPPED, {}, str(exc), time.perf_counter() - t0)
    except (SN40LError, ray.exceptions.RayError) as exc:
        cause = getattr(exc, "cause", None) or exc
        status = Status.SKIPPED if _cannot_fit(cause) else Status.FAILED
        log.warning("point %d: %s: %s", p.index, status, cause)
        return make_row(exp, p, rep, status, {}, f"{type(cause).__name__}: {cause}",
                        time.perf_counter() - t0)


def _cannot_fit(exc: BaseException) -> bool:
    from sn40l.errors import CapacityError, OutOfDeviceMemory

    return isinstance(exc, (CapacityError, OutOfDeviceMemory))
