"""Hugging Face checkpoints (the architectures of :mod:`sn40l.compiler.arch`): ``config.json``
to a :class:`ModelConfig`, and
``model.safetensors`` (or a sharded ``model.safetensors.index.json``) to full float32 weights in
this package's layout ([in, out] matrices; HF stores Linear weights as [out, in]).

Tensors are read through the ``safetensors`` numpy API. numpy has no bfloat16, so BF16 tensors
(the usual checkpoint dtype) are read from the file's own offsets and widened exactly to float32
(a BF16 value is the top half of a float32).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np

from sn40l.compiler.arch import ARCHITECTURES, architecture
from sn40l.compiler.arch.base import DTYPES, HFConfig, rope_of
from sn40l.compiler.arch.decoder import model_weights
from sn40l.compiler.models import ModelConfig
from sn40l.errors import CompileError

log = logging.getLogger("sn40l.checkpoint")


def is_checkpoint(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_config(path: str | Path) -> dict:
    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompileError(f"{cfg_path}: cannot read a JSON config: {exc}") from None
    if not isinstance(cfg, dict):
        raise CompileError(f"{cfg_path}: a config must be a JSON object")
    return cfg


def load_config(path: str | Path, unknown_keys: str = "error") -> ModelConfig:
    """The model description of a checkpoint directory. An architecture we have no
    description for is refused; so is every config key outside the description's key table
    (any such key may change the numbers) unless ``unknown_keys="warn"``, which logs it."""
    cfg_path = Path(path) / "config.json"
    raw = read_config(path)
    archs = raw.get("architectures") or []
    found = [ARCHITECTURES[a] for a in archs if a in ARCHITECTURES]
    if not found:
        raise CompileError(f"{cfg_path}: architecture {archs or raw.get('model_type')!r} is not "
                           f"supported; supported: {', '.join(ARCHITECTURES)}")
    arch = found[0]
    if raw.get("model_type", arch.model_type) != arch.model_type:
        raise CompileError(f"{cfg_path}: model_type {raw['model_type']!r} does not match "
                           f"{arch.hf_name} (model_type {arch.model_type!r})")
    table = arch.key_table()
    unknown = sorted(k for k in raw if k not in table)
    if unknown:
        msg = (f"{cfg_path}: config key {unknown[0]!r} is not understood by the "
               f"{arch.hf_name} loader and may change the numbers"
               + (f" (also: {', '.join(unknown[1:])})" if unknown[1:] else "")
               + "; known keys: " + ", ".join(sorted(table)))
        if unknown_keys != "warn":
            raise CompileError(msg + " (--allow-unknown-config-keys runs anyway, with a "
                               "warning)")
        log.warning("%s; running anyway (--allow-unknown-config-keys)", msg)
    cfg = HFConfig(str(cfg_path), raw, arch.defaults)
    if cfg.get("hidden_act") != "silu":
        raise CompileError(f"{cfg_path}: hidden_act {cfg.get('hidden_act')!r} is not supported;"
                           " allowed: silu")
    dtype_name = raw.get("dtype", raw.get("torch_dtype")) or "float32"
    if dtype_name not in DTYPES:
        raise CompileError(f"{cfg_path}: dtype {dtype_name!r} is not supported; allowed: "
                           f"{', '.join(DTYPES)}")
    theta, scaling, limit = rope_of(cfg)
    window, slides = arch.sliding(cfg)
    heads = int(cfg.need("num_attention_heads"))
    try:
        return ModelConfig(
            name=Path(path).name, layers=int(cfg.need("num_hidden_layers")),
            hidden=int(cfg.need("hidden_size")), heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            intermediate=int(cfg.need("intermediate_size")), vocab=int(cfg.need("vocab_size")),
            rope_theta=theta, rope_scaling=scaling, norm_eps=float(cfg.need("rms_norm_eps")),
            max_position=limit, arch=arch.name, head_dim=int(cfg.get("head_dim") or 0),
            tie_embeddings=bool(cfg.get("tie_word_embeddings")), sliding_window=window,
            sliding_layers=slides, dtype=DTYPES[dtype_name], **arch.switches(cfg),
            extra={"checkpoint": str(Path(path).resolve())})
    except (TypeError, ValueError) as exc:
        raise CompileError(f"{cfg_path}: {exc}") from None


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
    """Full float32 weights named as in :func:`sn40l.compiler.arch.decoder.model_weights`."""
    path = Path(path)
    tensors: dict[str, np.ndarray] = {}
    for file in _files(path):
        tensors.update(_read_file(file))
    hf_of = {"embed": ("model.embed_tokens.weight", False),
             "final_norm": ("model.norm.weight", False), "lm_head": ("lm_head.weight", True)}
    for i in range(model.layers):
        for hf, (ours, transpose) in architecture(model.arch).tensor_names().items():
            hf_of[f"layers.{i}.{ours}"] = (f"model.layers.{i}.{hf}", transpose)
    out: dict[str, np.ndarray] = {}
    for ours, shape, _ in model_weights(model):
        if ours == "lm_head" and model.tie_embeddings:
            out[ours] = np.ascontiguousarray(out["embed"].T)
            continue
        hf, transpose = hf_of[ours]
        if hf not in tensors:
            raise CompileError(f"{path}: tensor {hf!r} is missing from the checkpoint")
        t = tensors[hf].T if transpose else tensors[hf]
        if tuple(t.shape) != tuple(shape):
            shown = tuple(reversed(shape)) if transpose else tuple(shape)
            raise CompileError(f"{path}: tensor {hf!r} has shape {tuple(tensors[hf].shape)}, "
                               f"expected {shown}")
        out[ours] = np.ascontiguousarray(t, dtype=np.float32)
    used = {hf for hf, _ in hf_of.values()}
    if model.tie_embeddings:
        used.discard("lm_head.weight")
    extra = sorted(k for k in tensors if k not in used and k != "lm_head.weight")
    if extra:  # a tensor the description does not run would be silently dropped
        raise CompileError(f"{path}: tensor {extra[0]!r} is not part of the "
                           f"{model.arch} model described by config.json"
                           + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    return out
