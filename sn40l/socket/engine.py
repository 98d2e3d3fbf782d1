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
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from sn40l.compiler.arch.decoder import decoder_layer, random_weights, rmsnorm, shard_weight
from sn40l.compiler.arch.rope import rope_frequencies
from sn40l.compiler.cost import compute_ns, hbm_ns, kernel_launch_ns
from sn40l.compiler.models import ModelConfig, RopeType
from sn40l.compiler.plan import CompileConfig, kernels, segments
from sn40l.compiler.types import FusionLevel, Orchestration
from sn40l.errors import CompileError, ConfigError
from sn40l.socket.device import Socket
from sn40l.socket.tensor import Tensor

__all__ = ["TileEngine", "Comm", "model_from_plan", "random_weights"]


class Comm(Protocol):
    """What the engine needs from a communicator."""

    def allreduce(self, t: Tensor, op: str = "sum") -> Tensor: ...

    def allgather(self, t: Tensor) -> Tensor: ...


def model_from_plan(plan: dict) -> ModelConfig:
    """The model description stored in a plan."""
    return ModelConfig.from_plan(plan["model"])


def _kernel(ks: list[dict], name: str) -> dict:
    for k in ks:
        if k["name"] == name:
            return k
    raise CompileError(f"the plan has no kernel {name!r}; kernels: "
                       f"{', '.join(k['name'] for k in ks[:8])} ...")


class _Step:
    """One step's view of the engine for the decoder math (:class:`LayerContext`): weights,
    named ops timed against the plan's kernels of the layer, collectives, KV caches, RoPE."""

    def __init__(self, engine: "TileEngine", positions: np.ndarray):
        self.engine, self.positions = engine, positions
        self.rank, self.tp, self.shards = engine.rank, engine.tp, engine.shards
        self.unfused: dict[str, dict] | None = None
        self.used: set[str] = set()

    def w(self, name: str) -> np.ndarray:
        return self.engine._w(name)

    def op(self, name: str, fn: Callable[[], object]) -> object:
        if self.unfused is None:
            return fn()
        kernel = self.unfused.get(name)
        if kernel is None:
            raise CompileError(f"op {name!r} of the {self.engine.model.arch} math has no "
                               f"kernel in the plan; kernels of the layer: "
                               f"{', '.join(self.unfused)}")
        clock = self.engine.socket.clock
        t0 = clock.now
        out = fn()
        self.engine._finish(kernel, t0, t0)
        self.used.add(name)
        return out

    def allreduce(self, x: np.ndarray) -> np.ndarray:
        return self.engine._allreduce(x, x.size)

    def kv_cache(self, layer: int) -> np.ndarray:
        return self.engine._kv[layer]

    def rope(self) -> tuple[np.ndarray, float]:
        return self.engine._rope(int(self.positions.max()) + 1)


SERVED_BATCHES = 4096  # batches a replay table remembers before it starts over


@dataclass
class _Served:
    """A batch served: its tokens, TTFT and modeled duration on this socket, and once a
    serving program agreed its end with the group, the group's span from start to that end."""

    tokens: tuple[tuple[int, ...], ...]
    ttft: int
    took: int
    span: int | None = None


