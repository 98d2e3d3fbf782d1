"""Qwen2 (``Qwen2ForCausalLM``): Llama with q/k/v biases (o has none) and a sliding window on
the layers transformers marks ``sliding_attention``."""

from __future__ import annotations

from sn40l.compiler.arch.base import Architecture, HFConfig, honoured
from sn40l.errors import CompileError


class Qwen2(Architecture):
    """Qwen2 / Qwen2.5 checkpoints."""

    name, hf_name, model_type = "qwen2", "Qwen2ForCausalLM", "qwen2"
    keys = {"use_sliding_window": honoured("off: no layer slides, whatever sliding_window says"),
            "sliding_window": honoured("window of the sliding layers"),
            "max_window_layers": honoured("layers from this index on slide (when layer_types "
                                          "is absent)"),
            "layer_types": honoured("per layer: full_attention or sliding_attention")}
    defaults = {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 10000.0,
                "num_key_value_heads": 32, "use_sliding_window": False, "sliding_window": 4096,
                "max_window_layers": 28, "tie_word_embeddings": False, "hidden_act": "silu"}

    def switches(self, cfg: HFConfig) -> dict:
        return {"qkv_bias": True}

    def sliding(self, cfg: HFConfig) -> tuple[int | None, tuple[int, ...]]:
        """transformers: window = sliding_window if use_sliding_window else None; layer_types
        defaults to sliding for layers >= max_window_layers when there is a window."""
        layers = int(cfg.need("num_hidden_layers"))
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
        types = cfg.raw.get("layer_types")
        if types is None:
            types = ["sliding_attention" if window is not None and i >= int(
                cfg.get("max_window_layers")) else "full_attention" for i in range(layers)]
        allowed = ("full_attention", "sliding_attention")
        bad = [t for t in types if t not in allowed]
        if bad or len(types) != layers:
            raise CompileError(f"{cfg.path}: layer_types must list {layers} of "
                               f"{', '.join(allowed)}; got {types!r}")
        slides = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        if slides and window is None:  # transformers then runs those layers unwindowed
            return None, ()
        return (int(window) if slides else None), slides
