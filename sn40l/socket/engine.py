"""The tile engine of one socket: runs a compiled Llama plan's decode steps on this socket's
weight shards, for real (numpy, float32) on materialized weights and by shapes alone on phantom
ones, and advances the socket's virtual clock per kernel from the compiler's cost model.

Tensor parallelism goes through an injected communicator (anything with ``allreduce`` and
``allgather`` of :class:`~sn40l.socket.tensor.Tensor`), so this module never imports the
collectives. Collective time is not estimated here: it emerges from the messages the
communicator exchanges, which move the same clock.

Timing of a kernel starting at ``t0``: its math and collectives run (the collectives move the
clock to ``t1``), then it ends at ``launch + max(t0 + memory, t1 + compute)`` when fused (weight
streaming overlaps compute and collectives) or ``launch + max(memory, compute)`` before its
collectives when unfused.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from sn40l.compiler.cost import compute_ns, hbm_ns, launch_ns
from sn40l.compiler.models import ModelConfig, RopeScaling
from sn40l.compiler.types import FusionLevel, Orchestration
from sn40l.errors import ConfigError
from sn40l.socket.device import Socket
from sn40l.socket.tensor import Tensor


class Comm(Protocol):
    """What the engine needs from a communicator."""

    def allreduce(self, t: Tensor, op: str = "sum") -> Tensor: ...

    def allgather(self, t: Tensor) -> Tensor: ...


def model_from_plan(plan: dict) -> ModelConfig:
    m = dict(plan["model"])
    if m.get("rope_scaling"):
        m["rope_scaling"] = RopeScaling(**m["rope_scaling"])
    return ModelConfig(**m)


def rope_frequencies(model: ModelConfig) -> np.ndarray:
    """Inverse frequencies of RoPE, with Llama 3.1's scaling when the model has it."""
    hd = model.head_dim
    inv = 1.0 / (model.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    sc = model.rope_scaling
    if sc is None:
        return inv
    low_wl = sc.original_max_position / sc.low_freq_factor
    high_wl = sc.original_max_position / sc.high_freq_factor
    wl = 2 * math.pi / inv
    smooth = (sc.original_max_position / wl - sc.low_freq_factor) / (
        sc.high_freq_factor - sc.low_freq_factor)
    scaled = np.where(wl > low_wl, inv / sc.factor, inv)
    mid = (wl <= low_wl) & (wl >= high_wl)
    return np.where(mid, (1 - smooth) * inv / sc.factor + smooth * inv, scaled)


def shard_weight(name: str, full: np.ndarray, rank: int, tp: int, model: ModelConfig,
                 shards: dict) -> np.ndarray:
    """This rank's piece of a full weight (layout of :mod:`sn40l.compiler.plan`)."""
    hd = model.head_dim
    base = name.split(".")[-1]
    if base in ("attn_norm", "mlp_norm", "final_norm"):
        return full
    if base == "wq":
        hp = shards["heads"] * hd
        return full[:, rank * hp:(rank + 1) * hp]
    if base == "wo":
        hp = shards["heads"] * hd
        return full[rank * hp:(rank + 1) * hp, :]
    if base in ("wk", "wv"):
        if tp <= model.kv_heads:
            kp = shards["kv_heads"] * hd
            return full[:, rank * kp:(rank + 1) * kp]
        group = model.heads // model.kv_heads
        kv = (rank * shards["heads"]) // group
        return full[:, kv * hd:(kv + 1) * hd]
    if base in ("w_gate", "w_up", "w_down"):
        m = shards["intermediate"]
        if base == "w_down":
            padded = np.zeros((m * tp, full.shape[1]), full.dtype)
            padded[:full.shape[0]] = full
            return padded[rank * m:(rank + 1) * m]
        padded = np.zeros((full.shape[0], m * tp), full.dtype)
        padded[:, :full.shape[1]] = full
        return padded[:, rank * m:(rank + 1) * m]
    v = shards["vocab"]
    if base == "embed":
        padded = np.zeros((v * tp, full.shape[1]), full.dtype)
        padded[:full.shape[0]] = full
        return padded[rank * v:(rank + 1) * v]
    if base == "lm_head":
        padded = np.zeros((full.shape[0], v * tp), full.dtype)
        padded[:, :full.shape[1]] = full
        return padded[:, rank * v:(rank + 1) * v]
    raise ConfigError(f"unknown weight symbol {name!r}")


def random_weights(model: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """Full (unsharded) float32 weights drawn from ``seed``, scaled like a trained model's."""
    rng = np.random.default_rng(seed)
    h, hd, kv = model.hidden, model.head_dim, model.kv_heads * model.head_dim
    out = {"embed": rng.standard_normal((model.vocab, h)).astype(np.float32)}
    for i in range(model.layers):
        for n, shape in (("wq", (h, h)), ("wk", (h, kv)), ("wv", (h, kv)), ("wo", (h, h)),
                         ("w_gate", (h, model.intermediate)), ("w_up", (h, model.intermediate)),
                         ("w_down", (model.intermediate, h))):
            out[f"layers.{i}.{n}"] = (rng.standard_normal(shape) / math.sqrt(shape[0])
                                      ).astype(np.float32)
        out[f"layers.{i}.attn_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        out[f"layers.{i}.mlp_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    out["final_norm"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    out["lm_head"] = (rng.standard_normal((h, model.vocab)) / math.sqrt(h)).astype(np.float32)
    del hd
    return out


class TileEngine:
    """Decode steps of one compiled model on one socket. ``__init__`` only stores."""

    def __init__(self, socket: Socket, plan: dict, rank: int, tag: str, comm: Comm | None):
        self.socket = socket
        self.plan = plan
        self.rank = rank
        self.tp = int(plan["config"]["tp"])
        self.tag = tag
        self.comm = comm
        self.model = model_from_plan(plan)
        self.shards = plan["shards"]
        self.fusion = FusionLevel.from_str(plan["config"]["fusion"])
        self.orch = Orchestration.from_str(plan["config"]["orchestration"])
        self.max_seq = int(plan["config"]["seq_len"])
        self.inv_freq = rope_frequencies(self.model)
        self.phantom = False
        self._kv: list[np.ndarray] = []
        self._prefill: dict[int, list[dict]] = {}

    # -- weights --------------------------------------------------------------------------
    def load(self, full: dict[str, np.ndarray] | None, tier: str = "hbm") -> int:
        """Place this socket's shards (phantom when ``full`` is None); returns bytes placed."""
        self.phantom = full is None
        placed = 0
        kvd = self.shards["kv_heads"] * self.model.head_dim
        self._kv = []
        for sym in self.plan["memory"]["symbols"]:
            name = f"{self.tag}/{sym['name']}"
            where = tier if sym["tier"] == "hbm" else "ddr"
            if sym["kind"] == "weight":
                if full is None:
                    t = Tensor.phantom(sym["shape"], "bf16")
                else:
                    shard = shard_weight(sym["name"], full[sym["name"]], self.rank, self.tp,
                                         self.model, self.shards)
                    t = Tensor.of(np.ascontiguousarray(shard), "bf16")
                self.socket.write(name, where, t, owner=self.tag, read_only=True)
            else:  # KV caches and activations: device-side, written by the kernels
                dt = "bf16" if sym["kind"] == "kv" else "fp32"
                region = self.socket.alloc(name, where, tuple(sym["shape"]), dt,
                                           owner=self.tag, phantom=self.phantom)
                t = region.tensor
                if sym["kind"] == "kv" and not self.phantom:
                    self._kv.append(t.data.reshape(2, -1, kvd)[:, : self.max_seq])
            placed += t.nbytes
        return placed

    def _w(self, name: str) -> np.ndarray:
        region = self.socket.region(f"{self.tag}/{name}")
        if str(region.tier) not in ("hbm", "sram"):
            raise ConfigError(f"weight {name!r} of {self.tag!r} is in {region.tier}, not HBM; "
                              "copy it to HBM before running")
        return region.tensor.data

    # -- time -----------------------------------------------------------------------------
    def _finish(self, kernel: dict, t0: int, t1: int) -> None:
        mem = hbm_ns(kernel["weight_bytes"] + kernel["kv_bytes"] + kernel["act_bytes"],
                     self.socket.profile, self.fusion)
        cmp_ns = compute_ns(kernel["flops"], self.socket.profile, self.fusion)
        end = launch_ns(self.socket.profile, self.orch) + max(t0 + mem, t1 + cmp_ns)
        self.socket.clock.record(kernel["name"], "kernel", "compute", t0, end,
                                 bytes=kernel["weight_bytes"] + kernel["kv_bytes"])
        self.socket.clock.advance_to(end)

    def _allreduce(self, x: np.ndarray | None, n: int) -> np.ndarray | None:
        if self.tp == 1:
            return x
        t = Tensor.phantom((n,), "bf16") if x is None else Tensor.of(x, "bf16")
        out = self.comm.allreduce(t)
        return None if out.is_phantom else out.data

    # -- one step: a decode token, or a whole prompt (prefill) ----------------------------
    def _kernels(self, n: int) -> list[dict]:
        """The compiled decode kernels for one token; prefill kernels for ``n`` prompt tokens
        (the same model and TP, priced by the compiler's cost model for ``n`` tokens)."""
        if n == 1:
            return self.plan["kernels"]
        if n not in self._prefill:
            from sn40l.compiler.plan import CompileConfig, kernels

            cfg = dict(self.plan["config"], mode="prefill", seq_len=n)
            self._prefill[n] = kernels(self.model, CompileConfig(**cfg))
        return self._prefill[n]

    def step(self, tokens: "int | list[int]", pos: int) -> np.ndarray | None:
        """Run ``tokens`` at positions ``pos, pos+1, ...``; returns the last token's logits
        (unpadded), or None for phantom weights."""
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        n = len(tokens)
        if pos < 0 or pos + n > self.max_seq:
            raise ConfigError(f"positions {pos}..{pos + n - 1} exceed the compiled sequence "
                              f"length {self.max_seq}")
        m, sh, real = self.model, self.shards, not self.phantom
        kernels = self._kernels(n)
        clock = self.socket.clock
        # embedding: vocab-parallel lookup, summed over the group
        t0 = clock.now
        x = None
        if real:
            lo = self.rank * sh["vocab"]
            x = np.zeros((n, m.hidden), np.float32)
            for j, tok in enumerate(tokens):
                if lo <= tok < lo + sh["vocab"]:
                    x[j] = self._w("embed")[tok - lo]
        x = self._allreduce(x, n * m.hidden)
        self._finish(kernels[0], t0, clock.now)
        ki = 1
        positions = np.arange(pos, pos + n)
        for i in range(m.layers):
            layer = []
            while kernels[ki]["layer"] == i:
                layer.append(kernels[ki])
                ki += 1
            if self.fusion is FusionLevel.FUSED:  # one kernel, or two when SRAM was too small
                t0 = clock.now
                x = self._layer(i, x, positions)
                for k in layer:
                    self._finish(k, t0, clock.now)
                    t0 = clock.now
            else:
                x = self._layer(i, x, positions, layer)
        t0 = clock.now
        logits = None
        if real:
            xn = _rmsnorm(x[-1], self._w("final_norm"), m.norm_eps)
            logits = xn @ self._w("lm_head")
        if self.tp > 1:
            t = (Tensor.phantom((sh["vocab"],), "fp32") if logits is None
                 else Tensor.of(logits.astype(np.float32), "fp32"))
            full = self.comm.allgather(t)
            logits = None if full.is_phantom else full.data
        self._finish(kernels[ki], t0, clock.now)
        return None if logits is None else logits[:m.vocab]

    def _layer(self, i: int, x: np.ndarray | None, positions: np.ndarray,
               unfused: list[dict] | None = None) -> np.ndarray | None:
        m, sh, clock = self.model, self.shards, self.socket.clock
        p = f"layers.{i}."
        hd, hp, kvp = m.head_dim, sh["heads"], sh["kv_heads"]
        n = len(positions)

        def timed(k: int, fn):
            if unfused is None:
                return fn()
            t0 = clock.now
            out = fn()
            self._finish(unfused[k], t0, t0)
            return out

        if x is None:  # phantom: shapes only, collectives on metadata
            for k in range(7):
                timed(k, lambda: None)
                if k in (3, 6):
                    self._allreduce(None, n * m.hidden)
            return None
        xn = timed(0, lambda: _rmsnorm(x, self._w(p + "attn_norm"), m.norm_eps))
        q, k_, v = timed(1, lambda: (xn @ self._w(p + "wq"), xn @ self._w(p + "wk"),
                                     xn @ self._w(p + "wv")))

        def attention():
            qh = _rope(q.reshape(n, hp, hd), positions, self.inv_freq)  # (n, hp, hd)
            kh = _rope(k_.reshape(n, kvp, hd), positions, self.inv_freq)
            cache = self._kv[i]
            cache[0, positions] = kh.reshape(n, -1)
            cache[1, positions] = v
            last = int(positions[-1]) + 1
            keys = cache[0, :last].reshape(last, kvp, hd)
            vals = cache[1, :last].reshape(last, kvp, hd)
            group = max(1, hp // kvp)
            out = np.empty((n, hp, hd), np.float32)
            for j, p_j in enumerate(positions):  # causal: token j sees positions <= p_j
                for h in range(hp):
                    kvh = min(h // group, kvp - 1)
                    scores = keys[:p_j + 1, kvh] @ qh[j, h] / math.sqrt(hd)
                    w = np.exp(scores - scores.max())
                    out[j, h] = (w / w.sum()) @ vals[:p_j + 1, kvh]
            return out.reshape(n, -1)

        attn = timed(2, attention)
        o = timed(3, lambda: attn @ self._w(p + "wo"))
        x = x + self._allreduce(o.astype(np.float32), n * m.hidden).reshape(n, -1)
        xn = timed(4, lambda: _rmsnorm(x, self._w(p + "mlp_norm"), m.norm_eps))
        gu = timed(5, lambda: _silu(xn @ self._w(p + "w_gate")) * (xn @ self._w(p + "w_up")))
        d = timed(6, lambda: gu @ self._w(p + "w_down"))
        return x + self._allreduce(d.astype(np.float32), n * m.hidden).reshape(n, -1)


def _rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def _rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate (tokens, heads, head_dim) at ``positions``; halves layout (as in HF Llama)."""
    ang = positions[:, None] * inv_freq[None, :]  # (tokens, head_dim / 2)
    cos = np.cos(ang).astype(np.float32)[:, None, :]
    sin = np.sin(ang).astype(np.float32)[:, None, :]
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
