"""Driver side of running a compiled model on a set of socket actors."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

import ray

from sn40l.collectives import create_group, destroy_group
from sn40l.compiler.models import check_materializable
from sn40l.compiler.pef import Artifact
from sn40l.socket.engine import model_from_plan
from sn40l.errors import ConfigError

_ids = itertools.count()


@dataclass(frozen=True)
class RunResult:
    """Tokens and times of one generate: modeled (virtual) and wall apart."""

    tokens: list[int]
    ttft_ns: int
    decode_ns: list[int]
    wall_s: float
    logits: list | None = None

    @property
    def tokens_per_s_per_user(self) -> float:
        """Modeled decode rate of one sequence."""
        return 1e9 / statistics.median(self.decode_ns) if self.decode_ns else 0.0


class ModelRunner:
    """A compiled model on ``ranks`` of ``cluster`` (TP = len(ranks)). ``__init__`` stores."""

    def __init__(self, cluster, ranks: list[int], artifact: Artifact, *,
                 weights: str = "random", seed: int = 0, job: int | None = None,
                 tag: str = "model"):
        if len(ranks) != artifact.tp:
            raise ConfigError(f"the artifact is compiled for TP {artifact.tp} but "
                              f"{len(ranks)} sockets were given")
        if weights != "phantom":  # refused before any socket is touched
            check_materializable(model_from_plan(artifact.plan))
        self.cluster, self.ranks, self.artifact = cluster, list(ranks), artifact
        self.weights, self.seed, self.job, self.tag = weights, seed, job, tag
        self.group = f"{tag}-tp{artifact.tp}-{next(_ids)}" if artifact.tp > 1 else None

    def load(self) -> None:
        if self.group:
            create_group(self.cluster, self.ranks, self.group)
        pef = self.artifact.to_bytes()
        refs = [self.cluster.socket(r).engine_load.remote(self.tag, pef, i, self.group,
                                                          self.weights, self.seed, self.job)
                for i, r in enumerate(self.ranks)]
        try:
            ray.get(refs)
        except BaseException:
            ray.wait(refs, num_returns=len(refs), timeout=60)
            self.unload()  # a model that does not fit leaves nothing behind
            raise

    def generate(self, prompt_ids: list[int], max_new_tokens: int,
                 keep_logits: bool = False) -> RunResult:
        out = ray.get([self.cluster.socket(r).engine_generate.remote(
            self.tag, list(prompt_ids), max_new_tokens, self.job, keep_logits and i == 0)
            for i, r in enumerate(self.ranks)])
        first = out[0]
        if any(o["tokens"] != first["tokens"] for o in out):
            raise RuntimeError("sockets of one TP group disagree on the generated tokens")
        return RunResult(first["tokens"], first["ttft_ns"], first["decode_ns"],
                         max(o["wall_s"] for o in out), first["logits"])

    def unload(self) -> None:
        ray.get([self.cluster.socket(r).engine_unload.remote(self.tag, self.job)
                 for r in self.ranks])
        if self.group:
            destroy_group(self.cluster, self.ranks, self.group)
