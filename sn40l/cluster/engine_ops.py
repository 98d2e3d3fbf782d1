"""Tile-engine operations that SocketActor gains as a mixin: load a compiled model's weight
shards and run its prefill + greedy decode loop inside the actor (one Ray call per generate,
not per token; the sockets couple through their collectives)."""

from __future__ import annotations

import time

import numpy as np

from sn40l.compiler.checkpoint import is_checkpoint, load_config, load_weights
from sn40l.compiler.pef import Artifact
from sn40l.errors import ConfigError
from sn40l.socket.engine import TileEngine, random_weights


class EngineOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor`: compiled-model execution."""

    def __init__(self) -> None:
        super().__init__()
        self._engines: dict[str, TileEngine] = {}

    def engine_load(self, tag: str, pef: bytes, rank: int, group: str | None,
                    weights: str = "random", seed: int = 0, job: int | None = None) -> dict:
        """Place this socket's shards of the artifact's weights (``weights="random"``: drawn
        from ``seed``; ``"phantom"``: shapes only; or a Hugging Face checkpoint directory)."""
        self._check_job(job)
        self._note_owner(job, tag)
        plan = Artifact.from_bytes(pef, origin=f"artifact of {tag!r}").plan
        comm = self.communicator(group) if int(plan["config"]["tp"]) > 1 else None
        engine = TileEngine(self.socket, plan, rank, tag, comm)
        if weights == "random":
            full = random_weights(engine.model, seed)
        elif weights == "phantom":
            full = None
        elif is_checkpoint(weights):
            full = load_weights(weights, load_config(weights))
        else:
            raise ConfigError(f"weights {weights!r}: allowed 'random', 'phantom' or a "
                              "checkpoint directory (config.json + model.safetensors)")
        with self._lock:
            placed = engine.load(full)
        self._engines[tag] = engine
        return {"bytes": placed, "now_ns": self.socket.clock.now}

    def engine_generate(self, tag: str, prompt_ids: list[int], max_new_tokens: int,
                        job: int | None = None, keep_logits: bool = False) -> dict:
        """Prefill ``prompt_ids`` then decode greedily; modeled and wall times apart."""
        self._check_job(job)
        engine = self._engines.get(tag)
        if engine is None:
            raise ConfigError(f"no model {tag!r} loaded on socket {self.ident.label}")
        vocab = engine.model.vocab
        bad = [t for t in prompt_ids if not 0 <= int(t) < vocab]
        if not prompt_ids or bad:
            raise ConfigError(f"prompt ids must be a non-empty list of 0..{vocab - 1}; "
                              f"bad: {bad[:5]}")
        if max_new_tokens < 1 or len(prompt_ids) + max_new_tokens > engine.max_seq:
            raise ConfigError(f"{len(prompt_ids)} prompt + {max_new_tokens} new tokens must fit "
                              f"the compiled sequence length {engine.max_seq}")
        clock = self.socket.clock
        wall0, start = time.perf_counter(), clock.now
        logits_seen, tokens, steps = [], [], []
        logits = engine.step([int(t) for t in prompt_ids], 0)  # prefill: the whole prompt
        ttft = clock.now - start
        pos = len(prompt_ids)
        for n in range(max_new_tokens):
            nxt = 0 if logits is None else int(np.argmax(logits))
            if keep_logits and logits is not None:
                logits_seen.append(logits)
            tokens.append(nxt)
            if n == max_new_tokens - 1:
                break
            t0 = clock.now
            logits = engine.step(nxt, pos)
            steps.append(clock.now - t0)
            pos += 1
        return {"tokens": tokens, "ttft_ns": ttft, "decode_ns": steps,
                "start_ns": start, "end_ns": clock.now, "wall_s": time.perf_counter() - wall0,
                "logits": logits_seen if keep_logits else None}

    def engine_unload(self, tag: str, job: int | None = None) -> int:
        self._check_job(job)
        self._engines.pop(tag, None)
        with self._lock:
            return self.socket.free_owner(tag)
