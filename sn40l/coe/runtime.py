"""The CoE runtime on an emulated cluster: load experts to their homes, route, swap, run.

Serving a batch (DESIGN.md, the CoE runtime): the router runs over the whole batch on node 0's
router group, then each (prompt, expert) pair goes to a TP group that holds the expert. If the
expert is not HBM-resident there, its segments are copied DDR->HBM (or host->HBM on the GPU
baselines) on every socket of the group in parallel, after evicting least-recently-used experts:
read-only weights are only freed, dirty state segments (the KV cache) are copied back first.
A hit starts at once with no copy.

Options beyond the paper's sequential baseline (:class:`ServeOptions`): group a batch's prompts
by expert and run each group as one batch; prefetch the next expert's segments on the DMA engine
(``copy(..., wait=False)``) while the current one runs; pins (registry ``cache.pin``) keep
experts resident for good.

Execution of an expert: the small materialized model (``tiny``) is computed from the shards read
back from the group's HBM (proving the copies), and modeled time for every model comes from the
roofline in :mod:`sn40l.coe.model` advanced on the group's clocks. When the engine's
``ModelRunner`` is available this is the one place that changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import ray

from sn40l.coe.cache import ExpertCache
from sn40l.coe.model import ModelShape, TinyLM, generate_ns, tokenize
from sn40l.coe.placement import ExpertNeed, Group, PlacementPlan, plan as make_plan
from sn40l.coe.registry import CoEConfig
from sn40l.coe.router import CentroidRouter
from sn40l.coe.sizing import (Segment, coe_needs, expert_segments, expert_shape,
                              resident_bytes)
from sn40l.coe.types import Home, SegmentRole, Weights
from sn40l.errors import CapacityError, ConfigError
from sn40l.socket.timing import transfer_ns

log = logging.getLogger("sn40l.coe")


@dataclass(frozen=True)
class ServeOptions:
    """How a batch is served. The defaults are the paper's sequential baseline."""

    group_by_expert: bool = False
    prefetch: bool = False

    @property
    def label(self) -> str:
        parts = [p for p, on in (("group", self.group_by_expert), ("prefetch", self.prefetch))
                 if on]
        return "+".join(parts) or "sequential"


@dataclass
class RequestResult:
    """One prompt's journey: expert, where it ran, hit or miss, modeled times, output."""

    index: int
    expert: str
    gid: int
    node: int
    hit: bool
    router_ns: int
    switch_ns: int
    expert_ns: int
    start_ns: int
    end_ns: int
    tokens: list[int] | None = None


@dataclass
class BatchResult:
    """A served batch: per-request results and the batch's modeled latency split."""

    requests: list[RequestResult]
    start_ns: int
    end_ns: int
    router_ns: int
    switch_ns: int      # time requests waited for expert copies (critical path per group)
    expert_ns: int      # time experts ran (summed over groups)
    copied_in: int      # bytes copied into HBM (all sockets)
    copied_back: int    # bytes copied back to the home tier (all sockets)
    options: ServeOptions
    wall_s: float = 0.0

    @property
    def latency_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def hits(self) -> int:
        return sum(r.hit for r in self.requests)

    @property
    def hit_rate(self) -> float:
        return self.hits / len(self.requests) if self.requests else 0.0


@dataclass
class Metrics:
    """Totals since load: switch and execution time, HBM hit rate, bytes moved."""

    requests: int = 0
    hits: int = 0
    switches: int = 0
    router_ns: int = 0
    switch_ns: int = 0
    expert_ns: int = 0
    copied_in: int = 0
    copied_back: int = 0
    load_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


