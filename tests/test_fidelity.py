"""The hardware model against the paper's baselines and the paper's trends (pure cost model).

References: the NeMo / TensorRT-LLM Llama-2 latencies and the nccl-tests figures of
sn40l/hardware/reference/gpu_latency.yaml; the SN40L paper's Fig. 10 text (hardware
orchestration helps decode a lot and prefill hardly; fusion helps prefill and decode).
"""

from __future__ import annotations

import pytest

from sn40l.compiler.baseline import PROFILE_OF, generation_ns, nemo_rows, reference
from sn40l.compiler.cost import allreduce_estimate_ns, kernel_launch_ns
from sn40l.compiler.models import PRESETS, TABLE_III, check_materializable, preset
from sn40l.compiler.plan import CompileConfig, compile_plan
from sn40l.compiler.types import Orchestration
from sn40l.errors import ConfigError
from sn40l.hardware import load_profile


def test_dgx_model_against_published_nemo_latencies():
    """Tolerance, and why: at TP 1 a decode step is bound by HBM, which is what the paper's
    "GPUs rarely exceed 50 % of HBM bandwidth" prices: within 25 % there (modeled 1.00-1.20x).
    At TP > 1 the published end-to-end latencies hold per-token overheads of the 2023 serving
    stack the model does not claim to know, so it is optimistic for the GPUs (as the paper's
    estimates are): never slower than published and at least 0.4x of it (modeled 0.43-0.95x)."""
    for row in nemo_rows():
        ms = generation_ns(row.model, PROFILE_OF[row.gpu], row.tp, row.batch, row.input_tokens,
                           row.output_tokens) / 1e6
        ratio = ms / row.ms
        if row.tp == 1:
            assert 0.75 <= ratio <= 1.25, (row, ms)
        else:
            assert 0.4 <= ratio <= 1.0, (row, ms)


