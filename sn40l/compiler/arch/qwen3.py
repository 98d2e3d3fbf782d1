"""Qwen3 (``Qwen3ForCausalLM``): Qwen2's windows, optional biases, and a per-head RMSNorm on
q and k before RoPE."""

from __future__ import annotations

from sn40l.compiler.arch.base import HFConfig, honoured
from sn40l.compiler.arch.qwen2 import Qwen2


class Qwen3(Qwen2):
    """Qwen3 dense checkpoints."""

    name, hf_name, model_type = "qwen3", "Qwen3ForCausalLM", "qwen3"
    keys = {**Qwen2.keys, "attention_bias": honoured("biases on q, k, v and o projections")}
    defaults = {**Qwen2.defaults, "head_dim": 128, "attention_bias": False}

    def switches(self, cfg: HFConfig) -> dict:
        bias = bool(cfg.get("attention_bias"))
        return {"qkv_bias": bias, "o_bias": bias, "qk_norm": True}
