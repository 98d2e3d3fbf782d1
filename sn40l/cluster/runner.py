"""Driver side of running a compiled model on a set of socket actors.

Every run starts from a group-wide modeled barrier (:func:`barrier`): all of the run's sockets
move to the latest time any of them reached, so the modeled numbers of a run are the same on
fresh sockets and on sockets whose clocks earlier work moved apart.

Speculative decoding (:class:`SpeculativeDecoder`): a draft model proposes ``k`` tokens, the
target verifies them in one multi-token pass, and the longest prefix on which the draft agrees
with the target's greedy choice is kept plus one token of the target's (Leviathan et al. 2023,
"Fast Inference from Transformers via Speculative Decoding", greedy case). The tokens are
exactly the target's greedy tokens. Materialized models measure the acceptance rate; phantom
models (no logits) accept by a deterministic schedule at a given rate.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass

import ray

from sn40l.cluster.types import DraftPlacement
from sn40l.collectives import create_group, destroy_group
from sn40l.compiler.models import check_materializable
from sn40l.compiler.pef import Artifact
from sn40l.socket.engine import model_from_plan
from sn40l.errors import ConfigError

_ids = itertools.count()

# Default acceptance for phantom speculative decoding: the share of drafted tokens the target
# accepted with Llama 3 8B drafting for Llama 3 70B under greedy verification, 58.68% at 8
# draft tokens (llama.cpp llama-speculative, --top_k 1; devquasar.com, "Speculative decoding
# tradeoffs: GPU with large models, Llama 70B / 8B"). Assumption: Llama 3.1 8B drafting for
# Llama 3.1 70B/405B accepts alike; no published figure for that pair was found.
DEFAULT_SPEC_ACCEPTANCE = 0.5868


def barrier(cluster, ranks: list[int]) -> int:
    """Move every socket of ``ranks`` to the latest modeled time any of them reached (its
    clock or a busy engine) and return that time: the start of a run."""
    t = max(ray.get([cluster.socket(r).modeled_horizon.remote() for r in ranks]))
    ray.get([cluster.socket(r).advance_to.remote(t) for r in ranks])
    return t


@dataclass(frozen=True)
class RunResult:
    """Tokens and times of one generate: modeled (virtual) and wall apart."""

    tokens: list[int]
    ttft_ns: int
    decode_ns: list[int]
    wall_s: float
    logits: list | None = None
    step_tokens: list[int] | None = None  # tokens each decode step gave (speculative runs)
    acceptance_rate: float | None = None  # accepted / drafted tokens (speculative runs)
    draft_ns: int = 0                     # modeled time the draft model ran
    drafted: int = 0
    accepted: int = 0

    @property
    def tokens_per_s_per_user(self) -> float:
        """Modeled decode rate of one sequence (after the first token)."""
        if self.step_tokens is not None:
            total = sum(self.decode_ns)
            return 1e9 * sum(self.step_tokens) / total if total else 0.0
        return 1e9 / statistics.median(self.decode_ns) if self.decode_ns else 0.0


class ModelRunner:
    """A compiled model on ``ranks`` of ``cluster`` (TP = len(ranks)). ``__init__`` stores."""

    def __init__(self, cluster, ranks: list[int], artifact: Artifact, *,
                 weights: str = "random", seed: int = 0, job: int | None = None,
                 tag: str = "model", tensors: dict | None = None):
        if len(ranks) != artifact.tp:
            raise ConfigError(f"the artifact is compiled for TP {artifact.tp} but "
                              f"{len(ranks)} sockets were given")
        if weights != "phantom":  # refused before any socket is touched
            check_materializable(model_from_plan(artifact.plan))
        self.cluster, self.ranks, self.artifact = cluster, list(ranks), artifact
        self.weights, self.seed, self.job, self.tag = weights, seed, job, tag
        self.tensors = tensors  # full weights by name (overrides ``weights``)
        self.group = f"{tag}-tp{artifact.tp}-{next(_ids)}" if artifact.tp > 1 else None

    def load(self) -> None:
        if self.group:
            create_group(self.cluster, self.ranks, self.group)
        pef = self.artifact.to_bytes()
        # phantom steps of a shape already run replay its modeled time (TileEngine)
        refs = [self.cluster.socket(r).engine_load.remote(
            self.tag, pef, i, self.group, self.weights, self.seed, self.job,
            tensors=self.tensors, replay=self.weights == "phantom")
            for i, r in enumerate(self.ranks)]
        try:
            ray.get(refs)
        except BaseException:
            ray.wait(refs, num_returns=len(refs), timeout=60)
            self.unload()  # a model that does not fit leaves nothing behind
            raise

    def generate(self, prompt_ids: list[int], max_new_tokens: int,
                 keep_logits: bool = False) -> RunResult:
        barrier(self.cluster, self.ranks)
        out = ray.get([self.cluster.socket(r).engine_generate.remote(
            self.tag, list(prompt_ids), max_new_tokens, self.job, keep_logits and i == 0)
            for i, r in enumerate(self.ranks)])
        first = out[0]
        if any(o["tokens"] != first["tokens"] for o in out):
            raise RuntimeError("sockets of one TP group disagree on the generated tokens")
        return RunResult(first["tokens"], first["ttft_ns"], first["decode_ns"],
                         max(o["wall_s"] for o in out), first["logits"])

    @property
    def phantom(self) -> bool:
        return self.tensors is None and self.weights == "phantom"

    def call(self, method: str, *args, **kwargs) -> list:
        """``method(tag, *args, job=..., **kwargs)`` on every socket of the group."""
        return ray.get([getattr(self.cluster.socket(r), method).remote(
            self.tag, *args, job=self.job, **kwargs) for r in self.ranks])

    def unload(self) -> None:
        ray.get([self.cluster.socket(r).engine_unload.remote(self.tag, self.job)
                 for r in self.ranks])
        if self.group:
            destroy_group(self.cluster, self.ranks, self.group)


class SpeculativeDecoder:
    """Greedy speculative decoding of ``target`` with ``draft`` (both loaded), ``k`` drafted
    tokens per step. ``__init__`` only checks and stores.

    The draft runs on the target's sockets (``same``: the two models' kernels share those
    clocks) or on sockets of its own (``other``); a partial overlap is refused. When the draft's
    tokens must reach sockets that did not compute them, the hand-off costs one P2P message
    (the profile's ``p2p`` link, or ``internode`` across nodes).

    ``acceptance`` (phantom models only): the share of drafted tokens accepted. The schedule
    is deterministic: after ``d`` drafted tokens, ``round(acceptance x d)`` are accepted in
    all, each step accepting what brings the count there (at most its ``k``).
    """

    def __init__(self, target: ModelRunner, draft: ModelRunner, k: int,
                 acceptance: float | None = None):
        t_vocab = target.artifact.plan["model"]["vocab"]
        d_vocab = draft.artifact.plan["model"]["vocab"]
        if t_vocab != d_vocab:
            raise ConfigError(f"draft {draft.artifact.plan['model']['name']!r} has a vocabulary "
                              f"of {d_vocab}, the target {target.artifact.plan['model']['name']!r} "
                              f"{t_vocab}: a draft must share the target's vocabulary")
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"--spec-tokens must be a whole number >= 1, got {k!r}")
        if target.phantom != draft.phantom:
            raise ConfigError("target and draft must both be materialized or both phantom")
        if target.phantom:
            acceptance = DEFAULT_SPEC_ACCEPTANCE if acceptance is None else acceptance
            if not 0.0 <= acceptance <= 1.0:
                raise ConfigError(f"--spec-acceptance {acceptance} must be between 0 and 1")
        elif acceptance is not None:
            raise ConfigError("--spec-acceptance applies to phantom models only; materialized "
                              "models measure their acceptance")
        shared = set(draft.ranks) & set(target.ranks)
        if shared and not set(draft.ranks) <= set(target.ranks):
            raise ConfigError(f"draft sockets {draft.ranks} partly overlap the target's "
                              f"{target.ranks}: give the target's sockets (same) or others")
        self.target, self.draft, self.k, self.acceptance = target, draft, k, acceptance
        self.placement = DraftPlacement.SAME if shared else DraftPlacement.OTHER

    def _handoff_ns(self, src: list[int], dst: list[int], nbytes: int) -> int:
        """Modeled time for ``nbytes`` to reach ``dst`` from ``src`` (0 if ``dst`` computed
        them itself)."""
        if set(dst) <= set(src):
            return 0
        cluster = self.target.cluster
        spn = cluster.spec.sockets_per_node
        cross = {r // spn for r in src} != {r // spn for r in dst}
        link = cluster.profile.link("internode" if cross else "p2p")
        return int(link.latency_ns + math.ceil(nbytes / link.bandwidth * 1e9))

    def _join(self, runner: ModelRunner, t: int) -> None:
        ray.get([runner.cluster.socket(r).advance_to.remote(t) for r in runner.ranks])

    def generate(self, prompt_ids: list[int], max_new_tokens: int) -> RunResult:
        """Tokens equal to the target's greedy decoding; times relative to a barrier over the
        sockets of both models."""
        tgt, drf, k = self.target, self.draft, self.k
        max_seq = int(tgt.artifact.plan["config"]["seq_len"])
        d_seq = int(drf.artifact.plan["config"]["seq_len"])
        if max_new_tokens < 1 or len(prompt_ids) + max_new_tokens > min(max_seq, d_seq):
            raise ConfigError(f"{len(prompt_ids)} prompt + {max_new_tokens} new tokens must fit "
                              f"the compiled sequence lengths (target {max_seq}, draft {d_seq})")
        wall0 = time.perf_counter()
        prompt = [int(t) for t in prompt_ids]
        t0 = barrier(tgt.cluster, sorted(set(tgt.ranks) | set(drf.ranks)))
        first = tgt.call("engine_propose", prompt, 0, 1)
        t_end = max(o["end_ns"] for o in first)
        ttft = first[0]["end_ns"] - t0  # as ModelRunner.generate: the first socket's view
        drf.call("engine_propose", prompt, 0, 0)  # the draft's prefill of the prompt
        out = [first[0]["tokens"][0]]
        fed = len(prompt)  # the draft's KV holds positions < fed
        pos = len(prompt)  # position of the newest token, out[-1]
        steps, step_tokens, draft_ns, drafted, accepted = [], [], 0, 0, 0
        while len(out) < max_new_tokens:
            kk = min(k, max_new_tokens - len(out) - 1)
            seq = prompt + out
            proposal: list[int] = []
            if kk:
                self._join(drf, t_end + self._handoff_ns(tgt.ranks, drf.ranks, 4))
                res = drf.call("engine_propose", seq[fed:pos + 1], fed, kk)
                proposal = res[0]["tokens"]
                d_end = max(o["end_ns"] for o in res)
                draft_ns += d_end - max(o["start_ns"] for o in res)
                fed = pos + kk
                self._join(tgt, d_end + self._handoff_ns(drf.ranks, tgt.ranks, 4 * kk))
            res = tgt.call("engine_verify", [out[-1]] + proposal, pos)
            argmax = res[0]["argmax"]
            if argmax is None:  # phantom: the deterministic acceptance schedule
                m = min(kk, round(self.acceptance * (drafted + kk)) - accepted)
                new = [0] * (m + 1)
            else:
                m = 0
                while m < kk and proposal[m] == argmax[m]:
                    m += 1
                new = proposal[:m] + [argmax[m]]
            drafted, accepted = drafted + kk, accepted + m
            end = max(o["end_ns"] for o in res)
            steps.append(end - t_end)
            step_tokens.append(len(new))
            t_end = end
            out += new
            pos += len(new)
            fed = min(fed, pos)  # draft KV past the accepted point is stale: fed again
        return RunResult(out, ttft, steps, time.perf_counter() - wall0,
                         step_tokens=step_tokens,
                         acceptance_rate=accepted / drafted if drafted else None,
                         draft_ns=draft_ns, drafted=drafted, accepted=accepted)
