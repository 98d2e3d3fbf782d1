"""Compiler (pure): published parameter counts, TP sharding, kernels per fusion level, memory
plan and spill order, the .pef format and its refusals, and the cost model's figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sn40l.compiler import Artifact, CompileConfig, compile_model, preset
from sn40l.compiler.plan import memory_plan, shard_shapes
from sn40l.errors import CompileError, ConfigError
from sn40l.hardware import load_profile


@pytest.mark.parametrize("name,params", [
    ("llama2-7b", 6_738_415_616), ("llama2-70b", 68_976_648_192),
    ("llama3.1-8b", 8_030_261_248), ("llama3.1-70b", 70_553_706_496),
    ("llama3.1-405b", 405_853_388_800), ("mistral-7b", 7_241_732_096),
])
def test_presets_have_the_published_parameter_counts(name, params):
    assert preset(name).params == params


def test_sharding_replicates_kv_heads_and_pads_the_vocabulary():
    s = shard_shapes(preset("tiny"), 8)  # 16 heads, 2 KV heads, vocab 97
    assert s["heads"] == 2 and s["kv_heads"] == 1 and s["kv_replication"] == 4
    assert s["vocab"] == 13 and s["vocab_padded"] == 104
    s16 = shard_shapes(preset("llama3.1-8b"), 16)
    assert s16["kv_heads"] == 1 and s16["kv_replication"] == 2 and s16["intermediate"] == 896


def test_weights_per_socket_sum_to_the_model_with_replication_and_padding():
    m = preset("llama2-7b")  # MHA, vocab 32000 and MLP 11008 divisible by 8: no padding
    art = compile_model(CompileConfig("llama2-7b", tp=8, seq_len=1024))
    weights = sum(s["bytes"] for s in art.plan["memory"]["symbols"] if s["kind"] == "weight")
    replicated_norms = m.layers * 2 * m.hidden + m.hidden  # RMSNorm weights on every socket
    assert 8 * weights == 2 * (m.params + 7 * replicated_norms)


def test_fused_has_a_kernel_per_layer_and_unfused_one_per_operator():
    fused = compile_model(CompileConfig("tiny", tp=2, seq_len=64))
    unfused = compile_model(CompileConfig("tiny", tp=2, seq_len=64, fusion="unfused"))
    assert len(fused.plan["kernels"]) == 2 + 2
    assert len(unfused.plan["kernels"]) == 2 + 2 * 7
    ar = [b for k in fused.plan["kernels"] for b in k["allreduce"]]
    assert len(ar) == 1 + 2 * 2  # embedding + attention and MLP of each layer


def test_spill_moves_the_smallest_bandwidth_need_to_ddr_first(tmp_path):
    m = preset("llama3.1-405b")
    profile = load_profile()
    plan = memory_plan(m, CompileConfig("llama3.1-405b", tp=8, seq_len=8192), profile)
    assert plan["ddr_bytes"] > 0 and plan["hbm_bytes"] <= profile.tier("hbm").capacity
    spilled = [s["name"] for s in plan["symbols"] if s["tier"] == "ddr"]
    assert spilled[0] == "embed"  # one row read per token: the smallest need
    assert all(s["tier"] == "hbm" for s in plan["symbols"] if s["kind"] == "activation")


def test_pef_round_trip_and_refusals(tmp_path):
    art = compile_model(CompileConfig("tiny", tp=2, seq_len=64))
    path = art.save(tmp_path / "tiny.pef")
    back = Artifact.load(path)
    assert back.plan == art.plan and back.hbm_bytes_per_socket == art.hbm_bytes_per_socket
    data = path.read_bytes()
    assert b"pickle" not in data and data[:8] == b"SN40LPEF"
    cases = {
        "truncated": data[:20],
        "corrupt": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "version": data[:8] + (99).to_bytes(4, "big") + data[12:],
        "foreign": b"PK\x03\x04" + data[4:],
    }
    needles = {"truncated": "truncated", "corrupt": "checksum mismatch",
               "version": "format version 99", "foreign": "not a .pef file"}
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.pef"
        bad.write_bytes(blob)
        with pytest.raises(CompileError, match=needles[name]):
            Artifact.load(bad)


def test_bad_configs_are_refused_with_what_is_allowed():
    with pytest.raises(CompileError, match=r"allowed TP: \[1, 2, 4, 8, 16\]"):
        compile_model(CompileConfig("tiny", tp=32, nodes=2))
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'"):
        compile_model(CompileConfig("gpt5"))
    with pytest.raises(ConfigError, match="allowed 1 to 4096"):
        compile_model(CompileConfig("llama2-7b", seq_len=8192))
    with pytest.raises(ConfigError, match="unknown FusionLevel 'half'"):
        compile_model(CompileConfig("tiny", tp=2, fusion="half"))


def test_llama31_8b_decode_estimate_is_within_20_percent_of_the_paper():
    """SN40L paper: Llama 3.1 8B, 16 sockets, BF16, 8K sequence -> 1042 tokens/s/user."""
    art = compile_model(CompileConfig("llama3.1-8b", tp=16, nodes=2, seq_len=8192))
    tps = 1e9 / art.plan["estimate"]["step_ns"]
    assert abs(tps - 1042) / 1042 < 0.20, tps
    unfused = compile_model(CompileConfig("llama3.1-8b", tp=16, nodes=2, seq_len=8192,
                                          fusion="unfused", orchestration="software"))
    assert unfused.plan["estimate"]["step_ns"] > 2 * art.plan["estimate"]["step_ns"]


def test_cli_compile_and_inspect(tmp_path):
    out = tmp_path / "m.pef"
    run = subprocess.run([sys.executable, "-m", "sn40l.cli", "compile", "llama2-7b", "--tp", "8",
                          "--seq-len", "2048", "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    ins = subprocess.run([sys.executable, "-m", "sn40l.cli", "inspect", str(out)],
                         capture_output=True, text=True)
    assert ins.returncode == 0 and "decoder x32" in ins.stdout and "lm_head x1" in ins.stdout
    bad = subprocess.run([sys.executable, "-m", "sn40l.cli", "inspect", str(tmp_path / "no")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "cannot read" in bad.stderr


def test_compiler_does_not_import_ray():
    code = "import json, sys, sn40l.compiler; print(json.dumps('ray' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False


def test_bf16_tensors_are_widened_exactly(tmp_path):
    import struct

    import numpy as np

    from sn40l.compiler.checkpoint import _read_file

    values = np.array([[1.0, -2.5, 3.140625], [0.0, 65280.0, -0.0078125]], np.float32)
    half = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact: all are BF16 values
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3],
                               "data_offsets": [0, half.nbytes]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + half.tobytes())
    np.testing.assert_array_equal(_read_file(path)["w"], values)


GOLDEN = __import__("pathlib").Path(__file__).parent / "golden" / "tiny_tp2_decode.json"


def test_pef_matches_the_golden_file():
    """The .pef of tiny TP2, decoded from msgpack to canonical JSON, equals the recorded one.
    Re-record after an intended change: SN40L_RECORD_GOLDEN=1 python -m pytest -k golden"""
    import difflib
    import os

    art = Artifact.from_bytes(compile_model(CompileConfig("tiny", tp=2, seq_len=32)).to_bytes())
    text = json.dumps(art.plan, indent=1, sort_keys=True) + "\n"
    if os.environ.get("SN40L_RECORD_GOLDEN"):
        GOLDEN.write_text(text)
    want = GOLDEN.read_text()
    if text != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                                 "golden", "now"))[:60])
        pytest.fail(f"the .pef differs from {GOLDEN.name} (re-record with "
                    f"SN40L_RECORD_GOLDEN=1 if intended):\n{diff}")


def test_intermediates_with_disjoint_lifetimes_share_one_double_buffer():
    art = compile_model(CompileConfig("llama2-7b", tp=8, seq_len=1024, fusion="unfused"))
    acts = [s for s in art.plan["memory"]["symbols"] if s["kind"] == "activation"]
    per_kernel = [k["act_bytes"] for k in art.plan["kernels"]]
    assert len(acts) == 1  # every kernel's output reuses the same two slots
    assert acts[0]["bytes"] < sum(per_kernel) / 10


def test_fused_layers_split_when_intermediates_outgrow_sram():
    small = compile_model(CompileConfig("llama2-7b", tp=8, mode="prefill", seq_len=512))
    big = compile_model(CompileConfig("llama2-7b", tp=8, mode="prefill", batch=64,
                                      seq_len=4096))
    assert [k["name"] for k in small.plan["kernels"]][1:3] == ["decoder.0", "decoder.1"]
    names = [k["name"] for k in big.plan["kernels"]]
    assert names[1:3] == ["decoder.0.attn", "decoder.0.mlp"] and len(names) == 2 + 2 * 32