class TileEngine:
    """Compiled model steps on one socket. ``__init__`` only stores.

    Two weight layouts:

    * ``load(full, tier)``: one region per symbol of the memory plan, where the plan puts it
      (what ``sn40l run`` uses);
    * ``load_home(full, home)``: the plan's :func:`~sn40l.compiler.plan.segments` (weights,
      KV caches) as two regions in a *home* tier (``ddr``, or ``host`` on GPUs). The model runs
      only after :meth:`activate` copied them to HBM as ``<tag>/<segment>@hbm`` (one DMA
      descriptor chain) and allocated its activations there; :meth:`evict` copies a dirty KV
      segment back home and frees the HBM copies (read-only weights are just freed). This is
      the CoE's expert switch.

    ``replay`` (phantom weights only): a dict shared by engines of one artifact and TP group.
    The first phantom step of each shape (prefill of B prompts of length L, or a decode step
    of B sequences) runs for real, collectives and all, and records how far it moved this
    socket's clock; later steps of the same shape advance the clock by that amount without
    exchanging messages. Their kernels and message sizes are identical (the compiled decode
    kernels are priced at the compiled context) and the clock is deterministic, so this
    changes wall time, not modeled time. Known error: a step whose ranks start skewed differently
    from the recorded one would have waited a little differently at its first collective.
    :meth:`step` (``sn40l run``) records a shape at its second run, since its first decode step
    still carries the skew the prefill left (it is a little longer than every later one).

    With ``replay`` given, :meth:`generate_batch` also replays whole batches (real or phantom
    weights): a batch already served (real weights: the same prompts and new tokens on this
    engine; phantom weights: the same shape on any engine sharing the ``replay`` table, whose
    steps would all replay the same records) returns the tokens it generated then and advances
    the clock by the same modeled time, without running. Generation is a pure function of the
    prompts (it starts every sequence at position 0 and writes each KV row before reading it)
    and its modeled time one of the shape (with the known error above, for ranks that start
    skewed differently), so this too changes wall time only: a sweep that serves the same
    prompts in several configurations computes them once per load.
    """

    def __init__(self, socket: Socket, plan: dict, rank: int, tag: str, comm: Comm | None,
                 replay: dict | None = None, kernel_cache: dict | None = None):
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
        self.batch = int(plan["config"]["batch"])
        self._ropes: dict[int, tuple[np.ndarray, float]] = {}
        self.phantom = False
        self.replay = replay
        self._served: dict[tuple, _Served] = {}  # batches served (real weights), by prompts
        self._ttft = 0
        self.layout = ""           # "symbols" or "segments", set by load / load_home
        self.home: str | None = None
        self.ready_ns = 0          # an HBM copy in flight ends then (a prefetch)
        self.last_used_ns = -1     # end of the last run, or the last activation
        self._kv: list[np.ndarray] = []
        self._views: dict[str, np.ndarray] = {}
        # kernels of other step shapes, compiled on first use; ``kernel_cache`` may be shared
        # by the engines of one artifact (the kernels depend on its plan only)
        self._kernel_cache: dict[tuple, list[dict]] = {} if kernel_cache is None \
            else kernel_cache

    # -- weights --------------------------------------------------------------------------
    def _shard(self, full: dict[str, np.ndarray], name: str) -> np.ndarray:
        return shard_weight(name, full[name], self.rank, self.tp, self.model, self.shards)

    def load(self, full: dict[str, np.ndarray] | None, tier: str = "hbm") -> int:
        """Place this socket's shards (phantom when ``full`` is None); returns bytes placed."""
        self.phantom = full is None
        self.layout = "symbols"
        placed = 0
        self._kv = []
        for sym in self.plan["memory"]["symbols"]:
            name = f"{self.tag}/{sym['name']}"
            where = tier if sym["tier"] == "hbm" else "ddr"
            if sym["kind"] == "weight":
                if full is None:
                    t = Tensor.phantom(sym["shape"], "bf16")
                else:
                    t = Tensor.of(np.ascontiguousarray(self._shard(full, sym["name"])), "bf16")
                self.socket.write(name, where, t, owner=self.tag, read_only=True)
            else:  # KV caches and activations: device-side, written by the kernels
                dt = "bf16" if sym["kind"] == "kv" else "fp32"
                region = self.socket.alloc(name, where, tuple(sym["shape"]), dt,
                                           owner=self.tag, phantom=self.phantom)
                t = region.tensor
                if sym["kind"] == "kv" and not self.phantom:
                    self._kv.append(t.data)  # (2, batch, seq, kv)
            placed += t.nbytes
        return placed

    @property
    def segments(self) -> list[dict]:
        """The plan's weights / KV / activation segments (read-only: computed once per
        artifact and kept with its kernels, which the engines of one artifact share)."""
        segs = self._kernel_cache.get(("segments",))
        if segs is None:
            segs = self._kernel_cache[("segments",)] = segments(self.plan["memory"])
        return segs

    def load_home(self, full: dict[str, np.ndarray] | None, home: str) -> int:
        """Place the weights and KV segments in the ``home`` tier (see the class docstring);
        returns bytes placed. A home in socket DDR is written over the host link; a home in
        host memory is filled in place."""
        self.phantom = full is None
        self.layout, self.home = "segments", str(home)
        placed = 0
        for seg in self.segments:
            if seg["kind"] == "activation":
                continue  # scratch: allocated in HBM on activation only
            name = f"{self.tag}/{seg['name']}"
            if self.phantom:
                t = Tensor.phantom((seg["numel"],), seg["dtype"])
            elif seg["kind"] == "weight":
                flat = np.empty(seg["numel"], np.float32)
                for sym, (off, shape) in seg["symbols"].items():
                    shard = self._shard(full, sym)
                    flat[off:off + shard.size] = shard.ravel()
                t = Tensor.of(flat, "bf16")
            else:
                t = Tensor.of(np.zeros(seg["numel"], np.float32), seg["dtype"])
            if self.home == "host":
                self.socket.place(name, "host", t, owner=self.tag, read_only=seg["read_only"])
            else:
                self.socket.write(name, self.home, t, owner=self.tag,
                                  read_only=seg["read_only"])
            placed += t.nbytes
        return placed

    @property
    def resident(self) -> bool:
        """Whether the model can run now: symbols placed, or segments copied to HBM."""
        return self.layout == "symbols" or f"{self.tag}/weights@hbm" in self.socket

    def activate(self, wait: bool = True) -> dict:
        """Copy the home segments to HBM (one descriptor chain) and allocate the activations
        there. ``wait=False`` leaves the copy in flight on the DMA engine; the next run joins
        it. Returns {"bytes", "start_ns", "end_ns"}."""
        if self.layout != "segments":
            raise ConfigError(f"model {self.tag!r} was not loaded to a home tier; nothing to "
                              "activate")
        now = self.socket.clock.now
        if self.resident:
            return {"bytes": 0, "start_ns": now, "end_ns": max(now, self.ready_ns)}
        act = next(s for s in self.segments if s["kind"] == "activation")
        self.socket.alloc(f"{self.tag}/activations@hbm", "hbm", (act["numel"],), act["dtype"],
                          owner=self.tag, phantom=self.phantom)
        try:
            nbytes, start, end = self.socket.copy_segments(
                [(f"{self.tag}/weights", f"{self.tag}/weights@hbm"),
                 (f"{self.tag}/kv", f"{self.tag}/kv@hbm")], "hbm", wait, f"activate {self.tag}")
        except BaseException:
            self.socket.free(f"{self.tag}/activations@hbm")
            raise
        self.ready_ns = end
        self.last_used_ns = start
        self._bind()
        return {"bytes": nbytes, "start_ns": start, "end_ns": end}

    def _bind(self) -> None:
        """Views of the HBM segments by symbol name (materialized models only)."""
        self._views, self._kv = {}, []
        if self.phantom:
            return
        for seg in self.segments:
            if seg["kind"] == "activation":
                continue
            data = self.socket.region(f"{self.tag}/{seg['name']}@hbm").tensor.data
            for sym, (off, shape) in seg["symbols"].items():
                n = math.prod(shape)
                view = data[off:off + n].reshape(shape)
                if seg["kind"] == "kv":
                    self._kv.append(view)  # (2, batch, seq, kv), written in place
                else:
                    self._views[sym] = view

    def evict(self, wait: bool = True) -> dict:
        """Copy the KV segment home if a run wrote it, then free the HBM copies (weights are
        read-only: never copied back). Returns {"copied_back", "freed", "end_ns"}."""
        if self.layout != "segments" or not self.resident:
            return {"copied_back": 0, "freed": 0, "end_ns": self.socket.clock.now}
        kv = f"{self.tag}/kv@hbm"
        back, end = 0, self.socket.clock.now
        if self.socket.region(kv).dirty:
            back, _, end = self.socket.copy_segments([(kv, f"{self.tag}/kv")], self.home, wait,
                                                     f"evict {self.tag}")
        freed = sum(self.socket.free(f"{self.tag}/{s}@hbm").size
                    for s in ("weights", "kv", "activations"))
        self._views, self._kv = {}, []
        return {"copied_back": back, "freed": freed, "end_ns": end}

    def _check_resident(self) -> None:
        """Refuse to run before any collective starts, so every rank of the group refuses
        alike (a rank that raised halfway would leave its peers' messages behind)."""
        if not self.resident:
            raise ConfigError(f"weights of {self.tag!r} are not in HBM; activate the model "
                              "before running it")

    def _w(self, name: str) -> np.ndarray:
        if self.layout == "segments":
            view = self._views.get(name)
            if view is None:
                raise ConfigError(f"weights of {self.tag!r} are not in HBM; activate the model "
                                  "before running it")
            return view
        region = self.socket.region(f"{self.tag}/{name}")
        if str(region.tier) not in ("hbm", "sram"):
            raise ConfigError(f"weight {name!r} of {self.tag!r} is in {region.tier}, not HBM; "
                              "copy it to HBM before running")
        return region.tensor.data

    def _rope(self, seq_len: int) -> tuple[np.ndarray, float]:
        """RoPE frequencies for a step reaching ``seq_len`` (only dynamic NTK depends on it)."""
        sc = self.model.rope_scaling
        key = seq_len if sc is not None and sc.type is RopeType.DYNAMIC else 0
        if key not in self._ropes:
            self._ropes[key] = rope_frequencies(self.model, seq_len)
        return self._ropes[key]

    # -- time -----------------------------------------------------------------------------
    def _finish(self, kernel: dict, t0: int, t1: int) -> None:
        mem = hbm_ns(kernel["weight_bytes"] + kernel["kv_bytes"] + kernel["act_bytes"],
                     self.socket.profile, self.fusion)
        cmp_ns = compute_ns(kernel["flops"], self.socket.profile, self.fusion)
        launch = kernel_launch_ns(kernel, self.socket.profile, self.orch)
        end = launch + max(t0 + mem, t1 + cmp_ns)
        self.socket.clock.record(kernel["name"], "kernel", "compute", t0, end,
                                 bytes=kernel["weight_bytes"] + kernel["kv_bytes"])
        self.socket.clock.advance_to(end)

    def _allreduce(self, x: np.ndarray | None, n: int) -> np.ndarray | None:
        if self.tp == 1:
            return x
        t = Tensor.phantom((n,), "bf16") if x is None else Tensor.of(x, "bf16")
        out = self.comm.allreduce(t)
        return None if out.is_phantom else out.data

    # -- kernels --------------------------------------------------------------------------
    def _kernels(self, n: int) -> list[dict]:
        """The compiled decode kernels for one token; prefill kernels for ``n`` prompt tokens
        (the same model and TP, priced by the compiler's cost model for ``n`` tokens)."""
        if n == 1:
            return self.plan["kernels"]
        return self._kernels_for("prefill", self.batch, n)

    def _kernels_for(self, mode: str, batch: int, seq_len: int) -> list[dict]:
        """The compiler's kernels of one step of ``batch`` sequences: a decode step (priced at
        the compiled context, as the artifact's own kernels) or a prefill of ``seq_len``."""
        cfg = self.plan["config"]
        if mode == "decode" and batch == self.batch and seq_len == self.max_seq:
            return self.plan["kernels"]
        key = (mode, batch, seq_len)
        if key not in self._kernel_cache:
            self._kernel_cache[key] = kernels(self.model, CompileConfig(
                **dict(cfg, mode=mode, batch=batch, seq_len=seq_len)))
        return self._kernel_cache[key]

    # -- steps ----------------------------------------------------------------------------
    def step(self, tokens: "int | list[int]", pos: int, replay: bool = False
             ) -> np.ndarray | None:
        """Run ``tokens`` of sequence slot 0 at positions ``pos, pos+1, ...``; returns the last
        token's logits (unpadded), or None for phantom weights. ``replay``: a phantom step of
        a token count already run twice replays its modeled time (plain generation, where
        every decode step starts alike; see the class docstring)."""
        tokens = [tokens] if isinstance(tokens, int) else list(tokens)
        n = len(tokens)
        if pos < 0 or pos + n > self.max_seq:
            raise ConfigError(f"positions {pos}..{pos + n - 1} exceed the compiled sequence "
                              f"length {self.max_seq}")
        self._check_resident()
        out = self._forward(tokens, [0] * n, list(range(pos, pos + n)), [n - 1],
                            self._kernels(n), ("step", n) if replay else None)
        return None if out is None else out[0]

    def verify(self, tokens: list[int], pos: int) -> np.ndarray | None:
        """Speculative verification: ``tokens`` of slot 0 at positions ``pos, pos+1, ...`` in
        one pass, priced by the compiler's decode kernels for ``len(tokens)`` tokens at the
        compiled context; returns every row's logits (rows, vocab), None for phantom weights.
        KV entries a rejected row leaves behind are never read: attention reads positions up
        to its own, and the step that next reaches a position writes it before reading."""
        n = len(tokens)
        if pos < 0 or pos + n > self.max_seq:
            raise ConfigError(f"positions {pos}..{pos + n - 1} exceed the compiled sequence "
                              f"length {self.max_seq}")
        self._check_resident()
        if ("verify", n) not in self._kernel_cache:
            cfg = CompileConfig(**dict(self.plan["config"], mode="decode", batch=1))
            self._kernel_cache[("verify", n)] = kernels(self.model, cfg, new_tokens=n)
        return self._forward(list(tokens), [0] * n, list(range(pos, pos + n)), list(range(n)),
                             self._kernel_cache[("verify", n)], None)

    def generate_batch(self, prompts: list[list[int]], new_tokens: int,
                       agree: Callable[[int], int] | None = None) -> dict:
        """Greedy generation for up to ``batch`` prompts at once, one KV slot each: one prefill
        step over all prompts (priced as a padded batch of the longest), then ``new_tokens - 1``
        decode steps of the whole batch. Joins an activation copy still in flight first.

        ``agree`` (a serving program's, :mod:`sn40l.cluster.serve_ops`: the group's latest of
        its members' values): the batch ends where the group agrees it ends. A replayed batch
        (see the class docstring) then ends where the group agreed the first time, as long
        after its start, without asking again: the program starts every batch of a group at
        one modeled time on all its sockets, so the group's latest end is the recorded one
        (the driver checks that the sockets report the same times)."""
        b = len(prompts)
        if not 1 <= b <= self.batch:
            raise ConfigError(f"{b} prompts for {self.tag!r}: a step holds 1 to {self.batch} "
                              "sequences (the compiled batch)")
        longest = max(len(p) for p in prompts)
        if min(len(p) for p in prompts) < 1 or longest + new_tokens > self.max_seq:
            raise ConfigError(f"prompts of 1..{self.max_seq - new_tokens} tokens fit "
                              f"{new_tokens} new tokens in the compiled sequence length "
                              f"{self.max_seq}; got lengths {[len(p) for p in prompts]}")
        self._check_resident()
        clock = self.socket.clock
        clock.advance_to(self.ready_ns)
        start = clock.now
        table: dict | None = None
        key: tuple = ()
        done: _Served | None = None
        if self.replay is not None:  # a batch already served replays (see the class doc):
            # phantom batches by shape, in the table shared by the artifact's engines
            table, key = ((self.replay, ("batch", b, longest, new_tokens)) if self.phantom
                          else (self._served, (tuple(tuple(p) for p in prompts), new_tokens)))
            done = table.get(key)
        if done is not None:
            clock.record(f"replay batch {b}x{longest}+{new_tokens}", "kernel", "compute",
                         start, start + done.took)
            clock.advance(done.took)
            out = [list(t) for t in done.tokens]
        else:
            out = self._generate(prompts, new_tokens, start)
            done = _Served(tuple(tuple(t) for t in out), self._ttft, clock.now - start)
            if table is not None:
                if len(table) >= SERVED_BATCHES:
                    table.clear()
                table[key] = done
        res = self._served_batch(out, done.ttft, start)
        if agree is not None:
            if done.span is None:
                done.span = agree(res["end_ns"]) - start
            res["end_ns"] = clock.advance_to(start + done.span)
        return res

    def _generate(self, prompts: list[list[int]], new_tokens: int, start: int
                  ) -> list[list[int]]:
        """Run :meth:`generate_batch`'s steps from modeled ``start`` (sets ``_ttft``)."""
        clock = self.socket.clock
        b, longest = len(prompts), max(len(p) for p in prompts)
        toks = [t for p in prompts for t in p]
        slots = [i for i, p in enumerate(prompts) for _ in p]
        pos = [j for p in prompts for j in range(len(p))]
        last = list(np.cumsum([len(p) for p in prompts]) - 1)
        logits = self._forward(toks, slots, pos, last,
                               self._kernels_for("prefill", b, longest), ("prefill", b, longest))
        self._ttft = clock.now - start
        out: list[list[int]] = [[] for _ in prompts]
        cur = [len(p) for p in prompts]
        for n in range(new_tokens):
            nxt = [0] * b if logits is None else [int(np.argmax(lg)) for lg in logits]
            for i, t in enumerate(nxt):
                out[i].append(t)
            if n == new_tokens - 1:
                break
            logits = self._forward(nxt, list(range(b)), cur, list(range(b)),
                                   self._kernels_for("decode", b, self.max_seq), ("decode", b))
            cur = [c + 1 for c in cur]
        return out

    def _served_batch(self, out: list[list[int]], ttft: int, start: int) -> dict:
        """What a batch leaves behind (the last use; a KV segment written) and its reply."""
        clock = self.socket.clock
        self.last_used_ns = clock.now
        if self.layout == "segments":
            self.socket.mark_dirty(f"{self.tag}/kv@hbm")
        return {"tokens": out, "ttft_ns": ttft, "start_ns": start, "end_ns": clock.now}

    def _forward(self, tokens: list[int], slots: list[int], positions: list[int],
                 last_rows: list[int], kernels: list[dict], replay_key: tuple | None
                 ) -> np.ndarray | None:
        """One step over rows (token, sequence slot, position); logits of ``last_rows``."""
        clock = self.socket.clock
        if self.phantom and self.replay is not None and replay_key is not None:
            done = self.replay.get(replay_key)
            if done is not None:
                t0 = clock.now
                clock.record(f"replay {replay_key}", "kernel", "compute", t0, t0 + done)
                clock.advance(done)
                return None
            t0 = clock.now
            self._forward(tokens, slots, positions, last_rows, kernels, None)
            if replay_key[0] != "step" or self.replay.pop(("seen",) + replay_key, False):
                self.replay[replay_key] = clock.now - t0
            else:  # sn40l run's steps: the first decode step still carries the prefill's
                self.replay[("seen",) + replay_key] = True  # skew; record the second
            return None
        m, sh, real = self.model, self.shards, not self.phantom
        n = len(tokens)
        by_layer: dict[int, list[dict]] = {}
        for k in kernels:
            by_layer.setdefault(k["layer"], []).append(k)
        # embedding: vocab-parallel lookup, summed over the group
        t0 = clock.now
        x = None
        if real:
            lo = self.rank * sh["vocab"]
            x = np.zeros((n, m.hidden), np.float32)
            toks = np.asarray(tokens, np.int64)
            mine = (toks >= lo) & (toks < lo + sh["vocab"])  # this shard's rows of the table
            x[mine] = self._w("embed")[toks[mine] - lo]
        x = self._allreduce(x, n * m.hidden)
        self._finish(_kernel(kernels, "embed"), t0, clock.now)
        step = _Step(self, np.asarray(positions))
        slot = np.asarray(slots)
        for i in range(m.layers):
            x = self._layer(i, x, slot, step, by_layer.get(i, []))
        t0 = clock.now
        logits = None
        rows = len(last_rows)
        if real:
            xn = rmsnorm(x[last_rows], self._w("final_norm"), m.norm_eps)  # (rows, hidden)
            logits = xn @ self._w("lm_head")  # (rows, vocab / tp)
        if self.tp > 1:
            t = (Tensor.phantom((rows * sh["vocab"],), "fp32") if logits is None
                 else Tensor.of(logits.astype(np.float32).ravel(), "fp32"))
            full = self.comm.allgather(t)  # (tp * rows * vocab/tp,) in rank order
            logits = None if full.is_phantom else full.data.reshape(
                self.tp, rows, sh["vocab"]).transpose(1, 0, 2).reshape(rows, -1)
        self._finish(_kernel(kernels, "lm_head"), t0, clock.now)
        return None if logits is None else logits[:, :m.vocab]

    def _layer(self, i: int, x: np.ndarray | None, slots: np.ndarray, step: _Step,
               layer: list[dict]) -> np.ndarray | None:
        """Layer ``i`` timed by the plan's kernels of that layer: a fused kernel (or its
        attention and MLP halves) spans the whole math; unfused ones are found by op name.
        Phantom weights run the kernels' collectives on metadata only."""
        if not layer:
            raise CompileError(f"the plan has no kernels for layer {i}")
        clock = self.socket.clock
        fused = self.fusion is FusionLevel.FUSED
        if x is None:  # phantom: shapes only, the AllReduces each kernel lists, on metadata
            n = len(step.positions) * self.model.hidden  # one activation row per token
            t0 = clock.now
            for k in layer:
                if not fused:
                    t0 = clock.now
                    self._finish(k, t0, t0)
                for _ in k["allreduce"]:
                    self._allreduce(None, n)
            if fused:
                for k in layer:
                    self._finish(k, t0, clock.now)
                    t0 = clock.now
            return None
        if fused:
            t0 = clock.now
            step.unfused = None
            x = decoder_layer(self.model, step, i, x, slots, step.positions)
            for k in layer:
                self._finish(k, t0, clock.now)
                t0 = clock.now
            return x
        step.unfused = {k["name"].rsplit(".", 1)[-1]: k for k in layer}
        step.used = set()
        x = decoder_layer(self.model, step, i, x, slots, step.positions)
        missing = set(step.unfused) - step.used
        if missing:
            raise CompileError(f"kernels {sorted(missing)} of layer {i} have no op in the "
                               f"{self.model.arch} math")
        return x
