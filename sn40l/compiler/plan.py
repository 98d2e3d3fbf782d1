"""Compile a Llama-family model into a per-socket plan: TP sharding, kernels, memory plan.

Tensor parallelism (Megatron style): q/k/v and gate/up projections are column-parallel, o and
down projections row-parallel, so each decoder layer needs one AllReduce after attention and one
after the MLP; the embedding and the LM head are split over the vocabulary (padded to a multiple
of TP), the embedding followed by an AllReduce and the logits by an AllGather. When TP exceeds
the KV heads, each KV head is replicated on ``tp / kv_heads`` sockets.

Memory plan: weights are read-only symbols in HBM; the KV cache and the activations live in HBM
too. When a socket's HBM overflows, symbols move to DDR in order of the smallest bandwidth need
(bytes read per step per byte stored): the embedding table first (one row per token), then the
rest. Not yet done: lifetime-based address sharing of activations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sn40l.compiler.arch.decoder import model_weights, shard_shape
from sn40l.compiler.checkpoint import is_checkpoint, load_config
from sn40l.compiler.cost import kernel_ns
from sn40l.compiler.models import ModelConfig, preset
from sn40l.compiler.types import FusionLevel, Mode, Orchestration
from sn40l.errors import CompileError, ConfigError
from sn40l.hardware.profile import Profile, load_profile

BF16 = 2


@dataclass(frozen=True)
class CompileConfig:
    """What to compile. Checked once by :meth:`validate`; derived values go into the plan."""

    model: str
    tp: int = 8
    nodes: int = 1
    mode: str = "decode"
    batch: int = 1
    seq_len: int = 4096
    fusion: str = "fused"
    orchestration: str = "hardware"
    profile: str = "sn40l"

    def validate(self, model: ModelConfig, profile: Profile) -> None:
        Mode.from_str(self.mode)
        FusionLevel.from_str(self.fusion)
        Orchestration.from_str(self.orchestration)
        if self.tp < 1 or self.nodes < 1 or self.tp % self.nodes:
            raise ConfigError(f"--tp {self.tp} over --nodes {self.nodes}: TP must be >= 1 and "
                              "a multiple of the node count")
        per_node = self.tp // self.nodes
        if per_node > max(profile.layouts):
            raise ConfigError(f"--tp {self.tp} on {self.nodes} node(s) needs {per_node} "
                              f"sockets per node; profile {profile.name!r} has at most "
                              f"{max(profile.layouts)}")
        if model.heads % self.tp:
            raise CompileError(f"model {model.name!r} has {model.heads} attention heads, which "
                               f"TP {self.tp} does not divide; allowed TP: "
                               f"{[t for t in range(1, model.heads + 1) if model.heads % t == 0]}")
        if self.tp > model.kv_heads and self.tp % model.kv_heads:
            raise CompileError(f"TP {self.tp} is not a multiple of the {model.kv_heads} KV heads "
                               f"of {model.name!r}, so they cannot be replicated evenly")
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        if not 1 <= self.seq_len <= model.max_position:
            raise ConfigError(f"--seq-len {self.seq_len} is out of range for {model.name!r}; "
                              f"allowed 1 to {model.max_position}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def shard_shapes(model: ModelConfig, tp: int) -> dict[str, int]:
    """Per-socket sizes under TP (see the module docstring)."""
    kv_per = model.kv_heads // tp if tp <= model.kv_heads else 1
    return {"heads": model.heads // tp, "kv_heads": kv_per,
            "kv_replication": max(1, tp // model.kv_heads),
            "intermediate": _ceil_div(model.intermediate, tp),
            "vocab": _ceil_div(model.vocab, tp), "vocab_padded": _ceil_div(model.vocab, tp) * tp}


def weight_symbols(model: ModelConfig, tp: int) -> list[dict]:
    """Every per-socket weight symbol: name, shape, bytes (BF16), read-only (the weights and
    splits of :func:`sn40l.compiler.arch.decoder.model_weights`)."""
    s = shard_shapes(model, tp)
    out = [{"name": name, "shape": shard_shape(shape, split, model, s)}
           for name, shape, split in model_weights(model)]
    for sym in out:
        n = 1
        for d in sym["shape"]:
            n *= d
        sym.update(bytes=n * BF16, kind="weight", read_only=True)
    return out


def kernels(model: ModelConfig, cfg: CompileConfig, new_tokens: int = 1) -> list[dict]:
    """Kernel descriptions of one step (a decode token or a prefill) on one socket.

    ``new_tokens`` > 1 (decode only): each sequence runs that many tokens in one pass at the
    compiled context, as speculative decoding's verification does; the weights and each
    sequence's KV cache stream once, while math, KV writes and logits scale with the tokens."""
    s = shard_shapes(model, cfg.tp)
    fusion = FusionLevel.from_str(cfg.fusion)
    decode = Mode.from_str(cfg.mode) is Mode.DECODE
    if new_tokens < 1 or (new_tokens > 1 and not decode):
        raise ConfigError(f"new_tokens {new_tokens}: a decode step runs >= 1 token per sequence; "
                          "a prefill runs its whole prompt")
    tokens = cfg.batch * new_tokens if decode else cfg.batch * cfg.seq_len  # new this step
    ctx = cfg.seq_len  # attention context per sequence
    h, hd = model.hidden, model.head_dim
    q, kv, m = s["heads"] * hd, s["kv_heads"] * hd, s["intermediate"]
    act = tokens * h * BF16  # one activation vector per new token
    ar = [act] if cfg.tp > 1 else []
    kv_read = cfg.batch * ctx * 2 * kv * BF16 if decode else 0
    kv_write = tokens * 2 * kv * BF16
    # attention math: scores and weighted sum, per head, over the context
    attn_flops = 4 * tokens * s["heads"] * hd * (ctx if decode else ctx / 2)
    # The unfused baseline (every operator its own kernel, intermediates through HBM) also
    # materializes the attention scores: QK^T writes them, softmax reads and writes them, PV
    # reads them; RoPE reads and writes q and k; SwiGLU and the residual adds are kernels too.
    scores = cfg.batch * s["heads"] * (1 if decode else cfg.seq_len) * ctx * BF16
    rope = 2 * tokens * (q + kv) * BF16
    ops = [  # name, weight bytes, flops, kv bytes, intermediates written+read, collectives,
        #      unfused: device kernels, intermediates written+read
        ("attn_norm", h * BF16, 4 * tokens * h, 0, 2 * act, [], 1, 2 * act),
        ("qkv_proj", h * (q + 2 * kv) * BF16, 2 * tokens * h * (q + 2 * kv), 0,
         tokens * (q + 2 * kv) * BF16 * 2, [], 1, tokens * (q + 2 * kv) * BF16 * 2),
        ("attention", 0, int(attn_flops), kv_read + kv_write, tokens * q * BF16 * 2, [],
         4, rope + 4 * scores + tokens * q * BF16 * 2),  # RoPE, QK^T, softmax, PV
        ("o_proj", q * h * BF16, 2 * tokens * q * h, 0, 2 * act, ar, 2, 5 * act),  # + residual
        ("mlp_norm", h * BF16, 4 * tokens * h, 0, 2 * act, [], 1, 2 * act),
        ("gate_up", 2 * h * m * BF16, 4 * tokens * h * m, 0, tokens * 2 * m * BF16 * 2, [],
         2, tokens * 5 * m * BF16 * 2),  # + SwiGLU (reads gate and up, writes their product)
        ("down_proj", m * h * BF16, 2 * tokens * m * h, 0, 2 * act, ar, 2, 5 * act),
    ]
    out = [{"name": "embed", "layer": -1, "weight_bytes": tokens * h * BF16, "flops": 0,
            "kv_bytes": 0, "act_bytes": act, "allreduce": ar, "allgather": [],
            "program": "embed"}]
    # A fused layer keeps its intermediates in SRAM; when they do not fit, it is split into an
    # attention kernel and an MLP kernel whose hand-over goes through HBM. A GPU profile
    # (execution.fusion_scope: operator) runs even a fused layer as one kernel per operator
    # (its own fused epilogues: attention with RoPE, gate/up with SwiGLU), intermediates in HBM.
    profile = load_profile(cfg.profile)
    sram = profile.tier("sram").capacity
    live = max(o[4] for o in ops)  # the largest intermediate written and read back
    parts = [ops] if live <= sram else [ops[:4], ops[4:]]
    for i in range(model.layers):
        if fusion is FusionLevel.FUSED and profile.fusion_scope == "decoder":
            for j, part in enumerate(parts):
                suffix = "" if len(parts) == 1 else (".attn", ".mlp")[j]
                out.append({"name": f"decoder.{i}{suffix}", "layer": i,
                            "weight_bytes": sum(o[1] for o in part),
                            "flops": sum(o[2] for o in part),
                            "kv_bytes": sum(o[3] for o in part),
                            "act_bytes": 0 if len(parts) == 1 else 2 * act,
                            "allreduce": [b for o in part for b in o[5]], "allgather": [],
                            "ops": [o[0] for o in part], "program": f"decoder{suffix}"})
        elif fusion is FusionLevel.FUSED:
            out += [{"name": f"layers.{i}.{o[0]}", "layer": i, "weight_bytes": o[1],
                     "flops": o[2], "kv_bytes": o[3], "act_bytes": o[4], "allreduce": o[5],
                     "allgather": [], "program": o[0]} for o in ops]
        else:
            out += [{"name": f"layers.{i}.{o[0]}", "layer": i, "weight_bytes": o[1],
                     "flops": o[2], "kv_bytes": o[3], "act_bytes": o[7], "allreduce": o[5],
                     "allgather": [], "launches": o[6], "program": o[0]} for o in ops]
    last = cfg.batch * new_tokens  # logits of the last position of each sequence (every
    # position of a multi-token verification)
    out.append({"name": "lm_head", "layer": model.layers,
                "weight_bytes": (h + h * s["vocab"]) * BF16, "flops": 2 * last * h * s["vocab"],
                "kv_bytes": 0, "act_bytes": 0, "allreduce": [],
                "allgather": [last * s["vocab"] * 4] if cfg.tp > 1 else [],
                "program": "lm_head"})
    for k, prev in zip(out, out[-1:] + out[:-1]):  # steps repeat: the first follows the last
        k["reload"] = k["program"] != prev["program"]
    return out


