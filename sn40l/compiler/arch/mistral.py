"""Mistral (``MistralForCausalLM``): Llama without biases, a sliding window on every layer."""

from __future__ import annotations

from sn40l.compiler.arch.base import Architecture, HFConfig, honoured


class Mistral(Architecture):
    """Mistral 7B and checkpoints saved as MistralForCausalLM."""

    name, hf_name, model_type = "mistral", "MistralForCausalLM", "mistral"
    keys = {"sliding_window": honoured("every layer attends to the last N positions; "
                                       "null: no window")}
    defaults = {"rms_norm_eps": 1e-6, "max_position_embeddings": 4096 * 32,
                "rope_theta": 10000.0, "num_key_value_heads": 8, "sliding_window": 4096,
                "tie_word_embeddings": False, "hidden_act": "silu"}

    def sliding(self, cfg: HFConfig) -> tuple[int | None, tuple[int, ...]]:
        # an explicit null means no window (the class default 4096 applies only when absent)
        window = cfg.raw["sliding_window"] if "sliding_window" in cfg.raw else 4096
        if window is None:
            return None, ()
        return int(window), tuple(range(int(cfg.need("num_hidden_layers"))))
