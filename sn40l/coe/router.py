"""The CoE router: a small model resident in HBM whose output picks the expert.

How its weights are derived (so that a math prompt reaches the math expert, deterministically):

* a fixed token embedding ``E`` (``vocab x dim``, standard normal / sqrt(dim), seeded) —
  random high-dimensional rows are nearly orthogonal, so different words barely interact;
* one centroid row per expert: the normalised mean of ``E`` over the tokens of the expert's
  ``domain`` text (tokens are BLAKE2b hashes of words, see :func:`sn40l.coe.model.tokenize`);
* a prompt's score against each expert is ``C @ mean(E[prompt])``; the expert with the highest
  score wins, ties going to the expert listed first. A prompt sharing words with a domain scores
  about 1/len(prompt) per shared word; unrelated words add noise of order 1/sqrt(dim).

The head (``E`` and ``C``) is always materialized (about 1 MiB) and lives read-only in the HBM
of every node's router group. An optional ``preset`` backbone (e.g. a 7B model, phantom) adds
the HBM footprint and the modeled prefill time of running a real model over the batch.
"""

from __future__ import annotations

import math

import numpy as np

from sn40l.coe.model import generate_ns, model_shape, tokenize
from sn40l.coe.registry import CoEConfig
from sn40l.hardware.profile import Profile


class CentroidRouter:
    """Router weights and decision. ``__init__`` derives the weights (pure, no I/O)."""

    def __init__(self, config: CoEConfig):
        spec = config.router
        self.spec, self.tp = spec, config.tp
        self.experts = [e.name for e in config.experts]
        rng = np.random.default_rng([config.seed, 0x5EED])
        self.emb = (rng.standard_normal((spec.vocab, spec.dim)) / math.sqrt(spec.dim)
                    ).astype(np.float32)
        rows = []
        for e in config.experts:
            v = self.emb[tokenize(e.domain, spec.vocab)].mean(axis=0)
            rows.append(v / (np.linalg.norm(v) or 1.0))
        self.centroids = np.stack(rows).astype(np.float32)  # (experts, dim)
        self.backbone = model_shape(spec.preset) if spec.preset else None

    def head(self) -> np.ndarray:
        """The head as one flat vector: embedding then centroids (what HBM holds)."""
        return np.concatenate([self.emb.ravel(), self.centroids.ravel()])

    def unpack(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.spec.vocab * self.spec.dim
        return (flat[:n].reshape(self.spec.vocab, self.spec.dim),
                flat[n:].reshape(len(self.experts), self.spec.dim))

    def backbone_numel_per_socket(self) -> int:
        if self.backbone is None:
            return 0
        return -(-self.backbone.params // self.tp)

    @property
    def head_bytes(self) -> int:
        return (self.emb.size + self.centroids.size) * 2  # bf16 on the device

    def hbm_bytes_per_socket(self) -> int:
        return self.head_bytes + 2 * self.backbone_numel_per_socket()

    def decide(self, flat_head: np.ndarray, prompts: list) -> list[str]:
        """Expert name per prompt, from the head as read back from HBM."""
        emb, cent = self.unpack(flat_head)
        out = []
        for p in prompts:
            x = emb[tokenize(p, self.spec.vocab)].mean(axis=0)  # (dim,)
            out.append(self.experts[int(np.argmax(cent @ x))])
        return out

    def cost_ns(self, profile: Profile, batch: int, prompt_len: int) -> int:
        """Modeled router time for a batch: the backbone's prefill over the batch (if any)
        plus streaming the head once from HBM at the fused efficiency."""
        hbm = profile.tier("hbm")
        eff_bw = int(hbm.bandwidth * profile.value("efficiency.hbm_fused"))
        head = hbm.latency_ns + -(-self.head_bytes * 10**9 // eff_bw)
        head += int(profile.value("launch.hardware"))
        if self.backbone is None:
            return head
        prefill, _ = generate_ns(profile, self.backbone, self.tp, batch, prompt_len, 1)
        return prefill + head