def memory_plan(model: ModelConfig, cfg: CompileConfig, profile: Profile) -> dict:
    """Symbols per socket with their tier; HBM overflow spills the smallest bandwidth need."""
    s = shard_shapes(model, cfg.tp)
    syms = weight_symbols(model, cfg.tp)
    kv = s["kv_heads"] * model.head_dim
    tokens = cfg.batch if Mode.from_str(cfg.mode) is Mode.DECODE else cfg.batch * cfg.seq_len
    for i in range(model.layers):
        syms.append({"name": f"layers.{i}.kv_cache", "shape": [2, cfg.batch, cfg.seq_len, kv],
                     "bytes": 2 * cfg.batch * cfg.seq_len * kv * BF16, "kind": "kv",
                     "read_only": False})
    width = max(model.hidden, s["heads"] * model.head_dim, 2 * s["intermediate"], s["vocab"])
    syms.append({"name": "activations", "shape": [2, tokens, width],
                 "bytes": 2 * tokens * width * 4, "kind": "activation", "read_only": False})
    per_step = {"embed": cfg.batch * model.hidden * BF16}  # one row per token is read

    def need(sym: dict) -> float:  # bytes read per step per byte stored
        return per_step.get(sym["name"], sym["bytes"]) / max(sym["bytes"], 1)

    hbm_cap = profile.tier("hbm").capacity
    for sym in syms:
        sym["tier"] = "hbm"
    used = sum(x["bytes"] for x in syms)
    for sym in sorted(syms, key=need):
        if used <= hbm_cap:
            break
        if sym["kind"] == "activation":
            continue
        sym["tier"] = "ddr"
        used -= sym["bytes"]
    hbm = sum(x["bytes"] for x in syms if x["tier"] == "hbm")
    ddr = sum(x["bytes"] for x in syms if x["tier"] == "ddr")
    return {"symbols": syms, "hbm_bytes": hbm, "ddr_bytes": ddr,
            "fits_hbm": hbm <= hbm_cap, "fits": hbm <= hbm_cap and
            ddr <= profile.tier("ddr").capacity}


