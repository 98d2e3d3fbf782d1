"""Tile-engine operations that SocketActor gains as a mixin: load a compiled model's weight
shards and run its prefill + greedy decode loop inside the actor (one Ray call per generate,
not per token; the sockets couple through their collectives).

For speculative decoding (driven step by step by :mod:`sn40l.cluster.runner`):
``engine_propose`` feeds tokens to a model and drafts greedily from them, ``engine_verify``
runs a multi-token verification pass and returns every row's greedy token.

Deterministic modeled time: ``modeled_horizon`` is the latest time this socket's clock or any
of its engines has reached; a driver starts a group's run from the group's largest horizon
(a barrier), so nothing a socket did before shifts the run's modeled numbers.

For the CoE runtime: ``engine_load(..., home="ddr")`` keeps a model's segments in a home tier,
``engine_activate`` / ``engine_evict`` switch it into and out of HBM, ``engine_generate_batch``
serves several prompts at once, and ``engine_status`` shows what is resident and when each
model was last used (the LRU order as the sockets see it).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from sn40l.errors import ConfigError

if TYPE_CHECKING:  # the compiler and the tile engine are imported at the first load, so a
    from sn40l.socket.engine import TileEngine  # socket that runs no model never pays for them


class EngineOps:
    """Mixin of :class:`sn40l.cluster.actor.SocketActor`: compiled-model execution."""

    def __init__(self) -> None:
        super().__init__()
        self._engines: dict[str, TileEngine] = {}
        self._plans: dict[str, dict] = {}      # artifact digest -> plan, shared by engines
        # (digest, group or its members) -> phantom step replay table
        self._replays: dict[tuple, dict] = {}
        self._kernels: dict[str, dict] = {}    # digest -> kernels of other step shapes

    def _plan(self, pef: bytes, tag: str) -> tuple[str, dict]:
        from sn40l.compiler.pef import Artifact

        digest = hashlib.sha256(pef).hexdigest()
        if digest not in self._plans:
            self._plans[digest] = Artifact.from_bytes(pef, origin=f"artifact of {tag!r}").plan
        return digest, self._plans[digest]

    def engine_load(self, tag: str, pef: bytes, rank: int, group: str | None,
                    weights: str = "random", seed: int = 0, job: int | None = None,
                    home: str | None = None, tensors: dict | None = None,
                    replay: bool = False, share_replay: bool = False) -> dict:
        """Place this socket's shards of the artifact's weights (``weights="random"``: drawn
        from ``seed``; ``"phantom"``: shapes only; or a Hugging Face checkpoint directory;
        ``tensors``: full weights given by name). ``home`` ("ddr" or "host") keeps them as
        segments in that tier until :meth:`engine_activate`. ``replay`` lets phantom steps of
        a shape already run replay its modeled time, and batches already served replay their
        tokens and modeled time (see :class:`TileEngine`);
        ``share_replay`` keys that record by the group's members instead of its name, so the
        same artifact loaded again on the same sockets over a new group (the next CoE of a
        sweep) replays what an earlier load ran. Only for callers that join the group's clocks
        before every run (the CoE runtime): a step then takes the same modeled time in any
        load, as it does in any batch of one load."""
        from sn40l.compiler.checkpoint import is_checkpoint, load_config, load_weights
        from sn40l.compiler.models import check_materializable
        from sn40l.compiler.validate import check_load
        from sn40l.socket.engine import TileEngine, random_weights

        self._check_job(job)
        if tag in self._engines:
            raise ConfigError(f"a model {tag!r} is already loaded on socket {self.ident.label}")
        self._note_owner(job, tag)
        digest, plan = self._plan(pef, tag)
        check_load(plan, weights if tensors is None else "tensors",
                   origin=f"artifact of {tag!r}", home=home)  # before weights are made
        comm = self.communicator(group) if int(plan["config"]["tp"]) > 1 else None
        scope = group
        if share_replay and comm is not None:
            scope = (tuple(m.rank for m in comm.members), comm.rank)
        table = self._replays.setdefault((digest, scope), {}) if replay else None
        engine = TileEngine(self.socket, plan, rank, tag, comm, table,
                            self._kernels.setdefault(digest, {}))
        if weights != "phantom" or tensors is not None:
            check_materializable(engine.model)
        if tensors is not None:
            full = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
        elif weights == "random":
            full = random_weights(engine.model, seed)
        elif weights == "phantom":
            full = None
        elif is_checkpoint(weights):
            full = load_weights(weights, load_config(weights))
        else:
            raise ConfigError(f"weights {weights!r}: allowed 'random', 'phantom' or a "
                              "checkpoint directory (config.json + model.safetensors)")
        with self._lock:
            try:
                placed = engine.load(full) if home is None else engine.load_home(full, home)
            except BaseException:
                self.socket.free_owner(tag)  # a model that does not fit leaves nothing
                raise
        self._engines[tag] = engine
        return {"bytes": placed, "now_ns": self.socket.clock.now}

    def engine_load_many(self, pef: bytes, loads: list[tuple[str, int, str | None, str, int]],
                         job: int | None = None, home: str | None = None, replay: bool = False,
                         share_replay: bool = False) -> list[dict]:
        """:meth:`engine_load` of several models of one artifact in order, in one call: each
        load is ``(tag, rank, group, weights, seed)``. A load that fails leaves nothing of its
        own behind and raises; the ones before it stay loaded (the caller unloads them)."""
        return [self.engine_load(tag, pef, rank, group, weights, seed, job, home=home,
                                 replay=replay, share_replay=share_replay)
                for tag, rank, group, weights, seed in loads]

    def _engine(self, tag: str) -> TileEngine:
        engine = self._engines.get(tag)
        if engine is None:
            raise ConfigError(f"no model {tag!r} loaded on socket {self.ident.label}")
        return engine

    def engine_generate(self, tag: str, prompt_ids: list[int], max_new_tokens: int,
                        job: int | None = None, keep_logits: bool = False) -> dict:
        """Prefill ``prompt_ids`` then decode greedily; modeled and wall times apart."""
        self._check_job(job)
        engine = self._engine(tag)
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
        # prefill: the whole prompt; phantom steps replay (TileEngine.step)
        logits = engine.step([int(t) for t in prompt_ids], 0, replay=True)
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
            logits = engine.step(nxt, pos, replay=True)
            steps.append(clock.now - t0)
            pos += 1
        return {"tokens": tokens, "ttft_ns": ttft, "decode_ns": steps,
                "start_ns": start, "end_ns": clock.now, "wall_s": time.perf_counter() - wall0,
                "logits": logits_seen if keep_logits else None}

    def modeled_horizon(self) -> int:
        """The latest modeled time this socket reached: its clock or a busy engine's end."""
        state = self.socket.clock.state()
        return max([state["now_ns"]] + list(state["busy_until"].values()))

    def _check_prompt(self, engine: TileEngine, ids: list[int], what: str) -> list[int]:
        vocab = engine.model.vocab
        bad = [t for t in ids if not 0 <= int(t) < vocab]
        if not ids or bad:
            raise ConfigError(f"{what} must be a non-empty list of 0..{vocab - 1}; "
                              f"bad: {bad[:5]}")
        return [int(t) for t in ids]

    def engine_propose(self, tag: str, feed: list[int], pos: int, k: int,
                       job: int | None = None) -> dict:
        """Feed ``feed`` at positions ``pos, ...`` (at position 0: a prefill of the prompt;
        elsewhere one multi-token pass), then draft ``k`` tokens greedily (k single steps, the
        last draft not fed). Returns {"tokens", "start_ns", "end_ns"}; phantom tokens are 0."""
        self._check_job(job)
        engine = self._engine(tag)
        feed = self._check_prompt(engine, feed, "tokens to feed")
        if k < 0 or pos + len(feed) + max(k - 1, 0) > engine.max_seq:
            raise ConfigError(f"{len(feed)} tokens at position {pos} and {k} drafts must fit "
                              f"the compiled sequence length {engine.max_seq}")
        clock = self.socket.clock
        start = clock.now
        if pos == 0 or len(feed) == 1:
            logits = engine.step(feed, pos)
        else:
            rows = engine.verify(feed, pos)
            logits = None if rows is None else rows[-1]
        pos += len(feed)
        out: list[int] = []
        for n in range(k):
            out.append(0 if logits is None else int(np.argmax(logits)))
            if n < k - 1:
                logits = engine.step(out[-1], pos)
                pos += 1
        return {"tokens": out, "start_ns": start, "end_ns": clock.now}

    def engine_verify(self, tag: str, tokens: list[int], pos: int,
                      job: int | None = None) -> dict:
        """One verification pass over ``tokens`` at positions ``pos, ...``; returns each row's
        greedy next token ({"argmax": None} for phantom weights) and the modeled interval."""
        self._check_job(job)
        engine = self._engine(tag)
        tokens = self._check_prompt(engine, tokens, "tokens to verify")
        start = self.socket.clock.now
        rows = engine.verify(tokens, pos)
        return {"argmax": None if rows is None else [int(np.argmax(r)) for r in rows],
                "start_ns": start, "end_ns": self.socket.clock.now}

    def engine_generate_batch(self, tag: str, prompts: list[list[int]], max_new_tokens: int,
                              job: int | None = None) -> dict:
        """Greedy generation of several prompts at once (one KV slot each); see
        :meth:`TileEngine.generate_batch`."""
        self._check_job(job)
        wall0 = time.perf_counter()
        out = self._generate_batch(tag, prompts, max_new_tokens)
        return {**out, "wall_s": time.perf_counter() - wall0}

    def _generate_batch(self, tag: str, prompts, max_new_tokens: int,
                        agree: Callable[[int], int] | None = None) -> dict:
        engine = self._engine(tag)
        vocab = engine.model.vocab
        bad = [t for p in prompts for t in p if not 0 <= int(t) < vocab]
        if not prompts or bad:
            raise ConfigError(f"prompt ids must be non-empty lists of 0..{vocab - 1}; "
                              f"bad: {bad[:5]}")
        return engine.generate_batch([[int(t) for t in p] for p in prompts], max_new_tokens,
                                     agree)

    def engine_activate(self, tag: str, wait: bool = True, job: int | None = None) -> dict:
        """Copy a home-loaded model's segments to HBM (``wait=False``: a prefetch)."""
        self._check_job(job)
        engine = self._engine(tag)
        with self._lock:
            return engine.activate(wait)

    def engine_evict(self, tag: str, wait: bool = True, job: int | None = None) -> dict:
        """Free a model's HBM copies; a dirty KV segment is copied home first."""
        self._check_job(job)
        engine = self._engine(tag)
        with self._lock:
            return engine.evict(wait)

    def engine_evict_many(self, tags: list[str], wait: bool = True,
                          job: int | None = None) -> list[dict]:
        """:meth:`engine_evict` of several models in order, in one call."""
        self._check_job(job)
        engines = [self._engine(t) for t in tags]
        with self._lock:
            return [e.evict(wait) for e in engines]

    def engine_status(self, prefix: str = "") -> list[dict]:
        """Models whose tag starts with ``prefix``: layout, HBM residency, last use."""
        return [{"tag": t, "layout": e.layout, "home": e.home, "resident": e.resident,
                 "phantom": e.phantom, "last_used_ns": e.last_used_ns}
                for t, e in sorted(self._engines.items()) if t.startswith(prefix)]

    def engine_unload(self, tag: str, job: int | None = None) -> int:
        self._check_job(job)
        self._engines.pop(tag, None)
        with self._lock:
            return self.socket.free_owner(tag)

    def engine_unload_many(self, tags: list[str], job: int | None = None) -> int:
        """:meth:`engine_unload` of several models in one call; the bytes freed."""
        return sum(self.engine_unload(t, job) for t in tags)
