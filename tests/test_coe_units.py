"""CoE runtime pieces without Ray: registry validation, LRU cache, placement, capacity refusal
with numbers, footprint and router decisions. Oracles: published parameter counts, the shipped
profile YAML read directly, and hand-worked LRU sequences."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from sn40l.coe.cache import ExpertCache
from sn40l.coe.model import model_shape, tokenize
from sn40l.coe.placement import ExpertNeed, footprint, plan
from sn40l.coe.registry import load_registry, parse_registry, synthetic
from sn40l.coe.router import CentroidRouter
from sn40l.coe.sizing import coe_needs
from sn40l.errors import CapacityError, ConfigError
from sn40l.hardware.profile import load_profile

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
    assert model_shape("llama2-7b").params == 6_738_415_616
    assert model_shape("llama2-70b").params == 68_976_648_192


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
    r = CentroidRouter(cfg)
    prompts = ["what is the integral of this equation", "my python loop has a bug",
               "the defendant lost the appeal in court", "patient symptom and dose",
               "prove the theorem for the matrix"]
    assert r.decide(r.head(), prompts) == ["math", "code", "law", "medicine", "math"]
    assert tokenize("A b", 100) == tokenize("a B", 100)
