"""What the CoE runtime knows about an expert: its compiled artifact (from a compiler preset, a
Hugging Face checkpoint or a ``.pef``), how its weights are made, its per-socket segments, and
the tokenizer of demo prompts.

Every expert is compiled for the serving shape of the registry (``serving.max_batch``
sequences of ``serving.max_context`` tokens) at its TP size on the cluster's profile; experts
that share a source share one artifact. Sizes come from the artifact's memory plan packed into
segments (:func:`sn40l.compiler.plan.segments`): read-only weights, the KV caches (state) and
the activations (scratch, HBM only). Time comes from running the artifact on the sockets.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from sn40l.compiler import Artifact, CompileConfig, ModelConfig, compile_model
from sn40l.compiler.plan import segments
from sn40l.coe.registry import CoEConfig, ExpertSpec
from sn40l.coe.types import Weights
from sn40l.errors import ConfigError
from sn40l.socket.engine import model_from_plan

# Materialized (random) experts are built in every socket's process: this bounds the host
# memory they take (tiny test models have ~0.1M parameters; 7B experts are phantom).
MAX_RANDOM_PARAMS = 50_000_000


@dataclass(frozen=True)
class ExpertBuild:
    """One expert ready to load: its artifact and how its weights are made."""

    name: str
    artifact: Artifact
    weights: str   # "random", "phantom" or a checkpoint directory
    seed: int

    @property
    def model(self) -> ModelConfig:
        return model_from_plan(self.artifact.plan)

    def segment_bytes(self, kind: str) -> int:
        """Bytes per socket of the segment of ``kind`` (weight, kv, activation)."""
        return next(s["bytes"] for s in segments(self.artifact.plan["memory"])
                    if s["kind"] == kind)


def expert_seed(config: CoEConfig, index: int) -> int:
    """Seed of the random weights of the expert listed at ``index``."""
    return (config.seed * 1_000_003 + index + 1) % 2**32


def _compile(config: CoEConfig, e: ExpertSpec, profile: str) -> Artifact:
    s = config.serving
    if e.pef:
        art = Artifact.load(e.pef)
        if art.tp != e.tp:
            raise ConfigError(f"expert {e.name!r}: {e.pef} is compiled for TP {art.tp}, the "
                              f"registry says tp {e.tp}")
        return art
    source = e.preset or e.checkpoint
    return compile_model(CompileConfig(source, tp=e.tp, batch=s.max_batch,
                                       seq_len=s.max_context, profile=profile))


def build_experts(config: CoEConfig, profile: str) -> dict[str, ExpertBuild]:
    """Compile every expert (once per distinct source) for ``profile``. Pure: no Ray."""
    arts: dict[tuple, Artifact] = {}
    out = {}
    for i, e in enumerate(config.experts):
        key = (e.preset, e.checkpoint, e.pef, e.tp)
        if key not in arts:
            arts[key] = _compile(config, e, profile)
        art = arts[key]
        if e.checkpoint:
            weights = e.checkpoint
        else:
            weights = str(config.weights)
            model = model_from_plan(art.plan)
            if config.weights is Weights.RANDOM and model.params > MAX_RANDOM_PARAMS:
                raise ConfigError(f"expert {e.name!r}: weights: random materializes "
                                  f"{model.params:,} parameters of {model.name!r} on every "
                                  f"socket; at most {MAX_RANDOM_PARAMS:,} are allowed (use "
                                  "weights: phantom for large experts)")
        out[e.name] = ExpertBuild(e.name, art, weights, expert_seed(config, i))
    return out


# -- tokens -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)
def word_token(word: str, vocab: int) -> int:
    """A stable token id for a word (BLAKE2b of the lower-cased word, mod vocab; memoized:
    prompts repeat their words)."""
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