@dataclass(frozen=True)
class Estimate:
    """Modeled time of one step from the cost model (not from running on sockets)."""

    step_ns: int
    kernels: int  # device kernels launched per step (a description may stand for several)
    hbm_bytes_per_step: int

    def to_dict(self) -> dict:
        return asdict(self)


def estimate(model: ModelConfig, cfg: CompileConfig, profile: Profile,
             ks: list[dict]) -> Estimate:
    fusion, orch = FusionLevel.from_str(cfg.fusion), Orchestration.from_str(cfg.orchestration)
    cross = cfg.nodes > 1
    step = sum(kernel_ns(k, profile, fusion, orch, cfg.tp, cross) for k in ks)
    stream = sum(k["weight_bytes"] + k["kv_bytes"] + k["act_bytes"] for k in ks)
    return Estimate(step, sum(k.get("launches", 1) for k in ks), stream)


SEGMENT_KINDS = (("weights", "weight", "bf16"), ("kv", "kv", "bf16"),
                 ("activations", "activation", "fp32"))


def segments(memory: dict) -> list[dict]:
    """A plan's per-socket symbols packed into three segments by kind: ``weights``
    (read-only), ``kv`` (the KV caches: state that outlives a step) and ``activations``
    (scratch). Each symbol sits at an element offset of its segment, in plan order.

    A runtime that moves a whole model between tiers (the CoE's DDR -> HBM expert switch)
    moves these segments, each as one contiguous region, instead of hundreds of symbols.
    """
    out = []
    for seg, kind, dtype in SEGMENT_KINDS:
        index: dict[str, tuple[int, tuple[int, ...]]] = {}
        numel = 0
        for sym in memory["symbols"]:
            if sym["kind"] != kind:
                continue
            n = 1
            for d in sym["shape"]:
                n *= d
            index[sym["name"]] = (numel, tuple(sym["shape"]))
            numel += n
        itemsize = 4 if dtype == "fp32" else BF16
        out.append({"name": seg, "kind": kind, "dtype": dtype, "numel": numel,
                    "bytes": numel * itemsize, "read_only": kind == "weight",
                    "symbols": index})
    return out


def compile_plan(cfg: CompileConfig, model: ModelConfig | None = None) -> dict:
    """The whole plan as plain data (what the .pef artifact stores). ``model`` compiles a
    shape that is neither a preset nor a checkpoint (e.g. the CoE router); ``cfg.model`` then
    only names it."""
    if model is None:
        model = load_config(cfg.model) if is_checkpoint(cfg.model) else preset(cfg.model)
    profile = load_profile(cfg.profile)
    cfg.validate(model, profile)
    ks = kernels(model, cfg)
    plan = memory_plan(model, cfg, profile)
    est = estimate(model, cfg, profile, ks)
    return {"config": asdict(cfg), "model": model.to_plan(),
            "checkpoint": model.extra.get("checkpoint"),
            "profile": profile.name, "shards": shard_shapes(model, cfg.tp),
            "kernels": ks, "memory": plan, "estimate": est.to_dict()}
