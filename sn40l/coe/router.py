"""The CoE router: a compiled one-layer Llama model, resident in HBM, run on the sockets; the
token it generates for a prompt is the index of the expert that serves it.

Its weights are derived from the experts' domain descriptions, so that a math prompt reaches
the math expert (``D = router.dim``, ``V = router.vocab``, ``E`` experts, TP heads of
``D / TP`` dims):

* **embedding** ``(V, D)``: a fixed random table, N(0, 1/D) seeded by the registry's seed,
  whose column 0 is set to 1 (a *bias channel*, the same in every row). Words become tokens
  by a stable hash (:func:`sn40l.coe.model.tokenize`); random rows are nearly orthogonal, so
  different words barely interact;
* **attention**: ``wq = wk = 0``, so every score is 0 and each position attends uniformly to
  the prompt so far; ``wv = wo = I``. At the last position the layer adds the mean over the
  prompt of the RMS-normalised embeddings to the last token's embedding;
* **MLP**: all zero (it adds nothing); every norm weight is 1;
* **LM head** ``(D, V)``: column ``e < E`` is the expert's *centroid*: the normalised mean of
  the RMS-normalised embeddings of the words of its ``domain`` (column 0 excluded, i.e. 0);
  every other column is ``-BIAS_PENALTY`` on the bias channel and 0 elsewhere, so no token
  but an expert index can win.

The greedy token after the prompt is therefore ``argmax_e c_e . x_last`` (ties go to the expert
listed first): the expert whose domain words the prompt shares most. :meth:`Router.reference`
is the same decision in float64 numpy, for tests.

The router's compute and HBM traffic are those of its compiled plan run on the sockets. An
optional ``router.preset`` backbone (e.g. Llama-2-7B, phantom weights) runs its prefill over
the batch first, so a large router's cost and HBM footprint count too; the decision still
comes from the head above.
"""

from __future__ import annotations

import math

import numpy as np

from sn40l.compiler import Artifact, CompileConfig, ModelConfig, compile_model
from sn40l.coe.model import tokenize
from sn40l.coe.registry import CoEConfig
from sn40l.errors import ConfigError

BIAS_PENALTY = 1e4  # a weight, not a modeled number: keeps non-expert tokens far below


def router_model(config: CoEConfig) -> ModelConfig:
    spec, tp = config.router, config.tp
    if spec.dim % tp or (spec.dim // tp) % 2:
        raise ConfigError(f"router.dim = {spec.dim} must split into TP {tp} heads of an even "
                          "width (RoPE rotates pairs)")
    if spec.vocab < len(config.experts) + 1:
        raise ConfigError(f"router.vocab = {spec.vocab} must exceed the {len(config.experts)} "
                          "experts (the router's output token is an expert index)")
    return ModelConfig("coe-router", layers=1, hidden=spec.dim, heads=tp, kv_heads=tp,
                       intermediate=spec.dim, vocab=spec.vocab,
                       max_position=config.serving.max_context)


def _rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5)


class Router:
    """Router weights and artifacts. ``__init__`` derives and compiles (pure, no I/O)."""

    def __init__(self, config: CoEConfig, profile: str = "sn40l"):
        spec, s = config.router, config.serving
        self.config = config
        self.experts = [e.name for e in config.experts]
        self.model = router_model(config)
        d, v, n_e = spec.dim, spec.vocab, len(self.experts)
        rng = np.random.default_rng([config.seed, 0x5EED])
        emb = (rng.standard_normal((v, d)) / math.sqrt(d)).astype(np.float32)
        emb[:, 0] = 1.0  # bias channel
        normed = _rms(emb.astype(np.float64))
        head = np.zeros((d, v), np.float32)
        head[0, n_e:] = -BIAS_PENALTY
        for j, e in enumerate(config.experts):
            c = normed[tokenize(e.domain, v)].mean(axis=0)
            c[0] = 0.0
            head[:, j] = c / (np.linalg.norm(c) or 1.0)
        eye, zero_dd = np.eye(d, dtype=np.float32), np.zeros((d, d), np.float32)
        ones = np.ones(d, np.float32)
        self.weights = {"embed": emb, "final_norm": ones, "lm_head": head,
                        "layers.0.attn_norm": ones, "layers.0.mlp_norm": ones,
                        "layers.0.wq": zero_dd, "layers.0.wk": zero_dd, "layers.0.wv": eye,
                        "layers.0.wo": eye, "layers.0.w_gate": zero_dd,
                        "layers.0.w_up": zero_dd, "layers.0.w_down": zero_dd}
        self.artifact: Artifact = compile_model(CompileConfig(
            "coe-router", tp=config.tp, batch=s.max_batch, seq_len=s.max_context,
            profile=profile), self.model)
        self.backbone: Artifact | None = None
        if spec.preset:
            self.backbone = compile_model(CompileConfig(
                spec.preset, tp=config.tp, batch=s.max_batch, seq_len=s.max_context,
                profile=profile))

    def hbm_bytes_per_socket(self) -> int:
        """HBM the router takes on each socket of a router group (head + backbone)."""
        total = self.artifact.hbm_bytes_per_socket + self.artifact.ddr_bytes_per_socket
        if self.backbone is not None:
            total += self.backbone.hbm_bytes_per_socket + self.backbone.ddr_bytes_per_socket
        return total

    def tokens(self, prompt) -> list[int]:
        return tokenize(prompt, self.model.vocab)

    def reference(self, prompts: list) -> list[str]:
        """The router's decision computed here in float64 (the oracle of the socket run)."""
        w = {k: x.astype(np.float64) for k, x in self.weights.items()}
        out = []
        for p in prompts:
            ids = self.tokens(p)
            x = w["embed"][ids]                                  # (n, D)
            v = _rms(x) @ w["layers.0.wv"]                       # uniform attention over all
            x_last = x[-1] + v.mean(axis=0) @ w["layers.0.wo"]   # MLP adds 0
            logits = _rms(x_last) @ w["lm_head"]                 # (V,)
            out.append(self.experts[int(np.argmax(logits))])
        return out