class CoERuntime:
    """A CoE loaded on (some nodes of) a cluster. ``__init__`` only stores; :meth:`load` does
    the I/O. Use :meth:`serve` for batches and :meth:`unload` to free everything it wrote."""

    def __init__(self, cluster, config: CoEConfig, nodes: list[int] | None = None,
                 job: int | None = None):
        self.cluster = cluster
        self.config = config
        self.profile = cluster.profile
        self.node_ids = list(range(cluster.spec.nodes)) if nodes is None else list(nodes)
        self.job = job
        self.owner = f"coe:{config.name}"
        self.prefix = f"coe/{config.name}"
        self.router = CentroidRouter(config)
        self.shapes: dict[str, ModelShape] = {e.name: expert_shape(config, e)
                                              for e in config.experts}
        self.segments: dict[str, list[Segment]] = {
            e.name: expert_segments(config, e, self.shapes[e.name]) for e in config.experts}
        self._tiny = {n: TinyLM(s, config.tp) for n, s in self.shapes.items()
                      if config.weights is Weights.RANDOM}
        self.plan_: PlacementPlan | None = None
        self.caches: dict[int, ExpertCache] = {}
        self.metrics = Metrics()
        self._gnow: dict[int, int] = {}
        self._dirty: set[tuple[int, str]] = set()
        self._pending: dict[tuple[int, str], int] = {}   # prefetches in flight: end ns
        self._host: dict[tuple[str, str, int], Any] = {}  # GPU baselines: host-memory homes
        self._head_cache: np.ndarray | None = None
        self.loaded = False

    def needs(self) -> list[ExpertNeed]:
        return coe_needs(self.config)[0]

    def expert_bytes(self, name: str) -> int:
        """HBM bytes per socket the expert takes when resident."""
        return resident_bytes(self.segments[name])

    # -- plan and load ----------------------------------------------------------------------
    def plan(self) -> PlacementPlan:
        """Capacity check and placement, on numbers only (raises CapacityError)."""
        if self.plan_ is None:
            needs, router_bytes = coe_needs(self.config)
            p = make_plan(needs, self.profile, len(self.node_ids), self.config.tp,
                          router_bytes, self.config.placement,
                          self.config.cache.pin, what=f"CoE {self.config.name!r}")
            spn = self.profile.sockets_per_node
            groups = tuple(Group(g.gid, self.node_ids[g.node],
                                 tuple(self.node_ids[g.node] * spn + r % spn for r in g.ranks))
                           for g in p.groups)
            self.plan_ = PlacementPlan(groups, p.homes, p.home, p.router_gids, p.router_bytes,
                                       p.cache_budget, p.home_used, p.home_capacity)
        return self.plan_

    def _h(self, rank: int):
        return self.cluster.socket(rank)

    def _name(self, expert: str, seg: str, hbm: bool = False) -> str:
        return f"{self.prefix}/{expert}/{seg}" + ("@hbm" if hbm else "")

    def _tensor(self, expert: str, seg: Segment, local: int, full=None) -> Any:
        if seg.role is SegmentRole.WEIGHT and full is not None:
            return self._tiny[expert].pack_shard(full, local)
        if self.config.weights is Weights.RANDOM:
            return np.zeros(seg.numel, dtype=np.float32)
        return {"shape": [seg.numel], "dtype": "bf16", "data": None}

    def load(self, progress: Callable[[int, int], None] | None = None) -> dict:
        """Check capacity, then write the router to HBM and every expert to its home(s)."""
        t0 = time.perf_counter()
        plan = self.plan()
        all_ranks = [r for g in plan.groups for r in g.ranks]
        self.caches = {g.gid: ExpertCache(plan.cache_budget[g.gid], self.config.cache.max_resident)
                       for g in plan.groups}
        head = self.router.head()
        refs = []
        for gid in plan.router_gids:
            for r in plan.groups[gid].ranks:
                refs.append(self._h(r).write.remote(f"{self.prefix}/router/head", "hbm", head,
                                                    dtype="bf16", owner=self.owner,
                                                    read_only=True, job=self.job))
                n = self.router.backbone_numel_per_socket()
                if n:
                    refs.append(self._h(r).write.remote(
                        f"{self.prefix}/router/backbone", "hbm",
                        {"shape": [n], "dtype": "bf16", "data": None}, owner=self.owner,
                        read_only=True, job=self.job))
        ray.get(refs)
        done = 0
        for e in self.config.experts:
            full = (self._tiny[e.name].full_weights(self.expert_seed(e.name))
                    if e.name in self._tiny else None)
            refs = []
            for gid in plan.homes[e.name]:
                for local, r in enumerate(plan.groups[gid].ranks):
                    for seg in self.segments[e.name]:
                        t = self._tensor(e.name, seg, local, full)
                        if plan.home is Home.HOST:
                            self._host[(e.name, seg.name, r)] = t
                            continue
                        refs.append(self._h(r).write.remote(
                            self._name(e.name, seg.name), "ddr", t, dtype="bf16",
                            owner=self.owner, read_only=seg.role is SegmentRole.WEIGHT,
                            job=self.job))
            ray.get(refs)
            done += 1
            if progress:
                progress(done, len(self.config.experts))
        self._router_head()  # the driver reads the head back once, before serving starts
        nows = self.cluster.call("now", ranks=all_ranks)
        start = max(nows)
        self.cluster.call("advance_to", start, ranks=all_ranks)
        self._gnow = {g.gid: start for g in plan.groups}
        self.loaded = True
        for name in self.config.cache.pin:
            for gid in plan.homes[name]:
                end = self._switch_in(gid, name, self._gnow[gid], wait=True, pin=True)
                self._gnow[gid] = end
        self.metrics.load_ns = max(self._gnow.values())
        log.info("CoE %r loaded: %d experts on %d groups in %.2f s wall", self.config.name,
                 len(self.config.experts), len(plan.groups), time.perf_counter() - t0)
        return {"experts": len(self.config.experts), "groups": len(plan.groups),
                "home": str(plan.home), "load_ns": self.metrics.load_ns,
                "wall_s": time.perf_counter() - t0}

    def expert_seed(self, name: str) -> int:
        idx = [e.name for e in self.config.experts].index(name)
        return (self.config.seed * 1_000_003 + idx + 1) % 2**32

    def unload(self) -> None:
        """Free every region this CoE wrote, on every socket it used."""
        if self.plan_ is None:
            return
        ranks = sorted({r for g in self.plan_.groups for r in g.ranks})
        self.cluster.call("free_owner", self.owner, ranks=ranks, job=self.job)
        self._host.clear()
        self.loaded = False

    def reset(self) -> None:
        """Evict every unpinned expert (dirty state is copied back) and zero the metrics, so the
        next batch starts from the cache state right after load. Clocks keep running."""
        for gid, cache in self.caches.items():
            for name in cache.resident():
                if name not in cache.pinned():
                    self._gnow[gid] = max(self._gnow[gid], self._evict(gid, name, wait=True))
        self._pending.clear()
        t = max(self._gnow.values())
        for gid in self.caches:
            self._advance(gid, t)
        self.reset_metrics()

    def reset_metrics(self) -> None:
        """Zero the totals (and the caches' hit counters); the cache contents stay."""
        for cache in self.caches.values():
            cache.hits = cache.misses = 0
        self.metrics = Metrics(load_ns=self.metrics.load_ns)

    # -- HBM cache --------------------------------------------------------------------------
    def _advance(self, gid: int, t: int) -> None:
        ranks = self.plan_.groups[gid].ranks
        ray.get([self._h(r).advance_to.remote(t) for r in ranks])
        self._gnow[gid] = max(self._gnow[gid], t)

    def _evict(self, gid: int, name: str, wait: bool) -> int:
        """Free an expert's HBM copies; copy back dirty state segments first. Returns the
        modeled end of the copy-backs (or the group's now)."""
        ranks = self.plan_.groups[gid].ranks
        end = self._gnow[gid]
        dirty = (gid, name) in self._dirty
        for seg in self.segments[name]:
            hbm = self._name(name, seg.name, hbm=True)
            if seg.role is SegmentRole.STATE and dirty:
                if self.plan_.home is Home.DDR:
                    home = self._name(name, seg.name)
                    ray.get([self._h(r).free.remote(home, job=self.job) for r in ranks])
                    res = ray.get([self._h(r).copy.remote(hbm, "ddr", home, wait=wait,
                                                          job=self.job) for r in ranks])
                else:
                    res = ray.get([self._h(r).read.remote(hbm, job=self.job) for r in ranks])
                    for r, out in zip(ranks, res):
                        self._host[(name, seg.name, r)] = (out["data"] if out["data"] is not None
                                                           else {"shape": out["shape"],
                                                                 "dtype": "bf16", "data": None})
                end = max(end, max(x["end_ns"] for x in res))
                self.metrics.copied_back += seg.nbytes * len(ranks)
            ray.get([self._h(r).free.remote(hbm, job=self.job) for r in ranks])
        self._dirty.discard((gid, name))
        self.caches[gid].evict(name)
        log.info("evicted expert %r from group %d", name, gid)
        return end

    def _switch_in(self, gid: int, name: str, t: int, wait: bool, pin: bool = False,
                   protect: frozenset[str] = frozenset()) -> int:
        """Make ``name`` resident in group ``gid`` starting at modeled ``t``; returns the
        modeled time its segments are in HBM on every socket of the group."""
        cache = self.caches[gid]
        ranks = self.plan_.groups[gid].ranks
        self._advance(gid, t)
        for victim in cache.plan_admit(name, self.expert_bytes(name), protect):
            self._pending.pop((gid, victim), None)
            self._evict(gid, victim, wait)
        refs = []
        for seg in self.segments[name]:
            hbm = self._name(name, seg.name, hbm=True)
            ro = seg.role is SegmentRole.WEIGHT
            for r in ranks:
                if self.plan_.home is Home.DDR:
                    refs.append(self._h(r).copy.remote(self._name(name, seg.name), "hbm", hbm,
                                                       wait=wait, read_only=ro, job=self.job))
                else:
                    refs.append(self._h(r).write.remote(hbm, "hbm", self._host[(name, seg.name, r)],
                                                        dtype="bf16", owner=self.owner,
                                                        read_only=ro, job=self.job, wait=wait))
        res = ray.get(refs)
        end = max(x["end_ns"] for x in res)
        cache.admit(name, self.expert_bytes(name), pin=pin)
        self.metrics.switches += 1
        self.metrics.copied_in += sum(s.nbytes for s in self.segments[name]) * len(ranks)
        if wait:
            self._gnow[gid] = max(self._gnow[gid], end)
        return end

    def hbm_experts(self, gid: int) -> list[list[str]]:
        """Per socket of the group: experts whose weights are in HBM, by address."""
        ranks = self.plan_.groups[gid].ranks
        out = []
        for regs in ray.get([self._h(r).regions.remote("hbm", self.owner) for r in ranks]):
            names = [x["name"][len(self.prefix) + 1:-len("/weights@hbm")] for x in regs
                     if x["name"].endswith("/weights@hbm")]
            out.append(names)
        return out

    # -- routing and execution --------------------------------------------------------------
    def _router_head(self) -> np.ndarray:
        if self._head_cache is None:
            gid = self.plan_.router_gids[0]  # plan_ is set: load() calls this
            out = ray.get(self._h(self.plan_.groups[gid].ranks[0]).read.remote(
                f"{self.prefix}/router/head", job=self.job))
            self._head_cache = np.asarray(out["data"])
        return self._head_cache

    def route(self, prompts: list) -> list[str]:
        """The router's choice per prompt (reads the head from HBM once)."""
        return self.router.decide(self._router_head(), prompts)

    def _choose_group(self, name: str) -> int:
        homes = self.plan_.homes[name]
        resident = [g for g in homes if name in self.caches[g] or (g, name) in self._pending]
        pool = resident or list(homes)
        return min(pool, key=lambda g: (self._gnow[g], g))

    def _execute(self, gid: int, name: str, prompts: list[list[int]], new_tokens: int
                 ) -> tuple[list | None, int]:
        """Run one expert over prompts on its group: outputs (materialized) and modeled ns."""
        s = self.config.serving
        outs = None
        if name in self._tiny:
            ranks = self.plan_.groups[gid].ranks
            hbm = self._name(name, "weights", hbm=True)
            shards = [np.asarray(x["data"]) for x in
                      ray.get([self._h(r).read.remote(hbm, job=self.job) for r in ranks])]
            outs = [self._tiny[name].run_sharded(shards, p, new_tokens) for p in prompts]
        total = 0
        for i in range(0, len(prompts), s.max_batch):
            chunk = prompts[i:i + s.max_batch]
            pre, dec = generate_ns(self.profile, self.shapes[name], self.config.tp, len(chunk),
                                   max(len(p) for p in chunk), new_tokens)
            total += pre + dec
        self._dirty.add((gid, name))
        return outs, total

    def serve(self, prompts: list, max_new_tokens: int = 8,
              options: ServeOptions = ServeOptions()) -> BatchResult:
        """Route and serve one batch; returns per-request results and the latency split."""
        if not self.loaded:
            raise ConfigError("the CoE is not loaded; call load() first")
        if not prompts:
            raise ConfigError("serve() needs at least one prompt")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        plen = max(len(tokenize(p, self.router.spec.vocab)) for p in prompts)
        if plen + max_new_tokens > self.config.serving.max_context:
            raise ConfigError(f"a prompt of {plen} tokens + {max_new_tokens} new tokens exceeds "
                              f"serving.max_context = {self.config.serving.max_context}")
        wall0 = time.perf_counter()
        plan = self.plan_
        t0 = max(self._gnow.values())
        experts = self.route(prompts)
        rgid = plan.router_gids[0]
        router_ns = self.router.cost_ns(self.profile, len(prompts), plen)
        self._advance(rgid, t0 + router_ns)
        route_end = t0 + router_ns
        # work items: (expert, [request indices]) in order
        if options.group_by_expert:
            order: list[tuple[str, list[int]]] = []
            for i, e in enumerate(experts):
                for item in order:
                    if item[0] == e:
                        item[1].append(i)
                        break
                else:
                    order.append((e, [i]))
        else:
            order = [(e, [i]) for i, e in enumerate(experts)]
        # assign each item a group up front (prefetch needs to know where the next one goes)
        targets = []
        for e, idx in order:
            gid = self._choose_group(e)
            targets.append(gid)
        results: list[RequestResult | None] = [None] * len(prompts)
        switch_total = expert_total = 0
        copied_in0, back0 = self.metrics.copied_in, self.metrics.copied_back
        for k, ((e, idx), gid) in enumerate(zip(order, targets)):
            group = plan.groups[gid]
            dispatch = 0
            if group.node != plan.groups[rgid].node:
                link = self.profile.link("internode")
                dispatch = transfer_ns(4 * plen * len(idx), link.bandwidth, link.latency_ns)
            start = max(self._gnow[gid], route_end + dispatch)
            cache = self.caches[gid]
            if (gid, e) in self._pending:
                ready = self._pending.pop((gid, e))
                cache.touch(e, count=False)
                cache.misses += 1
                hit = False
            elif cache.touch(e):
                ready, hit = start, True
            else:
                hit = False
                ready = self._switch_in(gid, e, start, wait=True)
            ready = max(ready, start)
            self._advance(gid, ready)
            if options.prefetch:
                self._prefetch_next(order, targets, k, ready)
            toks = [tokenize(prompts[i], self.shapes[e].vocab) for i in idx]
            outs, run_ns = self._execute(gid, e, toks, max_new_tokens)
            end = ready + run_ns
            self._advance(gid, end)
            switch_total += ready - start
            expert_total += run_ns
            for j, i in enumerate(idx):
                results[i] = RequestResult(i, e, gid, group.node, hit, router_ns, ready - start,
                                           run_ns, start, end, outs[j] if outs else None)
        end_all = max(r.end_ns for r in results)
        m = self.metrics
        m.requests += len(prompts)
        m.hits += sum(r.hit for r in results)
        m.router_ns += router_ns
        m.switch_ns += switch_total
        m.expert_ns += expert_total
        return BatchResult(results, t0, end_all, router_ns, switch_total, expert_total,
                           m.copied_in - copied_in0, m.copied_back - back0, options,
                           time.perf_counter() - wall0)

    def _prefetch_next(self, order, targets, k: int, now: int) -> None:
        """Start copying the expert of the next item bound for the same group on that group's
        DMA engine (no clock move), protecting the expert about to run."""
        gid = targets[k]
        for (e, _), g in list(zip(order, targets))[k + 1:]:
            if g != gid:
                continue
            if e in self.caches[gid] or (gid, e) in self._pending:
                return
            try:
                end = self._switch_in(gid, e, max(self._gnow[gid], now), wait=False,
                                      protect=frozenset({order[k][0]}))
            except CapacityError as exc:  # no room to prefetch: the miss pays later
                log.debug("prefetch of %r into group %d skipped: %s", e, gid, exc)
                return
            self._pending[(gid, e)] = end
            return

    # -- reporting ----------------------------------------------------------------------------
    def occupancy(self) -> list[dict]:
        """Per group: resident experts (LRU first), pins, HBM used/capacity of its first socket."""
        rows = []
        stats = self.cluster.call("stats", ranks=[g.ranks[0] for g in self.plan_.groups])
        for g, st in zip(self.plan_.groups, stats):
            c = self.caches[g.gid]
            rows.append({"group": g.gid, "node": g.node, "ranks": list(g.ranks),
                         "resident": c.resident(), "pinned": sorted(c.pinned()),
                         "hits": c.hits, "misses": c.misses,
                         "hbm_used": st["tiers"]["hbm"]["used"],
                         "hbm_capacity": st["tiers"]["hbm"]["capacity"],
                         "ddr_used": st["tiers"]["ddr"]["used"]})
        return rows
