"""What an architecture description is, and the table of ``config.json`` keys the loader
understands.

An :class:`Architecture` turns a Hugging Face config into a :class:`ModelConfig` (shape and the
switches of the shared decoder math in :mod:`sn40l.compiler.arch.decoder`) and names the
checkpoint's tensors. Every key of a config must be in :data:`COMMON_KEYS` or the
architecture's own ``keys``: honoured (read, and refused by value when the math cannot do it)
or ignored with the reason it cannot change the numbers. Any other key may change them, so
the loader refuses it by name (see :mod:`sn40l.compiler.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l.choices import Choice
from sn40l.compiler.models import RopeScaling, RopeType
from sn40l.errors import CompileError


class KeyUse(Choice):
    """What the loader does with a config key."""

    HONOURED = "honoured"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Key:
    """One known config key: its use and why."""

    use: KeyUse
    why: str


def honoured(why: str) -> Key:
    return Key(KeyUse.HONOURED, why)


def ignored(why: str) -> Key:
    return Key(KeyUse.IGNORED, why)


_SHAPE = honoured("model shape")
COMMON_KEYS: dict[str, Key] = {
    "architectures": honoured("picks the architecture description"),
    "model_type": honoured("must match the architecture"),
    "num_hidden_layers": _SHAPE, "hidden_size": _SHAPE, "num_attention_heads": _SHAPE,
    "num_key_value_heads": _SHAPE, "intermediate_size": _SHAPE, "vocab_size": _SHAPE,
    "head_dim": honoured("per-head width; may differ from hidden / heads"),
    "hidden_act": honoured("must be silu (the SwiGLU MLP)"),
    "rms_norm_eps": honoured("RMSNorm epsilon"),
    "max_position_embeddings": honoured("context limit and the default --seq-len"),
    "rope_parameters": honoured("RoPE type and parameters (transformers 5)"),
    "rope_theta": honoured("RoPE base (transformers 4)"),
    "rope_scaling": honoured("RoPE scaling (transformers 4)"),
    "original_max_position_embeddings": honoured("pre-training context of llama3/yarn RoPE"),
    "partial_rotary_factor": honoured("must be 1 (RoPE over the whole head)"),
    "tie_word_embeddings": honoured("LM head = embedding transposed"),
    "dtype": honoured("checkpoint dtype (transformers 5); values read exactly"),
    "torch_dtype": honoured("checkpoint dtype (transformers 4); values read exactly"),
    "transformers_version": ignored("provenance only"),
    "_name_or_path": ignored("provenance only"),
    "use_cache": ignored("a KV cache does not change the results"),
    "initializer_range": ignored("initialises new weights only; a checkpoint's are loaded"),
    "attention_dropout": ignored("dropout is off at inference"),
    "bos_token_id": ignored("a token id for the tokenizer, not the forward math"),
    "eos_token_id": ignored("a token id for stopping; sn40l run generates exactly "
                            "--max-new-tokens"),
    "pad_token_id": ignored("a token id for batching padded prompts; sn40l pads nothing"),
}

DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class HFConfig:
    """A parsed ``config.json`` with the architecture's defaults for absent or null keys."""

    path: str
    raw: dict
    defaults: dict

    def get(self, key: str):
        value = self.raw.get(key)
        return self.defaults.get(key) if value is None else value

    def need(self, key: str):
        value = self.get(key)
        if value is None:
            raise CompileError(f"{self.path}: missing key {key!r}")
        return value


