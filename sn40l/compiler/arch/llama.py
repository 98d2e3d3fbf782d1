"""Llama (``LlamaForCausalLM``): the base decoder, optional biases on q/k/v/o and the MLP."""

from __future__ import annotations

from sn40l.compiler.arch.base import Architecture, HFConfig, honoured, ignored


class Llama(Architecture):
    """Llama 2/3/3.1 and every checkpoint saved as LlamaForCausalLM."""

    name, hf_name, model_type = "llama", "LlamaForCausalLM", "llama"
    keys = {"attention_bias": honoured("biases on q, k, v and o projections"),
            "mlp_bias": honoured("biases on gate, up and down projections"),
            "pretraining_tp": ignored("transformers 5's Llama forward does not read it")}
    defaults = {"rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "rope_theta": 10000.0,
                "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
                "hidden_act": "silu"}

    def switches(self, cfg: HFConfig) -> dict:
        bias = bool(cfg.get("attention_bias"))
        return {"qkv_bias": bias, "o_bias": bias, "mlp_bias": bool(cfg.get("mlp_bias"))}
