"""RoPE frequencies of every supported ``rope_type``, as transformers computes them
(``modeling_rope_utils``, 5.x): inverse frequencies of the head dimension's pairs and the
attention factor that scales cos and sin.

* ``default``: ``1 / theta ** (2i / d)``;
* ``linear``: default / factor;
* ``dynamic`` (NTK): for a step whose largest position is ``p``, with ``n = max(p + 1,
  max_position)``: theta grows to ``theta * (factor * n / max_position - (factor - 1)) **
  (d / (d - 2))``. transformers recomputes it per forward from the step's positions and keeps
  the keys already cached as they were rotated; the engine does the same;
* ``llama3``: Meta's Llama 3.1 wavelength bands (low/high frequency factors);
* ``yarn``: interpolation/extrapolation blend over the correction range of ``beta_fast`` /
  ``beta_slow`` rotations, attention factor ``0.1 ln(factor) + 1`` unless given.

Frequencies are computed in float32 as transformers does, so angles agree to the last bits.
"""

from __future__ import annotations

import math

import numpy as np

from sn40l.compiler.models import ModelConfig, RopeType


def _base(theta: float, dim: int) -> np.ndarray:
    exps = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(theta) ** exps)).astype(np.float32)


def rope_frequencies(model: ModelConfig, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """(inverse frequencies (head_dim / 2,), attention factor) of ``model`` for a step whose
    positions reach ``seq_len`` (only ``dynamic`` depends on it)."""
    dim, sc = model.head_dim, model.rope_scaling
    kind = RopeType.DEFAULT if sc is None else sc.type
    if kind is RopeType.DEFAULT:
        return _base(model.rope_theta, dim), 1.0
    if kind is RopeType.LINEAR:
        return (_base(model.rope_theta, dim) / np.float32(sc.factor)).astype(np.float32), 1.0
    if kind is RopeType.DYNAMIC:
        orig = sc.original_max_position
        n = max(seq_len or orig, orig)
        theta = model.rope_theta * ((sc.factor * n / orig) - (sc.factor - 1)) ** (dim / (dim - 2))
        return _base(theta, dim), 1.0
    if kind is RopeType.LLAMA3:
        inv = _base(model.rope_theta, dim)
        f = np.float32(sc.factor)
        low_wl = np.float32(sc.original_max_position / sc.low_freq_factor)
        high_wl = np.float32(sc.original_max_position / sc.high_freq_factor)
        wl = np.float32(2 * math.pi) / inv
        scaled = np.where(wl > low_wl, inv / f, inv).astype(np.float32)
        smooth = ((np.float32(sc.original_max_position) / wl - np.float32(sc.low_freq_factor))
                  / np.float32(sc.high_freq_factor - sc.low_freq_factor))
        mid = ~(wl < high_wl) & ~(wl > low_wl)
        out = np.where(mid, (1 - smooth) * scaled / f + smooth * scaled, scaled)
        return out.astype(np.float32), 1.0
    return _yarn(model, dim)


def _yarn(model: ModelConfig, dim: int) -> tuple[np.ndarray, float]:
    sc, base = model.rope_scaling, model.rope_theta

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = sc.attention_factor
    if att is None:
        att = (mscale(sc.factor, sc.mscale) / mscale(sc.factor, sc.mscale_all_dim)
               if sc.mscale and sc.mscale_all_dim else mscale(sc.factor))

    def corr_dim(rot: float) -> float:
        return (dim * math.log(sc.original_max_position / (rot * 2 * math.pi))) / (
            2 * math.log(base))

    low, high = corr_dim(sc.beta_fast), corr_dim(sc.beta_slow)
    if sc.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrap = (1 - ramp).astype(np.float32)
    pos = (np.float32(base) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim)))
    inv_extra = np.float32(1.0) / pos
    inv_inter = np.float32(1.0) / (np.float32(sc.factor) * pos)
    return (inv_inter * (1 - extrap) + inv_extra * extrap).astype(np.float32), float(att)


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray,
               scale: float = 1.0) -> np.ndarray:
    """Rotate (tokens, heads, head_dim) at ``positions``; halves layout (as in HF Llama);
    cos and sin carry the attention factor ``scale``."""
    ang = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # (tokens, head_dim / 2)
    cos = (np.cos(ang) * np.float32(scale)).astype(np.float32)[:, None, :]
    sin = (np.sin(ang) * np.float32(scale)).astype(np.float32)[:, None, :]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
