"""Hugging Face Llama/Mistral checkpoints: ``config.json`` to a :class:`ModelConfig`, and
``model.safetensors`` (or a sharded ``model.safetensors.index.json``) to full float32 weights in
this package's layout ([in, out] matrices; HF stores Linear weights as [out, in]).

Tensors are read through the ``safetensors`` numpy API. numpy has no bfloat16, so BF16 tensors
(the usual checkpoint dtype) are read from the file's own offsets and widened exactly to float32
(a BF16 value is the top half of a float32).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from sn40l.compiler.models import ModelConfig, RopeScaling
from sn40l.errors import CompileError

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")

_LAYER = {  # HF name inside model.layers.{i}. -> (our name, transpose)
    "self_attn.q_proj.weight": ("wq", True), "self_attn.k_proj.weight": ("wk", True),
    "self_attn.v_proj.weight": ("wv", True), "self_attn.o_proj.weight": ("wo", True),
    "mlp.gate_proj.weight": ("w_gate", True), "mlp.up_proj.weight": ("w_up", True),
    "mlp.down_proj.weight": ("w_down", True), "input_layernorm.weight": ("attn_norm", False),
    "post_attention_layernorm.weight": ("mlp_norm", False),
}


def is_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_config(path: str | Path) -> ModelConfig:
    """The model shape of a checkpoint directory; an unknown architecture is refused."""
    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompileError(f"{cfg_path}: cannot read a JSON config: {exc}") from None
    archs = cfg.get("architectures") or []
    if not any(a in ARCHITECTURES for a in archs):
        raise CompileError(f"{cfg_path}: architecture {archs or cfg.get('model_type')!r} is not "
                           f"supported; supported: {', '.join(ARCHITECTURES)}")
    rs = cfg.get("rope_scaling")
    scaling = None
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind != "llama3":
            raise CompileError(f"{cfg_path}: rope_scaling type {kind!r} is not supported; "
                               "supported: llama3")
        scaling = RopeScaling(float(rs["factor"]), float(rs["low_freq_factor"]),
                              float(rs["high_freq_factor"]),
                              int(rs["original_max_position_embeddings"]))
    try:
        return ModelConfig(
            name=Path(path).name, layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
            heads=cfg["num_attention_heads"],
            kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            intermediate=cfg["intermediate_size"], vocab=cfg["vocab_size"],
            rope_theta=float(cfg.get("rope_theta", 10000.0)), rope_scaling=scaling,
            norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
            max_position=int(cfg.get("max_position_embeddings", 4096)),
            extra={"checkpoint": str(Path(path).resolve()),
                   "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False))})
    except KeyError as exc:
        raise CompileError(f"{cfg_path}: missing key {exc.args[0]!r}") from None


def _files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return sorted({path / f for f in weight_map.values()})
    single = path / "model.safetensors"
    if not single.is_file():
        raise CompileError(f"{path}: no model.safetensors or model.safetensors.index.json")
    return [single]


def _read_file(file: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    with open(file, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    out: dict[str, np.ndarray] = {}
    bf16 = {k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"}
    with safe_open(str(file), framework="numpy") as f:
        for key in f.keys():
            if key not in bf16:
                out[key] = f.get_tensor(key).astype(np.float32)
    if bf16:
        raw = np.memmap(file, dtype=np.uint8, mode="r")
        for key in bf16:
            lo, hi = header[key]["data_offsets"]
            half = raw[8 + size + lo: 8 + size + hi].view(np.uint16)
            out[key] = (half.astype(np.uint32) << 16).view(np.float32).reshape(
                header[key]["shape"])
    return out


def load_weights(path: str | Path, model: ModelConfig) -> dict[str, np.ndarray]:
    """Full float32 weights named as in :func:`sn40l.compiler.plan.weight_symbols`."""
    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    for file in _files(path):
        tensors.update(_read_file(file))
    h, kv = model.hidden, model.kv_heads * model.head_dim
    expected = {"embed": (model.vocab, h), "final_norm": (h,), "lm_head": (h, model.vocab)}
    shapes = {"wq": (h, h), "wk": (h, kv), "wv": (h, kv), "wo": (h, h),
              "w_gate": (h, model.intermediate), "w_up": (h, model.intermediate),
              "w_down": (model.intermediate, h), "attn_norm": (h,), "mlp_norm": (h,)}
    want = [("model.embed_tokens.weight", "embed", False), ("model.norm.weight", "final_norm",
                                                            False)]
    if not model.extra.get("tie_word_embeddings"):
        want.append(("lm_head.weight", "lm_head", True))
    for i in range(model.layers):
        for hf, (ours, transpose) in _LAYER.items():
            want.append((f"model.layers.{i}.{hf}", f"layers.{i}.{ours}", transpose))
            expected[f"layers.{i}.{ours}"] = shapes[ours]
    out: dict[str, np.ndarray] = {}
    for hf, ours, transpose in want:
        if hf not in tensors:
            raise CompileError(f"{path}: tensor {hf!r} is missing from the checkpoint")
        t = tensors[hf].T if transpose else tensors[hf]
        if tuple(t.shape) != expected[ours]:
            shown = tuple(reversed(expected[ours])) if transpose else expected[ours]
            raise CompileError(f"{path}: tensor {hf!r} has shape {tuple(tensors[hf].shape)}, "
                               f"expected {shown}")
        out[ours] = np.ascontiguousarray(t, dtype=np.float32)
    if model.extra.get("tie_word_embeddings"):
        out["lm_head"] = np.ascontiguousarray(out["embed"].T)
    return out
