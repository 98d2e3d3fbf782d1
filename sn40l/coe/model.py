"""What the CoE runtime needs to know about one expert model: its shape, its per-socket
segments, a numpy reference of the small materialized model, and its modeled cost.

The runtime is written against :class:`ExpertModel`; shapes come from the compiler's presets
and, for models the compiler does not ship, from :data:`FALLBACK_SHAPES` (Llama-family shapes
from the models' published configs).

The small materialized expert (:class:`TinyLM`) is deliberately simple so that its reference and
its tensor-parallel execution are independent computations: ``x = E[last] + mean(E[context])``,
then per
layer ``x = x + tanh(x @ W1) @ W2`` with W1 column-sharded and W2 row-sharded over the TP group
(the partial sums are what an AllReduce adds), ``logits = U @ x`` with an untied output matrix U,
greedy next token, which joins the context.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from sn40l.compiler.models import PRESETS as COMPILER_PRESETS
from sn40l.errors import ConfigError
from sn40l.hardware.profile import Profile


@dataclass(frozen=True)
class ModelShape:
    """Llama-family shape: enough to size weights and KV caches and to model time."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def params(self) -> int:
        """Parameters with untied input/output embeddings, as in Llama 2."""
        attn = self.hidden * (2 * self.hidden + 2 * self.kv_dim)
        per_layer = attn + 3 * self.hidden * self.mlp + 2 * self.hidden
        return 2 * self.vocab * self.hidden + self.hidden + self.layers * per_layer


# Published configs (HF config.json of each model) the compiler does not ship, and the CoE's
# materialized test expert.
FALLBACK_SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("llama2-7b", 32, 4096, 32, 32, 11008, 32000),
    ModelShape("llama2-13b", 40, 5120, 40, 40, 13824, 32000),
    ModelShape("llama2-70b", 80, 8192, 64, 8, 28672, 32000),
    ModelShape("llama3-8b", 32, 4096, 32, 8, 14336, 128256),
    ModelShape("mistral-7b", 32, 4096, 32, 8, 14336, 32000),
    ModelShape("tiny", 2, 64, 4, 4, 128, 512),  # the materialized test expert (TinyLM)
)}


def model_shape(preset: str) -> ModelShape:
    """The shape of a named preset: the CoE's own ``tiny`` test expert (:class:`TinyLM`), then
    the compiler's presets, then the published shapes the compiler does not ship."""
    if preset == "tiny":
        return FALLBACK_SHAPES["tiny"]
    cfg = COMPILER_PRESETS.get(preset)
    if cfg is not None:
        return ModelShape(preset, cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads,
                          cfg.intermediate, cfg.vocab)
    if preset in FALLBACK_SHAPES:
        return FALLBACK_SHAPES[preset]
    known = sorted(set(FALLBACK_SHAPES) | set(COMPILER_PRESETS))
    raise ConfigError(f"unknown expert preset {preset!r}; presets: {', '.join(known)}")


def shape_from_hf_config(path: str) -> ModelShape:
    """Shape from a Hugging Face checkpoint directory's config.json."""
    import json
    from pathlib import Path

    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"checkpoint {path!r} has no config.json")
    cfg = json.loads(cfg_path.read_text())
    try:
        heads = cfg["num_attention_heads"]
        return ModelShape(Path(path).name, cfg["num_hidden_layers"], cfg["hidden_size"], heads,
                          cfg.get("num_key_value_heads", heads), cfg["intermediate_size"],
                          cfg["vocab_size"])
    except KeyError as exc:
        raise ConfigError(f"checkpoint {path!r}: config.json lacks {exc.args[0]!r}") from None


# -- tokens -------------------------------------------------------------------------------

