"""The math of a Llama-family decoder, shared by every architecture description: which weights
a model has and how tensor parallelism splits them, and one decoder layer as named ops.

Weights are full float32 arrays in this package's layout ([in, out] matrices). Under TP
(Megatron style, see :mod:`sn40l.compiler.plan`): q/k/v and gate/up are split by output columns
(their biases with them), o and down by input rows (their biases are added once, after the
AllReduce), embedding rows and LM-head columns over the vocabulary padded to a multiple of TP,
norms replicated. KV heads fewer than TP are replicated.

A layer is a sequence of ops named like the compiler's kernels (``attn_norm``, ``qkv_proj``,
``attention``, ``o_proj``, ``mlp_norm``, ``gate_up``, ``down_proj``); the engine times each op
against the kernel of that name and runs the collectives where the math asks for them.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from sn40l.choices import Choice
from sn40l.compiler.arch.rope import apply_rope
from sn40l.compiler.models import ModelConfig
from sn40l.errors import ConfigError

OPS = ("attn_norm", "qkv_proj", "attention", "o_proj", "mlp_norm", "gate_up", "down_proj")


class Split(Choice):
    """How TP splits a weight: by query heads, KV heads or MLP columns (``*_cols``), by query
    or MLP rows (``*_rows``), by vocabulary, or not at all."""

    Q_COLS = "q_cols"
    KV_COLS = "kv_cols"
    MLP_COLS = "mlp_cols"
    Q_ROWS = "q_rows"
    MLP_ROWS = "mlp_rows"
    VOCAB_ROWS = "vocab_rows"
    VOCAB_COLS = "vocab_cols"
    REPLICATED = "replicated"


def layer_weights(model: ModelConfig) -> list[tuple[str, tuple[int, ...], Split]]:
    """(name inside ``layers.{i}.``, full shape, split) of every weight of one layer, in plan
    order: the Llama weights first, then the biases and norms the model has."""
    h, q, kv, m, hd = (model.hidden, model.q_width, model.kv_heads * model.head_dim,
                       model.intermediate, model.head_dim)
    out = [("attn_norm", (h,), Split.REPLICATED), ("wq", (h, q), Split.Q_COLS),
           ("wk", (h, kv), Split.KV_COLS), ("wv", (h, kv), Split.KV_COLS),
           ("wo", (q, h), Split.Q_ROWS), ("mlp_norm", (h,), Split.REPLICATED),
           ("w_gate", (h, m), Split.MLP_COLS), ("w_up", (h, m), Split.MLP_COLS),
           ("w_down", (m, h), Split.MLP_ROWS)]
    if model.qkv_bias:
        out += [("bq", (q,), Split.Q_COLS), ("bk", (kv,), Split.KV_COLS),
                ("bv", (kv,), Split.KV_COLS)]
    if model.o_bias:
        out.append(("bo", (h,), Split.REPLICATED))
    if model.mlp_bias:
        out += [("b_gate", (m,), Split.MLP_COLS), ("b_up", (m,), Split.MLP_COLS),
                ("b_down", (h,), Split.REPLICATED)]
    if model.qk_norm:
        out += [("q_norm", (hd,), Split.REPLICATED), ("k_norm", (hd,), Split.REPLICATED)]
    return out


def model_weights(model: ModelConfig) -> list[tuple[str, tuple[int, ...], Split]]:
    """Every weight of the model with its full shape and split, in plan order."""
    out = [("embed", (model.vocab, model.hidden), Split.VOCAB_ROWS)]
    for i in range(model.layers):
        out += [(f"layers.{i}.{n}", shape, s) for n, shape, s in layer_weights(model)]
    out += [("final_norm", (model.hidden,), Split.REPLICATED),
            ("lm_head", (model.hidden, model.vocab), Split.VOCAB_COLS)]
    return out


def _split_of(model: ModelConfig, name: str) -> Split:
    base = name.split(".")[-1]
    if name.startswith("layers."):
        table = {n: split for n, _, split in layer_weights(model)}
    else:
        table = {"embed": Split.VOCAB_ROWS, "final_norm": Split.REPLICATED,
                 "lm_head": Split.VOCAB_COLS}
    if base not in table:
        raise ConfigError(f"unknown weight symbol {name!r} of model {model.name!r}")
    return table[base]


def shard_shape(shape: tuple[int, ...], split: Split, model: ModelConfig,
                shards: dict) -> list[int]:
    """The per-socket shape of a weight of full ``shape`` under ``split``."""
    hd = model.head_dim
    width = {Split.Q_COLS: shards["heads"] * hd, Split.KV_COLS: shards["kv_heads"] * hd,
             Split.MLP_COLS: shards["intermediate"], Split.VOCAB_COLS: shards["vocab"]}
    rows = {Split.Q_ROWS: shards["heads"] * hd, Split.MLP_ROWS: shards["intermediate"],
            Split.VOCAB_ROWS: shards["vocab"]}
    if split in width:
        return [*shape[:-1], width[split]]
    if split in rows:
        return [rows[split], *shape[1:]]
    return list(shape)


def _cols(full: np.ndarray, lo: int, n: int, padded: int) -> np.ndarray:
    """Columns (the last axis) lo..lo+n of ``full`` zero-padded to ``padded`` columns."""
    if full.shape[-1] < padded:
        pad = np.zeros((*full.shape[:-1], padded), full.dtype)
        pad[..., :full.shape[-1]] = full
        full = pad
    return full[..., lo:lo + n]


def shard_weight(name: str, full: np.ndarray, rank: int, tp: int, model: ModelConfig,
                 shards: dict) -> np.ndarray:
    """This rank's piece of a full weight (the layout of the module docstring)."""
    split = _split_of(model, name)
    hd = model.head_dim
    if split is Split.REPLICATED:
        return full
    if split is Split.Q_COLS:
        hp = shards["heads"] * hd
        return full[..., rank * hp:(rank + 1) * hp]
    if split is Split.Q_ROWS:
        hp = shards["heads"] * hd
        return full[rank * hp:(rank + 1) * hp]
    if split is Split.KV_COLS:
        if tp <= model.kv_heads:
            kp = shards["kv_heads"] * hd
            return full[..., rank * kp:(rank + 1) * kp]
        kv = (rank * shards["heads"]) // (model.heads // model.kv_heads)
        return full[..., kv * hd:(kv + 1) * hd]
    if split is Split.MLP_COLS:
        m = shards["intermediate"]
        return _cols(full, rank * m, m, m * tp)
    if split is Split.MLP_ROWS:
        m = shards["intermediate"]
        return _cols(full.T, rank * m, m, m * tp).T
    v = shards["vocab"]
    if split is Split.VOCAB_ROWS:
        return _cols(full.T, rank * v, v, v * tp).T
    return _cols(full, rank * v, v, v * tp)