def test_dgx_model_follows_the_published_trends():
    model = {}
    for row in nemo_rows():
        model[(row.gpu, row.tp, row.batch)] = generation_ns(
            row.model, PROFILE_OF[row.gpu], row.tp, row.batch, row.input_tokens,
            row.output_tokens)
    for (gpu, tp, batch), ns in model.items():
        if gpu == "a100":
            assert model[("h100", tp, batch)] < ns  # H100 faster at every point
        if batch > 1:
            assert ns > model[(gpu, tp, batch // 2)]  # a larger batch takes longer
        if tp > 1:
            assert ns < model[(gpu, tp // 2, batch)]  # more GPUs, lower latency


def test_small_allreduce_matches_nccl_tests():
    for gpu, gpus, nbytes, us, _source in reference()["nccl_allreduce"]["rows"]:
        prof = load_profile("dgx-a100" if gpu.startswith("A100") else "dgx-h100")
        modeled = allreduce_estimate_ns(nbytes, gpus, prof, cross_node=False) / 1e3
        assert modeled == pytest.approx(us, rel=0.1)


def _step_ms(mode: str, fusion: str, orch: str, model: str = "llama2-7b",
             seq: int = 4096) -> float:
    cfg = CompileConfig(model, tp=8, mode=mode, seq_len=seq, fusion=fusion, orchestration=orch)
    return compile_plan(cfg)["estimate"]["step_ns"] / 1e6


def test_orchestration_and_fusion_move_as_the_paper_says():
    """Fig. 10 text: HO gives a large gain on decode and almost none on prefill (long kernels
    amortize the launches); fusion gives a clear gain on prefill and on decode."""
    for model, seq in (("llama2-7b", 4096), ("mistral-7b", 2048)):
        ho_decode = _step_ms("decode", "fused", "software", model, seq) / _step_ms(
            "decode", "fused", "hardware", model, seq)
        ho_prefill = _step_ms("prefill", "fused", "software", model, seq) / _step_ms(
            "prefill", "fused", "hardware", model, seq)
        fuse_prefill = _step_ms("prefill", "unfused", "software", model, seq) / _step_ms(
            "prefill", "fused", "software", model, seq)
        fuse_decode = _step_ms("decode", "unfused", "software", model, seq) / _step_ms(
            "decode", "fused", "software", model, seq)
        assert ho_decode > 1.2 and ho_prefill < 1.05, (model, ho_decode, ho_prefill)
        assert fuse_prefill > 1.2 and fuse_decode > 1.2, (model, fuse_prefill, fuse_decode)


def test_software_launch_is_built_from_what_the_commands_move():
    p = load_profile("sn40l")
    k = {"launches": 1, "reload": True}
    so = kernel_launch_ns(k, p, Orchestration.SOFTWARE)
    config = 1024 * 2 * 1040  # 1 KiB per PCU and PMU
    args = 2000 + -(-4096 * 10**9 // (32 * 10**9))  # host link latency + 4 KiB at 32 GB/s
    assert so == 4000 + args + -(-config * 10**9 // (200 * 10**9))
    # a decoder loop under HO keeps its loaded program; a changed program pays Program Load
    assert kernel_launch_ns({"reload": False}, p, Orchestration.HARDWARE) == 500
    assert kernel_launch_ns(k, p, Orchestration.HARDWARE) == 500 + (so - 4000 - args)


def test_unfused_baseline_launches_every_operator_and_spills_the_scores():
    fused = compile_plan(CompileConfig("llama2-7b", tp=8, mode="prefill", seq_len=4096))
    unfused = compile_plan(CompileConfig("llama2-7b", tp=8, mode="prefill", seq_len=4096,
                                         fusion="unfused"))
    # 13 device kernels per layer (norms, QKV, RoPE, QK^T, softmax, PV, O, residual adds,
    # gate/up, SwiGLU, down) against 1-2 fused ones
    assert unfused["estimate"]["kernels"] == 32 * 13 + 2
    assert fused["estimate"]["kernels"] <= 32 * 2 + 2
    attn = next(k for k in unfused["kernels"] if k["name"] == "layers.0.attention")
    scores = 4 * 4096 * 4096 * 2  # 4 heads per socket, T x T, BF16
    assert attn["act_bytes"] >= 4 * scores


def test_table_iii_presets():
    names = [m for m, _ in TABLE_III]
    assert names == ["llama2-7b", "mistral-7b", "llama2-70b", "falcon-40b", "bloom-176b"]
    assert PRESETS["falcon-40b"].params == pytest.approx(41.8e9, rel=0.02)
    assert PRESETS["bloom-176b"].params == pytest.approx(176.2e9, rel=0.03)
    for name, contexts in TABLE_III:
        for ctx in contexts:  # every Table III point compiles at TP 8
            assert compile_plan(CompileConfig(name, tp=8, seq_len=ctx))["memory"]["fits"]
    for name in ("falcon-40b", "bloom-176b"):
        with pytest.raises(ConfigError, match=f"{name!r} runs with phantom weights only: .*not"
                                              " the Llama math"):
            check_materializable(preset(name))
    check_materializable(preset("mistral-7b"))  # Llama math: runs for real


def test_150_experts_are_refused_on_one_dgx_node_with_numbers_and_fit_two():
    """Experts live in host memory on a DGX: 150 llama2-7b experts (2.19 TB with the bench's
    KV caches) do not fit one node's 2 TB; the bench reports OOM instead of growing the DGX."""
    from sn40l.coe.bench import BenchConfig, dgx_refusal
    from sn40l.coe.registry import synthetic

    cfg = BenchConfig()
    coe = synthetic(150, "llama2-7b", 8, router={"preset": "llama2-7b"},
                    serving={"max_batch": max(cfg.batch),
                             "max_context": cfg.prompt_len + max(cfg.tokens)})
    for name in ("dgx-a100", "dgx-h100"):
        why = dgx_refusal(coe, load_profile(name), 1)
        assert why is not None and "host memory: needs 2.0 TiB" in why and "has 1.8 TiB" in why
        assert dgx_refusal(coe, load_profile(name), 2) is None  # two nodes when asked for
    assert cfg.dgx_nodes == 1


def test_materialized_run_of_a_phantom_only_preset_is_refused_before_any_socket(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, SN40L_STATE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "sn40l.cli", "run", "bloom-176b", "--weights",
                          "random", "--prompt-ids", "1,2", "--seq-len", "2048"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "'bloom-176b' runs with phantom weights only: bloom-176b (bigscience/bloom): ALiBi" \
        in out.stderr


def test_bench_reports_an_oom_row_instead_of_growing_the_dgx(ray_session):
    from sn40l.coe.bench import BenchConfig, format_table, run_bench

    cfg = BenchConfig(experts=(150,), batch=(1,), tokens=(2,), profiles=("dgx-a100",),
                      modes=("sequential",), rounds=1, warmup=0)
    res = run_bench(cfg, progress=lambda msg: None)
    (row,) = res["rows"]
    assert row["nodes"] == 1 and row["latency_ms"] is None
    assert "236.0 GiB per socket" in row["oom"] and "has 1.8 TiB (232.8 GiB per socket)" in row["oom"]
    assert "OOM dgx-a100 E=150: CoE does not fit 1 node(s)" in format_table(res)
    assert res["footprint"][0]["experts_per_node_home"] < 150
