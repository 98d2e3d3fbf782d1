"""The CoE runtime on real socket actors: experts run by the sockets' tile engines give the
same tokens as each expert alone, the router model run on the sockets picks the expert, LRU
order is visible in HBM and in the sockets' own records, read-only weights are never copied
back, a too-large CoE is refused before any write, Samba-CoE scale in phantom with bounded host
memory, two nodes, the DGX host-memory baseline, and the bench CLI.

Oracles: an independent float64 numpy forward pass of each expert (tests/test_engine.py) and of
the router (:meth:`Router.reference`); modeled copy times from the shipped profile YAML read
directly (bytes / bandwidth + latency); per-socket sizes from the published model shapes;
hand-worked LRU sequences."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import pytest
import ray
import yaml
from test_engine import reference_generate

from sn40l.coe.model import tokenize
from sn40l.coe.registry import load_registry, parse_registry, synthetic
from sn40l.cluster.serve_ops import Run
from sn40l.coe.runtime import CoERuntime, ServeOptions
from sn40l.errors import CapacityError
from sn40l.socket.engine import random_weights

REPO = Path(__file__).resolve().parents[1]
TINY4 = REPO / "deploy" / "coe" / "tiny4.yaml"
GB = 10**9


def _yaml(profile: str) -> dict:
    text = resources.files("sn40l.hardware").joinpath(f"profiles/{profile}.yaml").read_text()
    return yaml.safe_load(text)


def _copy_ns(nbytes: int, gb_s: float, lat_ns: int) -> int:
    return lat_ns + math.ceil(nbytes / (gb_s * GB) * 1e9)


PROMPTS = {"math": "what is the integral of this equation",
           "code": "my python loop has a bug",
           "law": "the defendant lost the appeal in court",
           "medicine": "patient symptom and dose"}


def _reference(rt: CoERuntime, expert: str, prompt: str, n: int) -> list[int]:
    """The expert alone: float64 numpy forward of its full (unsharded) weights."""
    b = rt.builds[expert]
    tokens, _ = reference_generate(b.model, random_weights(b.model, b.seed),
                                   tokenize(prompt, b.model.vocab), n)
    return tokens


def _owned(cluster, ranks, prefix) -> int:
    return sum(1 for regs in cluster.call("regions", ranks=ranks) for r in regs
               if r["name"].startswith(prefix))


def test_tiny_coe_outputs_lru_and_copy_back(cluster2x8):
    cfg = load_registry(TINY4)  # cache.max_resident: 2
    rt = CoERuntime(cluster2x8, cfg, nodes=[0])
    rt.load()
    try:
        seq = ["math", "code", "law", "math", "medicine"]
        prompts = [PROMPTS[e] for e in seq]
        assert rt.router.reference(prompts) == seq  # the oracle of the socket router
        res = rt.serve(prompts, max_new_tokens=6)
        assert [r.expert for r in res.requests] == seq
        for e, r in zip(seq, res.requests):
            assert r.tokens == _reference(rt, e, PROMPTS[e], 6)
        assert [r.hit for r in res.requests] == [False] * 5  # every one was evicted or new
        # LRU, hand-worked with 2 slots: [math code] -> law evicts math -> math evicts code
        # -> medicine evicts law: [math medicine]
        assert rt.caches[0].resident() == ["math", "medicine"]
        assert all(sorted(v) == ["math", "medicine"] for v in rt.hbm_experts(0))
        assert rt.lru_on_sockets(0) == [["math", "medicine"]] * 8
        again = rt.serve([PROMPTS["math"]], 3)
        assert again.requests[0].hit and again.requests[0].switch_ns == 0
        assert rt.lru_on_sockets(0) == [["medicine", "math"]] * 8
        # bytes copied back: only the dirty KV caches of the 3 evicted experts, never weights.
        # tiny at TP8: 2 KV heads of 4 dims replicated, so 1 per socket: K,V x layers x batch
        # x context x 4 dims x bf16
        kv = 2 * 2 * 8 * 64 * 4 * 2
        weights = rt.builds["math"].segment_bytes("weight")
        assert rt.builds["math"].segment_bytes("kv") == kv
        assert res.copied_back == 3 * kv * 8  # with weights it would be 3 * (weights + kv) * 8
        assert res.copied_in == 5 * (weights + kv) * 8
        # modeled switch of the first miss: both segments as one descriptor chain
        raw = _yaml("sn40l")["copy"]["ddr_to_hbm"]
        assert (raw["bandwidth"]["value"], raw["latency"]["value"]) == ("125GB/s", "2us")
        assert res.requests[0].switch_ns == _copy_ns(weights + kv, 125, 2000)
        # the read-only DDR homes are untouched
        homes = {r["name"]: r for r in cluster2x8.call("regions", "ddr", ranks=[0])[0]}
        w = homes[f"coe/{cfg.name}/math/weights"]
        assert w["read_only"] and not w["dirty"] and w["nbytes"] == weights
        # grouping runs math's two prompts as one batch of two sequences: same tokens
        grouped = rt.serve([PROMPTS["code"], PROMPTS["math"], PROMPTS["code"]], 4,
                           ServeOptions(group_by_expert=True, prefetch=True))
        for r in grouped.requests:
            assert r.tokens == _reference(rt, r.expert, PROMPTS[r.expert], 4)
    finally:
        rt.unload()
    assert _owned(cluster2x8, range(8), rt.prefix) == 0


def test_sockets_agree_on_the_groups_latest_end_as_the_driver_did(cluster2x8):
    """A serving program's runs end where the group's latest socket ended, agreed among the
    sockets (no driver round trip, no modeled cost): the same times as asking every socket and
    moving them all to the latest end."""
    rt = CoERuntime(cluster2x8, load_registry(TINY4), nodes=[0])
    rt.load()
    try:
        ranks = list(range(8))
        hs = [cluster2x8.socket(r) for r in ranks]
        toks = rt.router.tokens(PROMPTS["law"])
        base = max(cluster2x8.call("now", ranks=ranks))
        cluster2x8.call("advance_to", base, ranks=ranks)
        # driven step by step: each socket runs the router, the driver joins the latest end
        ends = [x["end_ns"] for x in ray.get([h.engine_generate_batch.remote(
            rt.router_tag, [toks], 1) for h in hs])]
        assert len(set(ends)) > 1  # the collectives leave the ranks apart
        latest = max(ends)
        cluster2x8.call("advance_to", latest, ranks=ranks)
        # the same run as a program: the sockets agree on the latest end themselves
        run = Run(rt.router_tag, (tuple(toks),), 1, 8)
        done = ray.get([h.engine_chain.remote(rt._groups[0], latest, [run]) for h in hs])
        want = latest + (latest - base)
        assert [d[0].end_ns for d in done] == [want] * 8
        assert cluster2x8.call("now", ranks=ranks) == [want] * 8
        assert all(d[0].tokens == done[0][0].tokens for d in done)
    finally:
        rt.unload()


def test_a_coe_loaded_again_on_its_sockets_serves_in_the_same_modeled_time(cluster2x8):
    """The phantom steps one load ran replay in the next load on the same sockets (the record
    is kept by the group's members, not its name): the same batches from the same cache state
    take the same modeled times in both loads."""
    cfg = synthetic(4, "tiny", 8, name="again", serving={"max_batch": 8, "max_context": 64})
    prompts = [f"topic{i:03d}a topic{i:03d}b" for i in (0, 1, 0, 2, 3, 1)]
    splits = []
    for _ in range(2):
        rt = CoERuntime(cluster2x8, cfg, nodes=[0])
        rt.load()
        try:
            got = []
            for opts in (ServeOptions(), ServeOptions(group_by_expert=True, prefetch=True)):
                rt.reset()
                res = rt.serve(prompts, 3, opts)
                got.append((res.latency_ns, res.router_ns, res.switch_ns, res.expert_ns,
                            [(r.expert, r.hit, r.start_ns - res.start_ns, r.switch_ns,
                              r.expert_ns) for r in res.requests]))
            splits.append(got)
        finally:
            rt.unload()
    assert splits[0] == splits[1]
    assert all(lat > 0 and sw > 0 for lat, _, sw, _, _ in splits[0])  # misses after reset


def test_a_batch_routed_before_is_served_in_one_call_with_the_same_results(cluster2x8):
    """Prompts the router routed since load are served in one call per socket: the router runs
    again ahead of the items (replayed on the sockets) and the batch gives the same experts,
    tokens and modeled split as the first time from the same cache state. Other prompts run
    the router first; a prediction the sockets do not confirm is an error, not a result."""
    rt = CoERuntime(cluster2x8, load_registry(TINY4), nodes=[0])
    rt.load()
    try:
        prompts = [PROMPTS["law"], PROMPTS["math"], PROMPTS["law"]]

        def split(res):
            return (res.latency_ns, res.router_ns, res.switch_ns, res.expert_ns,
                    [(r.expert, r.hit, r.tokens, r.start_ns - res.start_ns, r.switch_ns,
                      r.expert_ns) for r in res.requests])

        first = rt.serve(prompts, 3)
        assert len(rt._routes) == 1
        rt.reset()
        again = rt.serve(prompts, 3)
        assert split(again) == split(first) and again.router_ns > 0
        for r in again.requests:
            assert r.tokens == _reference(rt, r.expert, prompts[r.index], 3)
        other = rt.serve([PROMPTS["code"]], 3)  # not routed before: the router runs first
        assert [r.expert for r in other.requests] == ["code"] and len(rt._routes) == 2
        key = next(iter(rt._routes))
        experts, took = rt._routes[key]
        rt._routes[key] = (experts, took + 1)
        with pytest.raises(RuntimeError, match="routed before"):
            rt.serve(prompts, 3)
    finally:
        rt.unload()


def test_a_cluster_reset_to_another_profile_models_as_a_fresh_one(make_cluster):
    """Cluster.reprofile (the bench's one set of actors for all profiles) keeps the actors but
    gives fresh sockets of the new profile: the same CoE load and batch give the same modeled
    times, from the same clocks, as on a cluster started with that profile. A socket that
    still holds a model refuses the reset."""
    cfg = synthetic(4, "tiny", 8, name="reprof", serving={"max_batch": 8, "max_context": 64})
    prompts = [f"topic{i:03d}a topic{i:03d}b" for i in (0, 1, 0, 2)]

    def run(cluster):
        rt = CoERuntime(cluster, cfg, nodes=[0])
        rt.load()
        try:
            res = rt.serve(prompts, 3)
            return [(r.expert, r.hit, r.start_ns, r.switch_ns, r.expert_ns, r.end_ns)
                    for r in res.requests]
        finally:
            rt.unload()

    fresh = run(make_cluster(profile="dgx-h100"))
    reused = make_cluster(profile="sn40l")
    run(reused)  # leaves clocks, traces, compiled plans and replay records behind
    rt = CoERuntime(reused, cfg, nodes=[0])
    rt.load()
    with pytest.raises(Exception, match="still holds models"):
        reused.reprofile("dgx-h100")
    rt.unload()
    reused.reprofile("dgx-h100")
    assert reused.profile.name == "dgx-h100"
    assert reused.call("now", ranks=range(8)) == [0] * 8
    assert run(reused) == fresh


def test_too_large_coe_is_refused_before_anything_is_written(cluster2x8):
    before = [len(r) for r in cluster2x8.call("regions", ranks=range(8))]
    cfg = synthetic(200, "llama2-70b", 8, name="toolarge")
    rt = CoERuntime(cluster2x8, cfg, nodes=[0])
    with pytest.raises(CapacityError, match=r"DDR: needs [\d.]+ TiB .* has 12\.0 TiB"):
        rt.load()
    assert [len(r) for r in cluster2x8.call("regions", ranks=range(8))] == before


def test_samba_coe_150_phantom_7b_experts_on_one_node(cluster2x8):
    ranks = cluster2x8.node_ranks(0)
    rss0 = sum(p["rss"] for p in cluster2x8.call("ping", ranks=ranks))
    cfg = synthetic(150, "llama2-7b", 8, name="samba150", router={"preset": "llama2-7b"})
    rt = CoERuntime(cluster2x8, cfg, nodes=[0])
    rt.load()
    try:
        assert 150 * rt.builds["expert000"].model.params > 10**12  # a trillion parameters
        picks = [3, 77, 3, 149, 12, 77, 0, 5]
        res = rt.serve([f"topic{i:03d}a topic{i:03d}b topic{i:03d}c" for i in picks], 4)
        assert [r.expert for r in res.requests] == [f"expert{i:03d}" for i in picks]
        assert [r.hit for r in res.requests] == [False, False, True, False, False, True,
                                                 False, False]
        # per socket at TP8 (Llama-2-7B shapes): 32 layers of q,k,v,o (4096 x 512 each),
        # gate/up/down (4096 x 1376 each, 11008 / 8), two norms; embedding and LM head over
        # 32000 / 8 tokens; the final norm. KV: K,V x 32 layers x 8 x 512 x 512 dims.
        layer = 4 * 4096 * 512 + 3 * 4096 * 1376 + 2 * 4096
        w_bytes = 2 * (32 * layer + 2 * 4000 * 4096 + 4096)
        kv_bytes = 2 * 32 * 8 * 512 * 512 * 2
        first = res.requests[0]
        assert first.switch_ns == _copy_ns(w_bytes + kv_bytes, 125, 2000)
        # the sequential baseline on one group: router + switches + experts, nothing else
        assert res.latency_ns == res.router_ns + res.switch_ns + res.expert_ns
        # decode is HBM-bound: each expert run streams its weights once per token at most at
        # 85% of 1.8 TB/s (profile), so 4 tokens take longer than 4 such streams
        assert min(r.expert_ns for r in res.requests) > 4 * w_bytes / (1.8e12 * 0.85) * 1e9
        st = cluster2x8.call("stats", ranks=ranks[:1])[0]["tiers"]
        assert st["ddr"]["used"] >= 150 * (w_bytes + kv_bytes)
        rss1 = sum(p["rss"] for p in cluster2x8.call("ping", ranks=ranks))
        assert rss1 - rss0 < 500 * 2**20, f"actors grew by {(rss1 - rss0) / 2**20:.0f} MiB"
    finally:
        rt.unload()
    assert _owned(cluster2x8, ranks, rt.prefix) == 0


def test_prefetch_and_grouping_beat_the_sequential_baseline(cluster2x8):
    cfg = synthetic(10, "llama2-7b", 8, name="opt10")
    rt = CoERuntime(cluster2x8, cfg, nodes=[0])
    rt.load()
    try:
        prompts = [f"topic{i:03d}a topic{i:03d}b" for i in [1, 2, 1, 3, 2, 4, 1, 5]]
        seq = rt.serve(prompts, 32)  # 32 tokens run longer than one 7B copy (~15.6 ms)
        rt.reset()
        assert rt.caches[0].resident() == []
        opt = rt.serve(prompts, 32, ServeOptions(group_by_expert=True, prefetch=True))
        assert [r.expert for r in opt.requests] == [r.expert for r in seq.requests]
        assert opt.latency_ns < seq.latency_ns
        # only the first expert's copy is exposed; the rest overlap the previous expert's run
        first = min(opt.requests, key=lambda r: r.start_ns)
        assert opt.switch_ns == first.switch_ns
    finally:
        rt.unload()


def test_two_nodes_each_request_served_where_its_expert_lives(cluster2x8):
    raw = yaml.safe_load(TINY4.read_text())
    raw["name"] = "tiny4x2"
    raw["cache"] = {"pin": ["math"]}
    cfg = parse_registry(raw)
    rt = CoERuntime(cluster2x8, cfg)
    rt.load()
    try:
        plan = rt.plan()
        (math_gid,) = plan.homes["math"]
        assert rt.hbm_experts(math_gid)[0] == ["math"]  # pinned: resident from load on
        nodes_of = {e: {plan.groups[g].node for g in gids} for e, gids in plan.homes.items()}
        assert {n for ns in nodes_of.values() for n in ns} == {0, 1}
        seq = ["law", "math", "code", "medicine", "math"]
        res = rt.serve([PROMPTS[e] for e in seq], 4)
        for e, r in zip(seq, res.requests):
            assert r.expert == e and {r.node} == nodes_of[e]
            assert r.tokens == _reference(rt, e, PROMPTS[e], 4)
            assert r.hit == (e == "math")
        for g in plan.groups:
            held = set(plan.experts_on(g.gid))
            for view in rt.hbm_experts(g.gid):
                assert set(view) == held & set(seq)
        # work on the two nodes overlaps in modeled time
        assert res.latency_ns < res.router_ns + res.switch_ns + res.expert_ns
    finally:
        rt.unload()
    assert _owned(cluster2x8, range(16), rt.prefix) == 0


def test_dgx_baseline_keeps_experts_in_host_memory_and_switches_over_the_host_link(
        make_cluster):
    cluster = make_cluster(profile="dgx-h100")
    cfg = synthetic(4, "llama2-7b", 8, name="dgx4")
    rt = CoERuntime(cluster, cfg)
    rt.load()
    res = rt.serve(["topic002a topic002b", "topic002a"], 2)
    host = _yaml("dgx-h100")["links"]["host"]
    # the paper's 64 GB/s host-to-GPU bandwidth of the node, 1/8 per GPU when all 8 load
    assert (host["bandwidth"]["value"], host["latency"]["value"]) == ("8GB/s", "2us")
    b = rt.builds["expert002"]
    w, kv = b.segment_bytes("weight"), b.segment_bytes("kv")
    assert res.requests[0].switch_ns == _copy_ns(w + kv, 8, 2000)
    assert res.requests[1].hit
    st = cluster.call("stats", ranks=[0])[0]["tiers"]
    assert st["ddr"]["capacity"] == 0 and st["ddr"]["used"] == 0
    assert st["host"]["capacity"] == 2 * 10**12 // 8  # DGX H100: 2 TB host memory, 8 GPUs
    assert st["host"]["used"] >= 4 * (w + kv)


def test_bench_cli_json_and_progress(ray_session, capsys):
    from sn40l.cli import main

    rc = main(["coe", "bench", "--experts", "4", "--batch", "2", "--tokens", "3",
               "--profiles", "sn40l", "--rounds", "2", "--warmup", "1", "--router", "none",
               "--json"])
    out = capsys.readouterr()
    assert rc == 0
    assert "[2/2]" in out.err  # progress while running
    data = json.loads(out.out)
    assert [r["mode"] for r in data["rows"]] == ["sequential", "group+prefetch"]
    for r in data["rows"]:
        assert r["misrouted"] == 0 and r["nodes"] == 1
        assert r["latency_ms"] == pytest.approx(r["router_ms"] + r["switch_ms"] + r["expert_ms"])
    assert data["footprint"][0]["nodes_needed_home"] == 1
    rc = main(["coe", "bench", "--experts", "x"])
    assert rc == 1 and "--experts" in capsys.readouterr().err


def test_show_cli_and_demo_section(cluster2x8, capsys):
    from sn40l.cli import main
    from sn40l.coe import demo_section

    assert main(["coe", "show", str(TINY4), "--nodes", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert sorted(len(v) for v in shown["homes"].values()) == [1, 1, 1, 1]
    assert {g for v in shown["homes"].values() for g in v} == {0, 1}

    class Report:  # the shape of sn40l.demo.DemoReport
        ok = True
        rows: list = []

        def add(self, *row):
            self.rows.append(row)

    report = Report()
    rows = demo_section(cluster2x8, report)
    assert report.ok and rows == report.rows and len(rows) == 5
    assert "outputs equal each expert run alone: True" in rows[0][1]
    assert _owned(cluster2x8, range(16), "coe/demo-") == 0