def random_weights(model: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Full (unsharded) float32 weights drawn from ``seed``, scaled like a trained model's."""
    rng = np.random.default_rng(seed)
    h = model.hidden
    out = {"embed": rng.standard_normal((model.vocab, h)).astype(np.float32)}
    extras = []
    for i in range(model.layers):
        p = f"layers.{i}."
        for n, shape, _ in layer_weights(model):
            if len(shape) == 2:
                out[p + n] = (rng.standard_normal(shape) / math.sqrt(shape[0])).astype(np.float32)
            elif n in ("attn_norm", "mlp_norm"):
                continue
            else:
                extras.append((p + n, shape))
        out[p + "attn_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        out[p + "mlp_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    out["final_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    out["lm_head"] = (rng.standard_normal((h, model.vocab)) / math.sqrt(h)).astype(np.float32)
    for name, shape in extras:  # biases small, norms near one (drawn last: presets unchanged)
        base = 1.0 if name.endswith("_norm") else 0.0
        out[name] = (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if model.tie_embeddings:
        out["lm_head"] = np.ascontiguousarray(out["embed"].T)
    return out


class LayerContext(Protocol):
    """What a layer's math needs from the engine that runs it."""

    rank: int
    tp: int
    shards: dict

    def w(self, name: str) -> np.ndarray: ...

    def op(self, name: str, fn: Callable[[], object]) -> object: ...

    def allreduce(self, x: np.ndarray) -> np.ndarray: ...

    def kv_cache(self, layer: int) -> np.ndarray: ...

    def rope(self) -> tuple[np.ndarray, float]: ...


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def decoder_layer(model: ModelConfig, ctx: LayerContext, i: int, x: np.ndarray,
                  slots: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """One decoder layer over rows (token at ``positions`` of sequence ``slots``) of the
    residual stream ``x`` (n, hidden); writes the layer's KV cache rows."""
    p = f"layers.{i}."
    sh, hd, w = ctx.shards, model.head_dim, ctx.w
    hp, kvp = sh["heads"], sh["kv_heads"]
    n = len(positions)

    def bias(name: str) -> np.ndarray | float:
        return w(p + name) if (model.qkv_bias if name in ("bq", "bk", "bv") else
                               model.mlp_bias) else 0.0

    xn = ctx.op("attn_norm", lambda: rmsnorm(x, w(p + "attn_norm"), model.norm_eps))
    q, k_, v = ctx.op("qkv_proj", lambda: (xn @ w(p + "wq") + bias("bq"),
                                           xn @ w(p + "wk") + bias("bk"),
                                           xn @ w(p + "wv") + bias("bv")))
    window = model.window(i)

    def attention():
        qh, kh = q.reshape(n, hp, hd), k_.reshape(n, kvp, hd)  # (n, heads, head_dim)
        if model.qk_norm:  # Qwen3: RMSNorm over each head's vector, before RoPE
            qh = rmsnorm(qh, w(p + "q_norm"), model.norm_eps)
            kh = rmsnorm(kh, w(p + "k_norm"), model.norm_eps)
        inv_freq, scale = ctx.rope()
        qh = apply_rope(qh, positions, inv_freq, scale)
        kh = apply_rope(kh, positions, inv_freq, scale)
        cache = ctx.kv_cache(i)  # (2, batch, seq, kv)
        cache[0, slots, positions] = kh.reshape(n, -1)
        cache[1, slots, positions] = v
        group = max(1, hp // kvp)
        out = np.empty((n, hp, hd), np.float32)
        # the rows of one sequence together (a prefill's are many): one score matrix per
        # head over the keys any of them sees, each row masked to its own positions
        for s_j in dict.fromkeys(slots.tolist()):
            rows = np.flatnonzero(slots == s_j)
            pos = positions[rows]
            top = int(pos.max()) + 1
            lo = 0 if window is None else max(0, int(pos.min()) - window + 1)
            keys = cache[0, s_j, lo:top].reshape(top - lo, kvp, hd)
            vals = cache[1, s_j, lo:top].reshape(top - lo, kvp, hd)
            kpos = np.arange(lo, top)
            hidden = kpos[None, :] > pos[:, None]  # a row sees positions <= its own,
            if window is not None:                 # and only the last `window` of them
                hidden |= kpos[None, :] <= pos[:, None] - window
            for h in range(hp):
                kvh = min(h // group, kvp - 1)
                scores = qh[rows, h] @ keys[:, kvh].T / math.sqrt(hd)
                scores[hidden] = -np.inf
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                out[rows, h] = (e / e.sum(axis=1, keepdims=True)) @ vals[:, kvh]
        return out.reshape(n, -1)

    attn = ctx.op("attention", attention)
    o = ctx.op("o_proj", lambda: attn @ w(p + "wo"))
    x = x + ctx.allreduce(o.astype(np.float32)).reshape(n, -1)
    if model.o_bias:
        x = x + w(p + "bo")
    xn = ctx.op("mlp_norm", lambda: rmsnorm(x, w(p + "mlp_norm"), model.norm_eps))
    gu = ctx.op("gate_up", lambda: silu(xn @ w(p + "w_gate") + bias("b_gate"))
                * (xn @ w(p + "w_up") + bias("b_up")))
    d = ctx.op("down_proj", lambda: gu @ w(p + "w_down"))
    x = x + ctx.allreduce(d.astype(np.float32)).reshape(n, -1)
    if model.mlp_bias:
        x = x + w(p + "b_down")
    return x.astype(np.float32)
