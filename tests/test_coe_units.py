"""CoE runtime pieces without Ray: registry validation, LRU cache, placement, capacity refusal
with numbers, footprint, the router model's weights and decisions, plan segments, and the
socket's segment copies and host tier. Oracles: published parameter counts, the shipped
profile YAML read directly, and hand-worked LRU sequences."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

import numpy as np

from sn40l.coe.cache import ExpertCache
from sn40l.coe.model import build_experts, tokenize
from sn40l.coe.placement import ExpertNeed, footprint, plan
from sn40l.coe.registry import load_registry, parse_registry, synthetic
from sn40l.coe.router import Router
from sn40l.coe.sizing import coe_needs
from sn40l.compiler import CompileConfig, compile_model, preset
from sn40l.compiler.plan import segments
from sn40l.errors import CapacityError, ConfigError, OutOfDeviceMemory, RegionError
from sn40l.hardware.profile import load_profile
from sn40l.socket.device import Socket, SocketId
from sn40l.socket.tensor import Tensor
from sn40l.socket.types import Tier

REPO = Path(__file__).resolve().parents[1]
TINY4 = REPO / "deploy" / "coe" / "tiny4.yaml"
RAW = yaml.safe_load(resources.files("sn40l.hardware").joinpath("profiles/sn40l.yaml").read_text())
TIB = 2**40


def _raw(**over):
    base = {"name": "t", "weights": "random",
            "experts": [{"name": "a", "preset": "tiny", "tp": 8, "domain": "x y"},
                        {"name": "b", "preset": "tiny", "tp": 8, "domain": "z w"}]}
    base.update(over)
    return base


def test_published_parameter_counts():
    # Llama 2 paper / HF model cards: 6,738,415,616 and 68,976,648,192 parameters.
    assert preset("llama2-7b").params == 6_738_415_616
    assert preset("llama2-70b").params == 68_976_648_192


@pytest.mark.parametrize("change,key", [
    ({"experts": [{"name": "a", "preset": "tiny", "tp": 8, "domain": "x"},
                  {"name": "b", "preset": "tiny", "tp": 4, "domain": "y"}]}, "experts[1].tp"),
    ({"experts": [{"name": "a", "preset": "tiny", "tp": 8, "domain": "x", "colour": 1}]},
     "experts[0].colour"),
    ({"experts": [{"name": "a", "preset": "tiny", "pef": "x.pef", "tp": 8, "domain": "x"}]},
     "experts[0] names 2 model sources"),
    ({"experts": [{"name": "a", "preset": "tiny", "tp": 8, "domain": "x"},
                  {"name": "a", "preset": "tiny", "tp": 8, "domain": "y"}]}, "experts[1].name"),
    ({"cache": {"pin": ["nope"]}}, "cache.pin[0]"),
    ({"placement": "random"}, "spread, pack, replicate-hot"),
    ({"weights": "fp8"}, "random, phantom"),
    ({"serving": {"max_batch": 0}}, "serving.max_batch"),
])
def test_registry_errors_name_the_key(change, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_registry(_raw(**change))


def test_example_registry_loads():
    cfg = load_registry(TINY4)
    assert [e.name for e in cfg.experts] == ["math", "code", "law", "medicine"]
    assert cfg.tp == 8 and cfg.cache.max_resident == 2


def test_lru_order_and_pins():
    c = ExpertCache(budget=100, max_resident=3)
    c.admit("p", 10, pin=True)
    seen = []
    for name in ["a", "b", "a", "c", "d", "b"]:
        if not c.touch(name):
            for v in c.plan_admit(name, 10):
                c.evict(v)
                seen.append(v)
            c.admit(name, 10)
    # hand-worked, LRU first: [p* a] -> [p* a b] -> a hit [p* b a] -> c evicts b [p* a c]
    # -> d evicts a [p* c d] -> b evicts c [p* d b]
    assert seen == ["b", "a", "c"]
    assert c.resident() == ["p", "d", "b"]
    assert (c.hits, c.misses) == (1, 5)
    with pytest.raises(CapacityError):
        ExpertCache(budget=15).plan_admit("big", 20)


def test_spread_pack_and_replicate_hot():
    prof = load_profile("sn40l")
    needs = [ExpertNeed(f"e{i}", 10 * 2**30, 0, hot=(i == 0)) for i in range(6)]
    sp = plan(needs, prof, 2, 8, 0, "spread")
    assert sorted(len(sp.experts_on(g)) for g in (0, 1)) == [3, 3]
    pk = plan(needs, prof, 2, 8, 0, "pack")
    assert len(pk.experts_on(0)) == 6 and pk.experts_on(1) == []
    hot = plan(needs, prof, 2, 8, 0, "replicate-hot")
    assert sorted(hot.homes["e0"]) == [0, 1]
    assert [len(v) for k, v in hot.homes.items() if k != "e0"] == [1] * 5


def test_too_large_coe_is_refused_with_numbers_per_tier():
    cfg = synthetic(100, "llama2-70b", 8, serving={"max_batch": 1, "max_context": 1})
    needs, router = coe_needs(cfg)
    with pytest.raises(CapacityError) as exc:
        plan(needs, load_profile("sn40l"), 1, 8, router)
    msg = str(exc.value)
    ddr_node = 8 * 1.5 * TIB  # profile: 1.5 TiB DDR per socket, 8 sockets
    assert RAW["memory"]["ddr"]["capacity"]["value"] == "1.5TiB"
    assert f"has {ddr_node / TIB:.1f} TiB" in msg
    need_tib = float(re.search(r"DDR: needs ([\d.]+) TiB", msg).group(1))
    assert need_tib == pytest.approx(100 * 68_976_648_192 * 2 / TIB, rel=0.01)
    # HBM: a 70B expert on one socket (TP1) cannot be resident in 64 GiB
    cfg1 = synthetic(1, "llama2-70b", 1, serving={"max_batch": 1, "max_context": 1})
    with pytest.raises(CapacityError, match=r"HBM: needs 128\.5 GiB per socket .* has 64\.0 GiB"):
        plan(*[coe_needs(cfg1)[0]], load_profile("sn40l"), 1, 1, 0)


def test_footprint_arithmetic():
    need = ExpertNeed("x", 6_738_415_616 * 2 // 8, 0)
    f = footprint(load_profile("sn40l"), need, 8, 150)
    per_socket = -(-(6_738_415_616 * 2 // 8) // 256) * 256
    assert f["experts_per_node_home"] == int(1.5 * TIB) // per_socket  # one TP8 group per node
    assert f["nodes_needed_home"] == 1
    h = footprint(load_profile("dgx-h100"), need, 8, 150)
    assert h["experts_per_node_hbm"] == 80 * 10**9 // per_socket      # 80 GB HBM per GPU
    assert h["nodes_needed_hbm"] == -(-150 // h["experts_per_node_hbm"])


def test_router_sends_domain_prompts_to_their_expert():
    cfg = load_registry(TINY4)
    r = Router(cfg)
    prompts = ["what is the integral of this equation", "my python loop has a bug",
               "the defendant lost the appeal in court", "patient symptom and dose",
               "prove the theorem for the matrix"]
    assert r.reference(prompts) == ["math", "code", "law", "medicine", "math"]
    assert tokenize("A b", 100) == tokenize("a B", 100)
    # the documented weights: uniform attention (q = k = 0), identity value path, a zero MLP,
    # and an LM head whose only winning columns are the 4 experts' centroids
    w = r.weights
    assert not w["layers.0.wq"].any() and not w["layers.0.wk"].any()
    assert not w["layers.0.w_down"].any() and (w["embed"][:, 0] == 1).all()
    assert np.allclose(np.linalg.norm(w["lm_head"][:, :4], axis=0), 1.0)
    assert (w["lm_head"][0, 4:] < -1000).all() and not w["lm_head"][1:, 4:].any()
    art = r.artifact.plan
    assert art["model"]["layers"] == 1 and art["config"]["tp"] == 8
    with pytest.raises(ConfigError, match="router.vocab = 3 must exceed the 4 experts"):
        Router(parse_registry({**yaml.safe_load(TINY4.read_text()), "router": {"vocab": 3}}))


def test_segments_pack_the_memory_plan_by_kind():
    art = compile_model(CompileConfig("tiny", tp=8, batch=8, seq_len=64))
    mem = art.plan["memory"]
    segs = {s["name"]: s for s in segments(mem)}
    for name, kind in (("weights", "weight"), ("kv", "kv"), ("activations", "activation")):
        syms = [x for x in mem["symbols"] if x["kind"] == kind]
        assert segs[name]["bytes"] == sum(x["bytes"] for x in syms)
        offsets = [segs[name]["symbols"][x["name"]][0] for x in syms]
        sizes = [x["bytes"] // (4 if kind == "activation" else 2) for x in syms]
        assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]  # contiguous, in order
    assert segs["weights"]["read_only"] and not segs["kv"]["read_only"]


def test_experts_compile_once_per_source_and_random_weights_are_bounded():
    cfg = synthetic(3, "tiny", 8, weights="random", serving={"max_batch": 2, "max_context": 16})
    builds = build_experts(cfg, "sn40l")
    assert len({id(b.artifact) for b in builds.values()}) == 1
    assert len({b.seed for b in builds.values()}) == 3
    with pytest.raises(ConfigError, match="at most 50,000,000 are allowed"):
        build_experts(synthetic(1, "llama2-7b", 8, weights="random"), "sn40l")


def test_socket_copies_segments_as_one_chain_and_has_a_host_tier():
    prof = load_profile("dgx-h100")
    s = Socket(SocketId("t", 0, 0, 8), prof)
    assert s.tiers[Tier.HOST].capacity == 2 * 10**12 // 8  # 2 TB host memory, 8 GPUs
    s.place("a", "host", Tensor.of(np.arange(1000, dtype=np.float32), "bf16"), read_only=True)
    s.place("b", "host", Tensor.of(np.zeros(500, np.float32), "bf16"))
    n, start, end = s.copy_segments([("a", "a@hbm"), ("b", "b@hbm")], "hbm")
    assert n == 3000 and end - start == 2000 + math.ceil(3000 / 8e9 * 1e9)  # 64 GB/s / 8 GPUs
    assert s.region("a@hbm").read_only and (s.region("a@hbm").tensor.data == np.arange(1000)).all()
    s.region("b@hbm").tensor.data[:] = 7
    s.mark_dirty("b@hbm")
    s.copy_segments([("b@hbm", "b")], "host")  # over the existing home, in place
    assert (s.region("b").tensor.data == 7).all() and not s.region("b").dirty
    with pytest.raises(RegionError, match="read-only"):
        s.copy_segments([("a@hbm", "a")], "host")
    big = Tensor.phantom((prof.tier("hbm").capacity,), "bf16")
    s.place("big", "host", big)
    used = s.tiers[Tier.HBM].used
    with pytest.raises(OutOfDeviceMemory):
        s.copy_segments([("b", "b2@hbm"), ("big", "big@hbm")], "hbm")
    assert "b2@hbm" not in s and s.tiers[Tier.HBM].used == used  # rolled back