class Architecture:
    """One model description. Subclasses set the names, their own keys and transformers'
    defaults, and the math switches (:meth:`switches`, :meth:`sliding`)."""

    name = ""                    # ours, stored in ModelConfig.arch
    hf_name = ""                 # transformers' class, as in config.json "architectures"
    model_type = ""
    keys: dict[str, Key] = {}    # beyond COMMON_KEYS
    defaults: dict = {}          # transformers' config-class defaults

    def key_table(self) -> dict[str, Key]:
        return {**COMMON_KEYS, **self.keys}

    def switches(self, cfg: HFConfig) -> dict:
        """ModelConfig fields beyond the shape: biases, q/k norms."""
        return {}

    def sliding(self, cfg: HFConfig) -> tuple[int | None, tuple[int, ...]]:
        """(window, the layers that use it)."""
        return None, ()

    def tensor_names(self) -> dict[str, tuple[str, bool]]:
        """HF name inside ``model.layers.{i}.`` -> (our name, transpose)."""
        return {
            "self_attn.q_proj.weight": ("wq", True), "self_attn.k_proj.weight": ("wk", True),
            "self_attn.v_proj.weight": ("wv", True), "self_attn.o_proj.weight": ("wo", True),
            "mlp.gate_proj.weight": ("w_gate", True), "mlp.up_proj.weight": ("w_up", True),
            "mlp.down_proj.weight": ("w_down", True),
            "input_layernorm.weight": ("attn_norm", False),
            "post_attention_layernorm.weight": ("mlp_norm", False),
            "self_attn.q_proj.bias": ("bq", False), "self_attn.k_proj.bias": ("bk", False),
            "self_attn.v_proj.bias": ("bv", False), "self_attn.o_proj.bias": ("bo", False),
            "mlp.gate_proj.bias": ("b_gate", False), "mlp.up_proj.bias": ("b_up", False),
            "mlp.down_proj.bias": ("b_down", False),
            "self_attn.q_norm.weight": ("q_norm", False),
            "self_attn.k_norm.weight": ("k_norm", False),
        }


def rope_of(cfg: HFConfig) -> tuple[float, RopeScaling | None, int]:
    """(theta, scaling, context limit) from ``rope_parameters`` (transformers 5) or
    ``rope_theta`` / ``rope_scaling`` (transformers 4); a type we do not run is refused."""
    params = dict(cfg.raw.get("rope_parameters") or {})
    legacy = dict(cfg.raw.get("rope_scaling") or {})
    if params and legacy:
        raise CompileError(f"{cfg.path}: both rope_parameters and rope_scaling are set; "
                           "transformers 5 reads rope_parameters only")
    params = params or legacy
    theta = float(params.get("rope_theta") or cfg.raw.get("rope_theta") or
                  cfg.defaults.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in [t.value for t in RopeType]:
        raise CompileError(f"{cfg.path}: RoPE type {kind!r} is not supported; supported: "
                           f"{', '.join(t.value for t in RopeType)}")
    known = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
             "high_freq_factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
             "attention_factor", "mscale", "mscale_all_dim", "truncate",
             "partial_rotary_factor"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise CompileError(f"{cfg.path}: RoPE parameter {unknown[0]!r} is not understood; "
                           f"known: {', '.join(sorted(known))}")
    partial = params.get("partial_rotary_factor", cfg.raw.get("partial_rotary_factor", 1.0))
    if float(partial if partial is not None else 1.0) != 1.0:
        raise CompileError(f"{cfg.path}: partial_rotary_factor {partial!r} is not supported; "
                           "allowed: 1.0 (RoPE over the whole head)")
    max_pos = int(cfg.need("max_position_embeddings"))
    if kind == "default":
        return theta, None, max_pos
    if "factor" not in params and kind != "yarn":
        raise CompileError(f"{cfg.path}: RoPE type {kind!r} needs 'factor'")
    orig = int(params.get("original_max_position_embeddings")
               or cfg.raw.get("original_max_position_embeddings") or max_pos)
    factor = params.get("factor")
    if kind == "yarn" and factor is None:
        factor = max_pos / orig  # transformers' rule when only the two lengths are given
    limit = max_pos
    if kind == "dynamic":  # NTK scaling exists to run past the trained context
        orig, limit = max_pos, int(max_pos * float(factor))
    if kind == "llama3" and not {"low_freq_factor", "high_freq_factor"} <= set(params):
        raise CompileError(f"{cfg.path}: RoPE type 'llama3' needs low_freq_factor and "
                           "high_freq_factor")
    sc = RopeScaling(
        factor=float(factor), low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position=orig, kind=kind,
        beta_fast=float(params.get("beta_fast") or 32.0),
        beta_slow=float(params.get("beta_slow") or 1.0),
        attention_factor=(None if params.get("attention_factor") is None
                          else float(params["attention_factor"])),
        mscale=params.get("mscale"), mscale_all_dim=params.get("mscale_all_dim"),
        truncate=bool(params.get("truncate", True)))
    return theta, sc, limit