def word_token(word: str, vocab: int) -> int:
    """A stable token id for a word (BLAKE2b of the lower-cased word, mod vocab)."""
    digest = hashlib.blake2b(word.lower().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % vocab


def tokenize(prompt: "str | list[int]", vocab: int) -> list[int]:
    """Whitespace tokenizer for demo prompts; a list of ids passes through (mod vocab)."""
    if isinstance(prompt, str):
        ids = [word_token(w, vocab) for w in prompt.split()]
    else:
        ids = [int(t) % vocab for t in prompt]
    if not ids:
        raise ConfigError("an empty prompt cannot be routed or run; give at least one token")
    return ids


# -- the small materialized expert ---------------------------------------------------------

class TinyLM:
    """Reference and TP execution of the small materialized expert (see module docstring).

    Per socket the weights are one flat vector: the embedding (replicated), then per layer the
    socket's W1 column block and W2 row block.
    """

    def __init__(self, shape: ModelShape, tp: int):
        if shape.mlp % tp:
            raise ConfigError(f"TinyLM MLP width {shape.mlp} must divide by TP {tp}")
        self.shape, self.tp = shape, tp

    def full_weights(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        s = self.shape
        out = {"emb": rng.standard_normal((s.vocab, s.hidden)).astype(np.float32),
               "out": rng.standard_normal((s.vocab, s.hidden)).astype(np.float32)}
        for i in range(s.layers):
            out[f"w1.{i}"] = (rng.standard_normal((s.hidden, s.mlp)) / math.sqrt(s.hidden)
                              ).astype(np.float32)
            out[f"w2.{i}"] = (rng.standard_normal((s.mlp, s.hidden)) / math.sqrt(s.mlp)
                              ).astype(np.float32)
        return out

    def shard_numel(self) -> int:
        s = self.shape
        return 2 * s.vocab * s.hidden + s.layers * 2 * s.hidden * (s.mlp // self.tp)

    def pack_shard(self, full: dict[str, np.ndarray], rank: int) -> np.ndarray:
        s, m = self.shape, self.shape.mlp // self.tp
        cols = slice(rank * m, (rank + 1) * m)
        parts = [full["emb"].ravel(), full["out"].ravel()]
        for i in range(s.layers):
            parts += [full[f"w1.{i}"][:, cols].ravel(), full[f"w2.{i}"][cols, :].ravel()]
        return np.concatenate(parts)

    def _unpack(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                 list[tuple[np.ndarray, np.ndarray]]]:
        s, m = self.shape, self.shape.mlp // self.tp
        pos = 2 * s.vocab * s.hidden
        emb = flat[:pos // 2].reshape(s.vocab, s.hidden)
        out = flat[pos // 2:pos].reshape(s.vocab, s.hidden)
        layers = []
        for _ in range(s.layers):
            w1 = flat[pos:pos + s.hidden * m].reshape(s.hidden, m)  # (d, m/tp) column block
            pos += s.hidden * m
            w2 = flat[pos:pos + m * s.hidden].reshape(m, s.hidden)  # (m/tp, d) row block
            pos += m * s.hidden
            layers.append((w1, w2))
        return emb, out, layers

    @staticmethod
    def _greedy(emb, unemb, layer_fn, prompt: list[int], max_new_tokens: int) -> list[int]:
        total = emb[prompt].sum(axis=0)  # (d,)
        count, last = len(prompt), prompt[-1]
        out = []
        for _ in range(max_new_tokens):
            x = layer_fn(emb[last] + total / count)  # (d,)
            last = int(np.argmax(unemb @ x))  # (V,) logits; ties go to the lowest id
            out.append(last)
            total = total + emb[last]
            count += 1
        return out

    def reference(self, full: dict[str, np.ndarray], prompt: list[int],
                  max_new_tokens: int) -> list[int]:
        """Single-process, unsharded reference: the oracle for TP execution."""
        def layers(x):
            for i in range(self.shape.layers):
                x = x + np.tanh(x @ full[f"w1.{i}"]) @ full[f"w2.{i}"]
            return x
        return self._greedy(full["emb"], full["out"], layers, prompt, max_new_tokens)

    def run_sharded(self, shards: list[np.ndarray], prompt: list[int],
                    max_new_tokens: int) -> list[int]:
        """Execution from the per-socket shards: each socket's partial, summed (AllReduce)."""
        unpacked = [self._unpack(f) for f in shards]
        emb, unemb = unpacked[0][0], unpacked[0][1]

        def layers(x):
            for i in range(self.shape.layers):
                x = x + sum(np.tanh(x @ u[2][i][0]) @ u[2][i][1] for u in unpacked)
            return x
        return self._greedy(emb, unemb, layers, prompt, max_new_tokens)


# -- sizes ---------------------------------------------------------------------------------

def weight_numel_per_socket(shape: ModelShape, tp: int) -> int:
    """Weight elements one socket of a TP group holds (all weights split evenly, rounded up).
    Known error: norms and embeddings replicated by a real TP plan are a few MB more."""
    if shape.name == "tiny":
        return TinyLM(shape, tp).shard_numel()
    return -(-shape.params // tp)


def kv_numel_per_socket(shape: ModelShape, tp: int, batch: int, context: int) -> int:
    """KV-cache elements per socket: K and V, every layer, kv_dim/tp columns, batch x context."""
    return 2 * shape.layers * -(-shape.kv_dim // tp) * batch * context


# -- modeled time (fallback roofline until the compiler's artifacts give it) -----------------

def _allreduce_ns(profile: Profile, nbytes: int, tp: int) -> int:
    """AllReduce of ``nbytes`` over ``tp`` sockets on the P2P link, the faster of two algorithms
    (as a communicator chooses by size, DESIGN.md): ring, 2(tp-1) steps of nbytes/tp each
    (Patarasuk & Yuan 2009), and recursive doubling, log2(tp) steps of the whole message
    (Thakur et al. 2005), which wins for the small activations of decode."""
    if tp <= 1:
        return 0
    link = profile.link("p2p")
    steps = 2 * (tp - 1)
    ring = steps * link.latency_ns + -(-steps * nbytes * 10**9 // (tp * link.bandwidth))
    rounds = (tp - 1).bit_length()
    doubling = rounds * (link.latency_ns + -(-nbytes * 10**9 // link.bandwidth))
    return min(ring, doubling)


def step_ns(profile: Profile, shape: ModelShape, tp: int, batch: int, tokens: int,
            context: int) -> int:
    """Modeled time of one forward step over ``tokens`` new tokens per sequence of a batch.

    Fused dataflow (DESIGN.md, virtual time): max(weights + KV bytes / effective HBM bandwidth,
    compute + communication chain) plus one hardware-orchestrated launch per decoder layer.
    Terms: HBM bandwidth x ``efficiency.hbm_fused``; 2 FLOPs per parameter per token at
    ``compute.bf16`` x ``efficiency.compute_fused``; two AllReduces of the activations per layer.
    Known error: attention FLOPs over the context are ignored (a few % at short contexts).
    """
    hbm = profile.tier("hbm")
    w_bytes = weight_numel_per_socket(shape, tp) * 2
    kv_bytes = kv_numel_per_socket(shape, tp, batch, context) * 2
    mem_ns = -(-(w_bytes + kv_bytes) * 10**9
               // int(hbm.bandwidth * profile.value("efficiency.hbm_fused")))
    flops = 2 * (shape.params // tp) * batch * tokens
    compute_ns = -(-flops * 10**9
                   // int(profile.bf16_flops * profile.value("efficiency.compute_fused")))
    act_bytes = batch * tokens * shape.hidden * 2
    comm_ns = 2 * shape.layers * _allreduce_ns(profile, act_bytes, tp)
    launch_ns = shape.layers * int(profile.value("launch.hardware"))
    return max(mem_ns, compute_ns + comm_ns) + launch_ns


def generate_ns(profile: Profile, shape: ModelShape, tp: int, batch: int, prompt_len: int,
                new_tokens: int) -> tuple[int, int]:
    """(prefill ns, decode ns) of greedy generation: one prefill step over the prompt, then
    ``new_tokens - 1`` single-token steps with the context growing."""
    prefill = step_ns(profile, shape, tp, batch, prompt_len, prompt_len)
    decode = sum(step_ns(profile, shape, tp, batch, 1, prompt_len + i)
                 for i in range(1, new_tokens))
    return prefill, decode
