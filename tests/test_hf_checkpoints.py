"""Hugging Face checkpoints as transformers 5 writes them, against transformers' own greedy
continuations (tests/fixtures/hf/*/expected.json, written by tests/fixtures/make_hf_fixtures.py
with torch; this suite needs neither), at TP1, TP8 and TP16 where the heads allow; and every
refusal by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sn40l.cluster.runner import ModelRunner
from sn40l.compiler import CompileConfig, compile_model
from sn40l.compiler.checkpoint import load_config
from sn40l.errors import CompileError

HF = Path(__file__).parent / "fixtures" / "hf"
CASES = [  # fixture, TP sizes (the heads and KV heads allow these)
    ("llama-llama3", (1, 8, 16)), ("llama-llama3-v4keys", (1,)), ("llama-linear", (1, 8)),
    ("llama-dynamic", (1, 8)), ("llama-yarn", (1, 8)), ("llama-bias-headdim", (1, 8)),
    ("llama-bf16-tied", (1, 16)), ("mistral-window", (1, 8)), ("qwen2-window", (1, 8)),
    ("qwen3-tok", (1, 8, 16)),
]


def _expected(name: str) -> dict:
    return json.loads((HF / name / "expected.json").read_text())


def _ranks(tp: int) -> list[int]:
    return list(range(tp)) if tp <= 8 else list(range(16))


@pytest.mark.parametrize("name,tp", [(n, t) for n, tps in CASES for t in tps],
                         ids=[f"{n}-tp{t}" for n, tps in CASES for t in tps])
def test_greedy_tokens_equal_transformers(cluster2x8, name, tp):
    exp = _expected(name)
    ckpt = HF / name
    art = compile_model(CompileConfig(str(ckpt), tp=tp, nodes=1 if tp <= 8 else 2,
                                      seq_len=len(exp["prompt_ids"]) + exp["new_tokens"]))
    runner = ModelRunner(cluster2x8, _ranks(tp), art, weights=str(ckpt), tag=f"hf-{name}-{tp}")
    runner.load()
    try:
        got = runner.generate(exp["prompt_ids"], exp["new_tokens"]).tokens
    finally:
        runner.unload()
    assert got == exp["tokens"]


def test_config_features_are_read_from_both_generations():
    new, old = load_config(HF / "llama-llama3"), load_config(HF / "llama-llama3-v4keys")
    assert new.rope_theta == old.rope_theta == 500000.0
    assert new.rope_scaling == old.rope_scaling and new.rope_scaling.kind == "llama3"
    m = load_config(HF / "llama-bias-headdim")
    assert (m.head_dim, m.qkv_bias, m.o_bias, m.mlp_bias) == (16, True, True, True)
    assert m.head_dim * m.heads != m.hidden
    m = load_config(HF / "mistral-window")
    assert m.sliding_window == 4 and m.sliding_layers == (0, 1)
    m = load_config(HF / "qwen2-window")  # max_window_layers 1: layer 1 slides, layer 0 not
    assert (m.sliding_window, m.sliding_layers, m.qkv_bias, m.o_bias) == (3, (1,), True, False)
    m = load_config(HF / "qwen3-tok")
    assert m.qk_norm and m.head_dim == 8 and m.sliding_layers == ()
    assert load_config(HF / "llama-bf16-tied").dtype == "bf16"
    assert load_config(HF / "llama-bf16-tied").tie_embeddings
    m = load_config(HF / "llama-dynamic")
    assert m.max_position == 48  # NTK dynamic runs to factor x max_position_embeddings
    # the window matters: transformers without it continues differently
    for name in ("mistral-window", "qwen2-window"):
        exp = _expected(name)
        assert exp["tokens_without_window"] != exp["tokens"], name


def _edit(tmp_path: Path, name: str, change) -> Path:
    dst = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(HF / name, dst)
    cfg = json.loads((dst / "config.json").read_text())
    change(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_refusals_name_the_key_type_and_architecture(tmp_path):
    def longrope(c):
        c["rope_parameters"]["rope_type"] = "longrope"

    with pytest.raises(CompileError, match="RoPE type 'longrope' is not supported; "
                                           "supported: default, linear, dynamic, llama3, yarn"):
        load_config(_edit(tmp_path, "llama-linear", longrope))

    def unknown(c):
        c["logit_softcapping"] = 30.0

    bad = _edit(tmp_path, "llama-llama3", unknown)
    with pytest.raises(CompileError, match="config key 'logit_softcapping' is not understood.*"
                                           "may change the numbers"):
        load_config(bad)
    assert load_config(bad, unknown_keys="warn").rope_theta == 500000.0

    def gpt(c):
        c["architectures"] = ["GPT2LMHeadModel"]

    with pytest.raises(CompileError, match="'GPT2LMHeadModel'.*not supported; supported: "
                                           "LlamaForCausalLM, MistralForCausalLM, "
                                           "Qwen2ForCausalLM, Qwen3ForCausalLM"):
        load_config(_edit(tmp_path, "llama-linear", gpt))

    def gelu(c):
        c["hidden_act"] = "gelu"

    with pytest.raises(CompileError, match="hidden_act 'gelu' is not supported"):
        load_config(_edit(tmp_path, "qwen3-tok", gelu))
    with pytest.raises(CompileError, match="RoPE parameter 'short_factor' is not understood"):
        load_config(_edit(tmp_path, "llama-yarn",
                          lambda c: c["rope_parameters"].update(short_factor=[1.0])))


def _sn40l(args: list[str], cluster=None, ranks=(4, 5), timeout=240, env_extra=None):
    """``sn40l ARGS`` as a program; with ``cluster``, inside a job on its ``ranks`` (the way
    the scheduler runs it), so no cluster of its own is brought up."""
    import os

    env = dict(os.environ, SN40L_PROGRESS="lines", **(env_extra or {}))
    if cluster is not None:
        import ray

        from sn40l.cluster.cluster import local_auth_mode

        env.update(SN40L_JOB_ID="9012", SN40L_CLUSTER=cluster.spec.name,
                   SN40L_SOCKETS=",".join(map(str, ranks)),
                   SN40L_RAY_ADDRESS=ray.get_runtime_context().gcs_address,
                   SN40L_RAY_AUTH=local_auth_mode())
    return subprocess.run([sys.executable, "-m", "sn40l.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_text_prompt_and_chat_match_transformers_and_json_stdout_is_clean(cluster2x8):
    exp = _expected("qwen3-tok")
    ckpt = str(HF / "qwen3-tok")
    out = _sn40l(["run", ckpt, "--tp", "2", "--prompt", exp["text_prompt"],
                  "--max-new-tokens", "8", "--json"], cluster2x8)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)  # stdout alone: one JSON document, nothing else
    assert doc["prompt_ids"] == exp["text_prompt_ids"]
    assert doc["tokens"] == exp["text_tokens"] and doc["text"] == exp["text"]
    assert doc["seq_len"] == 64  # the checkpoint's max_position_embeddings
    assert "run: 4/4" in out.stderr  # progress, on stderr
    out = _sn40l(["run", ckpt, "--tp", "2", "--prompt", exp["text_prompt"], "--chat",
                  "--max-new-tokens", "8", "--json", "--quiet"], cluster2x8)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["prompt_ids"] == exp["chat_prompt_ids"]
    assert doc["tokens"] == exp["chat_tokens"] and doc["text"] == exp["chat_text"]
    assert "run:" not in out.stderr  # --quiet


def test_cli_refusals_are_one_line_errors(tmp_path):
    out = _sn40l(["run", "tiny", "--prompt", "hello"])
    assert out.returncode == 1 and "preset without one: use --prompt-ids" in out.stderr
    assert "Traceback" not in out.stderr
    bad = _edit(tmp_path, "llama-linear", lambda c: c.update(logit_softcapping=30.0))
    out = _sn40l(["run", str(bad), "--prompt-ids", "1,2", "--json"])
    assert out.returncode == 1 and out.stdout == ""
    assert "config key 'logit_softcapping' is not understood" in out.stderr
    assert "Traceback" not in out.stderr


def test_coe_bench_json_stdout_is_one_document(cluster2x8):
    import ray

    out = _sn40l(["coe", "bench", "--experts", "2", "--expert-model", "tiny", "--batch", "1",
                  "--tokens", "2", "--profiles", "sn40l", "--modes", "sequential",
                  "--rounds", "1", "--warmup", "0", "--prompt-len", "4", "--router", "none",
                  "--json", "--address", ray.get_runtime_context().gcs_address],
                 env_extra={"RAY_AUTH_MODE": "token"})
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert [r["mode"] for r in doc["rows"]] == ["sequential"]


def test_seq_len_defaults_to_the_checkpoint_and_is_capped_out_loud(tmp_path, capsys):
    from sn40l.cluster.run_cli import HOST_KV_BUDGET, _default_seq_len

    m = load_config(HF / "qwen3-tok")
    assert _default_seq_len(m, 2, 8) == 64 and capsys.readouterr().err == ""
    big = load_config(_edit(tmp_path, "llama-linear",
                            lambda c: c.update(max_position_embeddings=10**7)))
    per_token = big.layers * 2 * big.kv_heads * big.head_dim * 4  # TP1: every KV head
    got = _default_seq_len(big, 1, 8)
    assert got == HOST_KV_BUDGET // per_token < 10**7
    err = capsys.readouterr().err
    assert f"--seq-len defaults to {got}, not the model's maximum 10000000" in err
