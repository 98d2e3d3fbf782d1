"""Running one point of an experiment on sockets: a model, a collective or a CoE.

Each runner takes the point's values, a cluster and the sockets to use, and returns the point's
modeled metrics (and raises :class:`Skip` when the point cannot run: TP larger than the
sockets, a model that does not fit, a shape the compiler refuses). Every modeled number comes
from the sockets' clocks; wall time is measured apart by the caller.

Time split of a model's decode step (``time_*_ms``, per output token): each kernel of the
compiled step costs ``launch + max(HBM streaming, compute)`` plus whatever collective time the
streaming did not hide. ``time_launch_ms`` sums the launches, ``time_hbm_ms`` the kernels bound
by HBM streaming, ``time_compute_ms`` those bound by compute, and ``time_collective_ms`` is
the rest of the measured step (the exposed collectives), so the four add up to the step.
``time_switch_ms`` is the CoE's expert-switch time (0 for a single model).

Speculative points (``draft`` set): the target runs plain greedy decoding first and then with
the draft proposing ``spec_tokens`` tokens per step (:class:`SpeculativeDecoder`; the draft on
the target's sockets, or with ``draft_placement: other`` on as many sockets of the nodes after
the target's, as ``sn40l run --draft-placement`` places it). The row's TTFT, time per
output token and tokens/s are the speculative run's; ``acceptance_rate`` and ``draft_ms`` are
what ``sn40l run --draft`` reports, and ``spec_speedup`` is the speculative tokens/s/user over
the plain run's on the same sockets. The decode-step split (``time_*_ms``) is left empty: a
speculative step is a draft pass plus a multi-token verify, not the compiled decode step.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import ray

from sn40l.cluster.types import DraftPlacement
from sn40l.errors import CapacityError, CompileError, ConfigError, OutOfDeviceMemory
from sn40l.sweep.types import CollectiveOp

METRICS = ("ttft_ms", "tpot_ms", "tokens_per_s_per_user", "tokens_per_s", "hbm_utilisation",
           "time_compute_ms", "time_hbm_ms", "time_collective_ms", "time_launch_ms",
           "time_switch_ms", "latency_ms", "router_ms", "expert_ms", "algbw_GBps",
           "busbw_GBps", "hit_rate", "acceptance_rate", "draft_ms", "spec_speedup")


class Skip(Exception):
    """This point cannot run; the message says why (it becomes a ``skipped`` row)."""


@dataclass(frozen=True)
class Placement:
    """Where a point runs: the cluster, the global ranks of its sockets, the job (if any)."""

    cluster: Any
    ranks: tuple[int, ...]
    job: "int | str | None" = None  # the job id, or its lease capability
    draft_ranks: tuple[int, ...] = ()  # a speculative point's draft sockets; () = ``ranks``


def draft_nodes(v: dict) -> int:
    """Nodes a model point's draft adds to the target's: with ``draft_placement: other`` the
    draft (compiled for the target's TP and nodes) takes the same sockets of as many nodes
    after the target's, as ``sn40l run --draft-placement other`` places it; else none."""
    other = v.get("draft") is not None and v.get("draft_placement") == DraftPlacement.OTHER
    return v["nodes"] if other else 0


def tp_ranks(tp: int, nodes: int, sockets_per_node: int) -> list[int]:
    """:func:`sn40l.cluster.attach.tp_ranks`, a Skip when the point cannot be placed."""
    from sn40l.cluster.attach import tp_ranks as ranks

    try:
        return ranks(tp, nodes, sockets_per_node)
    except ConfigError as exc:
        raise Skip(str(exc)) from None


# -- model -----------------------------------------------------------------------------------
class Compiled:
    """Artifacts by compile configuration, so repeats and re-runs compile once."""

    def __init__(self) -> None:
        self._arts: dict[tuple, Any] = {}

    def get(self, v: dict) -> Any:
        from sn40l.compiler import Artifact, CompileConfig, compile_model

        if str(v["model"]).endswith(".pef"):
            key: tuple = ("pef", v["model"])
            if key not in self._arts:
                self._arts[key] = Artifact.load(v["model"])
            art = self._arts[key]
            if art.tp != v["tp"]:
                raise Skip(f"{v['model']} is compiled for TP {art.tp}, not TP {v['tp']}")
            return art
        cfg = CompileConfig(v["model"], v["tp"], v["nodes"], "decode", v["batch"], v["seq_len"],
                            v["fusion"], v["orchestration"], v["profile"])
        if cfg not in self._arts:
            try:
                self._arts[cfg] = compile_model(cfg)
            except (CompileError, ConfigError) as exc:
                raise Skip(str(exc)) from None
        return self._arts[cfg]


def run_model(v: dict, where: Placement, compiled: Compiled, tag: str) -> dict:
    from sn40l.cluster.runner import ModelRunner

    art = compiled.get(v)
    vocab = int(art.plan["model"]["vocab"])
    seq = int(art.plan["config"]["seq_len"])
    if v["prompt_len"] + v["max_new_tokens"] > seq:
        raise Skip(f"prompt_len {v['prompt_len']} + max_new_tokens {v['max_new_tokens']} "
                   f"exceed the compiled seq_len {seq}")
    if v["max_new_tokens"] < 2:
        raise Skip("max_new_tokens must be >= 2 to time a decode step")
    if v.get("draft") is not None and v["batch"] != 1:
        raise Skip("speculative decoding runs batch 1 only")
    prompt = [1 + i % (vocab - 1) for i in range(v["prompt_len"])]
    runner = ModelRunner(where.cluster, list(where.ranks), art, weights=v["weights"],
                         job=where.job, tag=tag)
    try:
        runner.load()
    except (OutOfDeviceMemory, CapacityError) as exc:
        raise Skip(f"does not fit: {exc}") from None
    spec: dict = {}
    try:
        if v["batch"] == 1:
            res = runner.generate(prompt, v["max_new_tokens"])
            ttft = res.ttft_ns
            tpot = statistics.median(res.decode_ns)
            if v.get("draft") is not None:
                plain = res.tokens_per_s_per_user
                res = _speculative(v, where, compiled, art, runner, prompt, tag)
                ttft, tpot = res.ttft_ns, 1e9 / res.tokens_per_s_per_user
                spec = {"acceptance_rate": res.acceptance_rate, "draft_ms": res.draft_ns / 1e6,
                        "spec_speedup": res.tokens_per_s_per_user / plain}
        else:
            out = ray.get([where.cluster.socket(r).engine_generate_batch.remote(
                tag, [prompt] * v["batch"], v["max_new_tokens"], where.job)
                for r in where.ranks])
            ttft = out[0]["ttft_ns"]
            tpot = (max(o["end_ns"] for o in out) - out[0]["start_ns"] - ttft) / (
                v["max_new_tokens"] - 1)
    finally:
        runner.unload()
    profile = where.cluster.profile
    per_user = 1e9 / tpot
    passes = per_user if not spec else len(res.decode_ns) * 1e9 / sum(res.decode_ns)
    util = art.plan["estimate"]["hbm_bytes_per_step"] * passes / profile.tier("hbm").bandwidth
    return {"ttft_ms": ttft / 1e6, "tpot_ms": tpot / 1e6, "tokens_per_s_per_user": per_user,
            "tokens_per_s": per_user * v["batch"], "hbm_utilisation": util,
            **({} if spec else step_split(art.plan, profile, tpot)), "time_switch_ms": 0.0,
            **spec}


def _speculative(v: dict, where: Placement, compiled: Compiled, art, runner, prompt: list[int],
                 tag: str):
    """The point's speculative run: the draft compiled for the target's TP, nodes and
    context, loaded on its placement's sockets, proposing ``spec_tokens`` per step."""
    from sn40l.cluster.run_cli import check_pair, layer_skip_tensors
    from sn40l.cluster.runner import ModelRunner, SpeculativeDecoder

    draft_art = compiled.get({**v, "model": v["draft"]})
    try:
        check_pair(art, draft_art, v["weights"], v.get("spec_acceptance"))
        tensors = layer_skip_tensors(art, draft_art, v["weights"], 0)
        draft = ModelRunner(where.cluster, list(where.draft_ranks or where.ranks), draft_art,
                            weights=v["weights"], job=where.job, tag=f"{tag}-draft",
                            tensors=tensors)
        dec = SpeculativeDecoder(runner, draft, v["spec_tokens"], v.get("spec_acceptance"))
    except ConfigError as exc:
        raise Skip(str(exc)) from None
    try:
        draft.load()
    except (OutOfDeviceMemory, CapacityError) as exc:
        raise Skip(f"the draft does not fit next to the target: {exc}") from None
    try:
        return dec.generate(prompt, v["max_new_tokens"])
    finally:
        draft.unload()


def step_split(plan: dict, profile, step_ns: float) -> dict:
    """The decode step's launch / HBM / compute / exposed-collective split (module docstring)."""
    from sn40l.compiler.cost import compute_ns, hbm_ns, kernel_launch_ns
    from sn40l.compiler.types import FusionLevel, Orchestration

    fusion = FusionLevel.from_str(plan["config"]["fusion"])
    orch = Orchestration.from_str(plan["config"]["orchestration"])
    launch = hbm = comp = 0
    for k in plan["kernels"]:
        mem = hbm_ns(k["weight_bytes"] + k["kv_bytes"] + k["act_bytes"], profile, fusion)
        cmp_ = compute_ns(k["flops"], profile, fusion)
        launch += kernel_launch_ns(k, profile, orch)
        if mem >= cmp_:
            hbm += mem
        else:
            comp += cmp_
    coll = max(0.0, step_ns - launch - hbm - comp)
    return {"time_compute_ms": comp / 1e6, "time_hbm_ms": hbm / 1e6,
            "time_collective_ms": coll / 1e6, "time_launch_ms": launch / 1e6}


# -- collectives -----------------------------------------------------------------------------
BUS_FACTOR = {  # busbw = algbw x factor (nccl-tests' definitions)
    CollectiveOp.ALLREDUCE: lambda n: 2 * (n - 1) / n,
    CollectiveOp.REDUCE_SCATTER: lambda n: (n - 1) / n,
    CollectiveOp.ALLGATHER: lambda n: (n - 1) / n,
    CollectiveOp.BROADCAST: lambda n: 1.0,
}


def run_collective(v: dict, where: Placement, tag: str) -> dict:
    """``iters`` collectives of ``size`` bytes (fp32, phantom: modeled time only). AllReduce,
    ReduceScatter and Broadcast take ``size`` bytes per socket, AllGather gives ``size`` bytes
    (each socket contributes ``size / n``), as nccl-tests count them. Each iteration starts
    with every clock at the group's latest now; its time is until the last socket ends."""
    from sn40l.collectives import create_group, destroy_group

    op = CollectiveOp.from_str(v["op"])
    n = len(where.ranks)
    if n < 2:
        raise Skip(f"a collective needs at least 2 sockets; tp = {n}")
    if v["algorithm"] != "auto" and op is not CollectiveOp.ALLREDUCE:
        raise Skip(f"algorithm {v['algorithm']} applies to allreduce only")
    elems = max(1, v["size"] // 4 // (n if op is CollectiveOp.ALLGATHER else 1))
    tensor = {"shape": [elems], "dtype": "fp32", "data": None}
    handles = [where.cluster.socket(r) for r in where.ranks]
    create_group(where.cluster, list(where.ranks), tag)
    times = []
    try:
        for _ in range(v["iters"]):
            t0 = max(ray.get([h.now.remote() for h in handles]))
            ray.get([h.advance_to.remote(t0) for h in handles])
            if op is CollectiveOp.ALLREDUCE:
                refs = [h.allreduce.remote(tag, tensor, algo=v["algorithm"], job=where.job)
                        for h in handles]
            elif op is CollectiveOp.BROADCAST:
                refs = [h.broadcast.remote(tag, tensor, job=where.job) for h in handles]
            else:
                refs = [getattr(h, op.value).remote(tag, tensor, job=where.job)
                        for h in handles]
            times.append(max(r["end_ns"] for r in ray.get(refs)) - t0)
    finally:
        destroy_group(where.cluster, list(where.ranks), tag)
    t = statistics.median(times)
    algbw = v["size"] / (t * 1e-9) / 1e9
    return {"latency_ms": t / 1e6, "algbw_GBps": algbw, "busbw_GBps": algbw * BUS_FACTOR[op](n)}


# -- CoE ---------------------------------------------------------------------------------------
class CoEPool:
    """Loaded CoEs kept between points that share (profile, experts, expert model), so the
    batch / tokens / mode points of one CoE load it once."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._rt = None

    def runtime(self, key: tuple, where: Placement, coe):
        from sn40l.coe.runtime import CoERuntime

        key = (*key, where.ranks, where.job)
        if self._key != key or self._rt is None or self._rt.cluster is not where.cluster:
            self.close()
            spn = where.cluster.spec.sockets_per_node
            rt = CoERuntime(where.cluster, coe, nodes=sorted({r // spn for r in where.ranks}),
                            job=where.job)
            rt.load()
            self._key, self._rt = key, rt
        return self._rt

    def close(self) -> None:
        if self._rt is not None:
            self._rt.unload()
        self._key = self._rt = None


def coe_config(v: dict, serving: dict):
    from sn40l.coe.registry import synthetic

    return synthetic(v["experts"], v["model"], 8, router={"preset": "llama2-7b"},
                     serving=serving)


def coe_nodes(v: dict, serving: dict) -> int:
    from sn40l.coe.bench import nodes_needed
    from sn40l.hardware.profile import load_profile

    try:
        return nodes_needed(coe_config(v, serving), load_profile(v["profile"]))
    except (CapacityError, CompileError, ConfigError) as exc:
        raise Skip(str(exc)) from None


def coe_placement(cluster, node_ids: list[int], job: "int | str | None" = None) -> Placement:
    """Every socket of the nodes ``node_ids``: a CoE homes its experts on whole nodes."""
    spn = cluster.spec.sockets_per_node
    return Placement(cluster, tuple(n * spn + s for n in node_ids for s in range(spn)), job)


def run_coe(v: dict, where: Placement, serving: dict, pool: CoEPool) -> dict:
    """A CoE point on the whole nodes of ``where`` (see :func:`coe_placement`)."""
    from sn40l.coe.bench import measure, split_workload

    rt = pool.runtime((v["profile"], v["experts"], v["model"]), where, coe_config(v, serving))
    warm, batches = split_workload(v["experts"], v["batch"], v["warmup"], v["rounds"],
                                   v["prompt_len"], 0)
    m = measure(rt, warm, batches, v["max_new_tokens"], v["mode"])
    tokens = v["batch"] * v["max_new_tokens"]
    return {"latency_ms": m["latency_ms"], "time_switch_ms": m["switch_ms"],
            "hit_rate": m["hit_rate"], "tokens_per_s": tokens / (m["latency_ms"] / 1e3),
            "router_ms": m["router_ms"], "expert_ms": m["expert_ms"]}
