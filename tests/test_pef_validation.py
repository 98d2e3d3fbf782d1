"""Crafted .pef artifacts (valid checksum, wrong content) are refused before they cost
anything: every error names the field path and what was expected, memory stays bounded.

Pure: the compiler and its validation, no Ray. The artifacts are built the way an attacker
would: take a real plan, change it, pack it as msgpack with a correct header and checksum.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import tracemalloc

import msgpack
import pytest

from sn40l.compiler import Artifact, CompileConfig, ModelConfig, compile_model
from sn40l.compiler.pef import MAGIC, VERSION
from sn40l.compiler.plan import compile_plan
from sn40l.compiler.validate import MAX_MATERIALIZED_BYTES, check_load
from sn40l.errors import CapacityError, CompileError


def _pef(payload: bytes) -> bytes:
    return struct.pack(">8sI32s", MAGIC, VERSION, hashlib.sha256(payload).digest()) + payload


def _crafted(change) -> bytes:
    plan = copy.deepcopy(_TINY)
    change(plan)
    return _pef(msgpack.packb(plan, use_bin_type=True))


_TINY = compile_model(CompileConfig("tiny", tp=8, seq_len=64)).plan


def _set(path: str, value):
    """A change that sets ``plan[path]`` (dotted, with [i] for list items)."""
    def change(plan):
        keys = path.replace("[", ".").replace("]", "").split(".")
        node = plan
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


CASES = [  # (change, words the error must contain)
    (_set("model.vocab", 400000), ["shards.vocab", "expected 50000", "got whole number 13"]),
    (_set("model.layers", 10**9), ["model.layers", "1000000000 is out of range", "1 to 1024"]),
    (_set("model.hidden", 2**40), ["model.hidden", "out of range"]),
    (_set("model.layers", "2"), ["model.layers", "expected a whole number", "'2'"]),
    (_set("model.layers", True), ["model.layers", "expected a whole number"]),
    (_set("model.rope_theta", float("inf")), ["model.rope_theta", "finite number"]),
    (_set("model.rope_scaling", 5), ["model.rope_scaling", "expected"]),
    (_set("model.rope_scaling.factor", "x"), ["model.rope_scaling.factor", "finite number"]),
    (_set("model.heads", 7), ["model", "heads 7 is not a multiple"]),
    (_set("model.evil", 1), ["model", "unknown field(s) ['evil']"]),
    (_set("config.tp", 8.5), ["config.tp", "expected a whole number"]),
    (_set("config.tp", 4), ["shards.heads", "expected 4"]),
    (_set("config.fusion", "magic"), ["config", "magic"]),
    (_set("config.batch", 0), ["config.batch", "out of range"]),
    (_set("config", [1, 2]), ["config", "expected a map of CompileConfig"]),
    (_set("evil", {"x": 1}), ["unknown field(s) ['evil']"]),
    (_set("kernels", "none"), ["kernels", "expected a list of 4 items"]),
    (_set("kernels[1].flops", -1), ["kernels[1].flops", "expected"]),
    (_set("memory.symbols[0].shape", [13, "a"]), ["memory.symbols[0].shape[1]", "expected 64"]),
    (_set("memory.symbols[0].tier", "sram"), ["memory.symbols[0].tier", "expected 'hbm'"]),
    (_set("memory.hbm_bytes", 1), ["memory.hbm_bytes", "expected"]),
    (_set("memory.symbols[2].secret", 1), ["memory.symbols[2]", "unknown field(s) ['secret']"]),
    (_set("estimate.step_ns", 1), ["estimate.step_ns", "expected"]),
    (_set("checkpoint", 7), ["checkpoint", "nil or a string"]),
    (lambda plan: plan.pop("shards"), ["shards: missing"]),
    (lambda plan: plan["model"].pop("vocab"), ["model.vocab: missing"]),
]


@pytest.mark.parametrize("change,words", CASES, ids=[w[0] for _, w in CASES])
def test_crafted_artifact_names_the_field(change, words):
    data = _crafted(change)
    with pytest.raises(CompileError) as info:
        Artifact.from_bytes(data, origin="x.pef")
    msg = str(info.value)
    assert msg.startswith("x.pef: ") and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_deep_nesting_and_huge_claims_are_refused_with_a_message():
    deep: list = [1]
    for _ in range(20):
        deep = [deep]
    cases = {
        "deep payload": _pef(b"\x91" * 100_000 + b"\x90"),       # [[[...]]] 100k deep
        "deep field": _crafted(_set("model.name", deep)),
        "4 GiB string": _pef(b"\xdb\xff\xff\xff\xff" + b"x" * 100),  # str32 header claims 4 GiB
        "2^31-item list": _pef(b"\xdd\x7f\xff\xff\xff"),           # array32 header
        "not a map": _pef(msgpack.packb(5)),
        "garbage": _pef(b"\xc1\xc1\xc1"),
    }
    for what, data in cases.items():
        with pytest.raises(CompileError) as info:
            Artifact.from_bytes(data, origin="x.pef")
        msg = str(info.value)
        assert msg.startswith("x.pef: ") and len(msg) > len("x.pef: ") + 10, (what, msg)
        assert "()" not in msg, (what, msg)


def test_a_consistent_huge_model_is_refused_before_weights_exist():
    """vocab 400000 on tiny's other shapes compiles to a self-consistent artifact: it passes
    validation, and loading it with materialized weights is refused by the host-memory limit
    without allocating (the issue's 2.8 KB .pef grew the sockets by 2.8 GiB)."""
    big = ModelConfig("tiny-bigvocab", 2, 64, 16, 2, 96, 4_000_000, max_position=256)
    data = Artifact(compile_plan(CompileConfig("tiny-bigvocab", tp=8, seq_len=64), big)).to_bytes()
    assert len(data) < 4000
    tracemalloc.start()
    try:
        art = Artifact.from_bytes(data)
        check_load(art.plan, "phantom")  # shapes only: fine
        with pytest.raises(CapacityError) as info:
            check_load(art.plan, "random")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "host memory per socket" in str(info.value) and "--weights phantom" in str(info.value)
    assert peak < MAX_MATERIALIZED_BYTES // 100  # the check costs metadata, not weights


def test_an_artifact_larger_than_hbm_and_ddr_is_refused_by_capacity():
    plan = compile_model(CompileConfig("llama3.1-405b", tp=8, seq_len=131072, batch=1024)).plan
    with pytest.raises(CapacityError) as info:
        check_load(plan, "phantom")
    assert "of HBM per socket" in str(info.value) or "of DDR per socket" in str(info.value)


def test_every_real_preset_round_trips():
    for model, tp, nodes in (("tiny", 2, 1), ("tiny-mha", 4, 1), ("llama2-7b", 8, 1),
                             ("llama3.1-405b", 16, 2)):
        art = compile_model(CompileConfig(model, tp=tp, nodes=nodes, seq_len=128))
        assert Artifact.from_bytes(art.to_bytes()).plan == art.plan
