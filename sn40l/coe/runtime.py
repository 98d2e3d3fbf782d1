"""The CoE runtime on an emulated cluster: load experts to their homes, route, swap, run.

Everything runs on the socket actors; the driver only decides and bookkeeps.

* **Load**: the capacity check runs on numbers first (:mod:`sn40l.coe.placement`); then every
  TP group gets a collective group, the router (:mod:`sn40l.coe.router`) is loaded into the
  HBM of each node's router group, and every expert's compiled artifact is loaded on the
  sockets of its home group(s) with its weights and KV caches as segments in the home tier:
  socket DDR on SN40L, the sockets' share of host memory on the GPU baselines.
* **Serve** a batch (DESIGN.md, the CoE runtime): the router runs over the whole batch on node
  0's router group and generates one token per prompt, the expert's index. Each (prompt,
  expert) pair then goes to a TP group that holds the expert (dispatch to another node costs
  the prompt's bytes over the inter-node link). If the expert is not HBM-resident there, its
  segments are copied home -> HBM on every socket of the group in parallel, after evicting
  least-recently-used experts: read-only weights are only freed, a dirty KV segment is copied
  back first. A hit starts at once. The expert then runs its prefill and T decode steps on its
  group's tile engines with its TP collectives.
* Options beyond the paper's sequential baseline (:class:`ServeOptions`): group a batch's
  prompts by expert and run each group as one batch; prefetch the next expert's segments on the
  DMA engine (``engine_activate(wait=False)``) while the current one runs; pins (registry
  ``cache.pin``) keep experts resident for good.

Every modeled time comes from the sockets' clocks: copies from the profile's copy paths,
kernels from the compiler's cost model, collectives from their messages.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray

from sn40l.coe.cache import ExpertCache
from sn40l.coe.model import ExpertBuild, build_experts, tokenize
from sn40l.coe.placement import ExpertNeed, Group, PlacementPlan, plan as make_plan
from sn40l.coe.registry import CoEConfig
from sn40l.coe.router import Router
from sn40l.coe.sizing import needs_of
from sn40l.cluster.serve_ops import Item, ItemDone, Ready, Run, Switch
from sn40l.collectives import create_group, destroy_group
from sn40l.errors import CapacityError, ConfigError
from sn40l.socket.timing import transfer_ns

log = logging.getLogger("sn40l.coe")

_ids = itertools.count()
LOAD_CHUNK = 16  # experts loaded per call to each socket (one call and one wait per chunk)


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
    """A CoE loaded on (some nodes of) a cluster. ``__init__`` only stores; :meth:`plan`
    compiles and checks capacity (no I/O), :meth:`load` writes. Use :meth:`serve` for batches
    and :meth:`unload` to free everything it wrote."""

    def __init__(self, cluster, config: CoEConfig, nodes: list[int] | None = None,
                 job: int | None = None):
        self.cluster = cluster
        self.config = config
        self.profile = cluster.profile
        self.node_ids = list(range(cluster.spec.nodes)) if nodes is None else list(nodes)
        self.job = job
        self.prefix = f"coe/{config.name}"
        self.builds: dict[str, ExpertBuild] = {}
        self.router: Router | None = None
        self.needs_: list[ExpertNeed] = []
        self.plan_: PlacementPlan | None = None
        self.caches: dict[int, ExpertCache] = {}
        self.metrics = Metrics()
        self._gnow: dict[int, int] = {}
        self._seen: dict[int, int] = {}  # rank -> a modeled now its clock is known to have passed
        self._pending: dict[tuple[int, str], int | None] = {}  # prefetches in flight: end ns
        self._groups: dict[int, str | None] = {}          # gid -> collective group name
        self._tags: dict[str, list[int]] = {}             # loaded model tag -> ranks
        # router runs of this load -> (expert per prompt, modeled duration from its start)
        self._routes: dict[tuple[Run, ...], tuple[list[str], int]] = {}
        self.loaded = False

    def tag(self, expert: str) -> str:
        return f"{self.prefix}/{expert}"

    @property
    def router_tag(self) -> str:
        return f"{self.prefix}/router"

    def expert_bytes(self, name: str) -> int:
        """HBM bytes per socket the expert takes when resident."""
        return next(n.resident for n in self.needs_ if n.name == name)

    # -- plan and load ----------------------------------------------------------------------
    def plan(self) -> PlacementPlan:
        """Compile the experts and the router, check capacity and place, on numbers only
        (raises CapacityError before anything is written)."""
        if self.plan_ is None:
            self.builds = build_experts(self.config, self.profile.name)
            self.router = Router(self.config, self.profile.name)
            self.needs_ = needs_of(self.config, self.builds)
            p = make_plan(self.needs_, self.profile, len(self.node_ids), self.config.tp,
                          self.router.hbm_bytes_per_socket(), self.config.placement,
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

    def _on_group(self, gid: int, method: str, *args: Any, **kwargs: Any) -> list:
        ranks = self.plan_.groups[gid].ranks
        return ray.get([getattr(self._h(r), method).remote(*args, job=self.job, **kwargs)
                        for r in ranks])

    def load(self, progress: Callable[[int, int], None] | None = None) -> dict:
        """Check capacity, then load the router into HBM and every expert to its home(s)."""
        t0 = time.perf_counter()
        plan = self.plan()
        self._seen.clear()
        self.caches = {g.gid: ExpertCache(plan.cache_budget[g.gid], self.config.cache.max_resident)
                       for g in plan.groups}
        try:
            self._load(plan, progress)
        except BaseException:
            self.unload()
            raise
        all_ranks = [r for g in plan.groups for r in g.ranks]
        start = max(self.cluster.call("now", ranks=all_ranks))
        self.cluster.call("advance_to", start, ranks=all_ranks)
        self._gnow = {g.gid: start for g in plan.groups}
        self.loaded = True
        for name in self.config.cache.pin:
            for gid in plan.homes[name]:
                self._gnow[gid] = self._switch_in(gid, name, self._gnow[gid], wait=True,
                                                  pin=True)
        self.metrics.load_ns = max(self._gnow.values())
        log.info("CoE %r loaded: %d experts on %d groups in %.2f s wall", self.config.name,
                 len(self.config.experts), len(plan.groups), time.perf_counter() - t0)
        return {"experts": len(self.config.experts), "groups": len(plan.groups),
                "home": str(plan.home), "load_ns": self.metrics.load_ns,
                "wall_s": time.perf_counter() - t0}

    def _load(self, plan: PlacementPlan, progress) -> None:
        uid = next(_ids)
        for g in plan.groups:
            name = None
            if self.config.tp > 1:
                name = f"coe-{self.config.name}-g{g.gid}-{uid}"
                create_group(self.cluster, list(g.ranks), name)
            self._groups[g.gid] = name
        router_pef = ray.put(self.router.artifact.to_bytes())
        router_w = ray.put(self.router.weights)
        backbone = None if self.router.backbone is None else ray.put(
            self.router.backbone.to_bytes())
        refs = []
        for gid in plan.router_gids:
            ranks = plan.groups[gid].ranks
            for i, r in enumerate(ranks):
                # replay: a batch of prompts already routed replays (TileEngine), so a
                # sweep routes each distinct batch once per load
                refs.append(self._h(r).engine_load.remote(
                    self.router_tag, router_pef, i, self._groups[gid], job=self.job,
                    tensors=router_w, replay=True))
                if backbone is not None:
                    refs.append(self._h(r).engine_load.remote(
                        self.router_tag + "-backbone", backbone, i, self._groups[gid],
                        weights="phantom", job=self.job, replay=True,
                        share_replay=True))
            self._tags.setdefault(self.router_tag, []).extend(ranks)
            if backbone is not None:
                self._tags.setdefault(self.router_tag + "-backbone", []).extend(ranks)
        ray.get(refs)
        pefs: dict[int, Any] = {}
        inflight: list = []  # loads of up to LOAD_CHUNK experts, waited for together
        experts = self.config.experts
        try:
            for lo in range(0, len(experts), LOAD_CHUNK):
                chunk = experts[lo:lo + LOAD_CHUNK]
                inflight = self._load_experts(chunk, plan, pefs)
                ray.get(inflight)
                inflight = []
                if progress:
                    progress(lo + len(chunk), len(experts))
        except BaseException:
            if inflight:  # let every load end before the caller unloads what was written
                ray.wait(inflight, num_returns=len(inflight))
            raise

    def _load_experts(self, chunk: list, plan: PlacementPlan, pefs: dict) -> list:
        """Start loading the experts of ``chunk`` on the sockets of their home groups: one
        call per socket and artifact, the experts in order; the Ray refs."""
        calls: dict[tuple[int, int], list[tuple]] = {}  # (rank, artifact) -> its loads
        for e in chunk:
            b = self.builds[e.name]
            key = id(b.artifact)
            if key not in pefs:
                pefs[key] = ray.put(b.artifact.to_bytes())
            for gid in plan.homes[e.name]:
                ranks = plan.groups[gid].ranks
                self._tags.setdefault(self.tag(e.name), []).extend(ranks)
                for i, r in enumerate(ranks):
                    calls.setdefault((r, key), []).append(
                        (self.tag(e.name), i, self._groups[gid], b.weights, b.seed))
        return [self._h(r).engine_load_many.remote(
            pefs[key], loads, job=self.job, home=str(plan.home), replay=True,
            share_replay=True) for (r, key), loads in calls.items()]

    def unload(self) -> None:
        """Free every model this CoE loaded and its collective groups."""
        by_rank: dict[int, list[str]] = {}
        for tag, ranks in self._tags.items():
            for r in ranks:
                by_rank.setdefault(r, []).append(tag)
        ray.get([self._h(r).engine_unload_many.remote(tags, self.job)
                 for r, tags in by_rank.items()])
        self._tags.clear()
        if self.plan_ is not None:
            for g in self.plan_.groups:
                if self._groups.get(g.gid):
                    destroy_group(self.cluster, list(g.ranks), self._groups[g.gid])
        self._groups.clear()
        self._pending.clear()
        self._routes.clear()
        self.loaded = False

    def reset(self) -> None:
        """Evict every unpinned expert (dirty state is copied back) and zero the metrics, so the
        next batch starts from the cache state right after load. Clocks keep running."""
        refs = {}
        for gid, cache in self.caches.items():
            names = [n for n in cache.resident() if n not in cache.pinned()]
            if names:
                tags = [self.tag(n) for n in names]
                refs[gid] = (names, [self._h(r).engine_evict_many.remote(tags, True, job=self.job)
                                     for r in self.plan_.groups[gid].ranks])
        for gid, (names, group_refs) in refs.items():
            per_rank = ray.get(group_refs)  # per rank, per expert: its evict reply
            for j, name in enumerate(names):
                self._evicted(gid, name, [res[j] for res in per_rank])
                self._gnow[gid] = max([self._gnow[gid]] + [res[j]["end_ns"] for res in per_rank])
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
        """Move the group's clocks to ``t``. Sockets whose clock is known to be there already
        (clocks only move forward) are not called: advancing them would change nothing, and
        each call is a Ray round trip."""
        behind = [r for r in self.plan_.groups[gid].ranks if self._seen.get(r, -1) < t]
        for r, now in zip(behind, ray.get([self._h(r).advance_to.remote(t) for r in behind])):
            self._seen[r] = now
        self._gnow[gid] = max(self._gnow[gid], t)

    def _evict(self, gid: int, name: str, wait: bool) -> int:
        """Free an expert's HBM copies on its group; the sockets copy a dirty KV segment back
        first. Returns the modeled end of the copy-backs (or the group's now)."""
        res = self._on_group(gid, "engine_evict", self.tag(name), wait)
        self._evicted(gid, name, res)
        return max([self._gnow[gid]] + [x["end_ns"] for x in res])

    def _evicted(self, gid: int, name: str, res: list[dict]) -> None:
        """Book an eviction the sockets of the group performed (their evict replies)."""
        self.metrics.copied_back += sum(x["copied_back"] for x in res)
        self.caches[gid].evict(name)
        log.info("evicted expert %r from group %d (%d B copied back)", name, gid,
                 sum(x["copied_back"] for x in res))

    def _switch_in(self, gid: int, name: str, t: int, wait: bool, pin: bool = False,
                   protect: frozenset[str] = frozenset()) -> int:
        """Make ``name`` resident in group ``gid`` starting at modeled ``t``; returns the
        modeled time its segments are in HBM on every socket of the group."""
        cache = self.caches[gid]
        self._advance(gid, t)
        for victim in cache.plan_admit(name, self.expert_bytes(name), protect):
            self._pending.pop((gid, victim), None)
            self._evict(gid, victim, wait)
        res = self._on_group(gid, "engine_activate", self.tag(name), wait)
        end = max(x["end_ns"] for x in res)
        cache.admit(name, self.expert_bytes(name), pin=pin)
        self.metrics.switches += 1
        self.metrics.copied_in += sum(x["bytes"] for x in res)
        if wait:
            self._gnow[gid] = max(self._gnow[gid], end)
        return end

    def hbm_experts(self, gid: int) -> list[list[str]]:
        """Per socket of the group: experts whose weights are in HBM, by address."""
        out = []
        for regs in ray.get([self._h(r).regions.remote("hbm")
                             for r in self.plan_.groups[gid].ranks]):
            out.append([x["name"][len(self.prefix) + 1:-len("/weights@hbm")] for x in regs
                        if x["name"].startswith(self.prefix + "/")
                        and x["name"].endswith("/weights@hbm")])
        return out

    def lru_on_sockets(self, gid: int) -> list[list[str]]:
        """Per socket of the group: HBM-resident experts ordered by the socket's own record of
        their last use (least recent first)."""
        out = []
        for rows in ray.get([self._h(r).engine_status.remote(self.prefix + "/")
                             for r in self.plan_.groups[gid].ranks]):
            res = [x for x in rows if x["layout"] == "segments" and x["resident"]]
            out.append([x["tag"][len(self.prefix) + 1:]
                        for x in sorted(res, key=lambda x: (x["last_used_ns"], x["tag"]))])
        return out

    # -- routing and execution --------------------------------------------------------------
    def _joined(self, gid: int, end: int) -> None:
        """Every socket of the group has joined modeled ``end`` (a program's agreed end)."""
        for r in self.plan_.groups[gid].ranks:
            self._seen[r] = max(self._seen.get(r, -1), end)
        self._gnow[gid] = max(self._gnow[gid], end)

    def _same(self, gid: int, what: str, per_rank: list) -> Any:
        """What every socket of the group reported (they must agree), or RuntimeError."""
        if any(x != per_rank[0] for x in per_rank):
            raise RuntimeError(f"sockets of group {gid} disagree on {what}")
        return per_rank[0]

    def _router_runs(self, prompts: list) -> tuple[Run, ...]:
        """The router's runs over the batch: the backbone's prefill, if any, then the head."""
        mb = self.config.serving.max_batch
        runs = []
        if self.router.backbone is not None:
            vocab = int(self.router.backbone.plan["model"]["vocab"])
            runs.append(Run(self.router_tag + "-backbone",
                            tuple(tuple(tokenize(p, vocab)) for p in prompts), 1, mb))
        runs.append(Run(self.router_tag, tuple(tuple(self.router.tokens(p)) for p in prompts),
                        1, mb))
        return tuple(runs)

    def _routed(self, runs: tuple[Run, ...], res: list[list]) -> tuple[list[str], int]:
        """The expert per prompt and the modeled end from the router group's replies (per
        socket, per run: :class:`RunDone`)."""
        gid = self.plan_.router_gids[0]
        for j, run in enumerate(runs):
            toks = self._same(gid, f"the tokens of {run.tag!r}", [x[j].tokens for x in res])
            end = self._same(gid, f"the modeled end of {run.tag!r}", [x[j].end_ns for x in res])
        names = [e.name for e in self.config.experts]
        if any(t[0] >= len(names) for t in toks):
            raise RuntimeError(f"the router generated a token that is not an expert index: "
                               f"{[t[0] for t in toks]}")
        return [names[t[0]] for t in toks], end

    def route(self, prompts: list, start: int = 0) -> tuple[list[str], int]:
        """Run the router over the batch on node 0's router group from modeled ``start`` (or
        the group's now, if later): the backbone's prefill, if any, then the head, in one call
        per socket. Returns the expert per prompt and the modeled end."""
        return self._route(self._router_runs(prompts), start)

    def _route(self, runs: tuple[Run, ...], start: int) -> tuple[list[str], int]:
        gid = self.plan_.router_gids[0]
        base = max(self._gnow[gid], start)
        ref = ray.put(list(runs))  # serialized once for the group, not once per socket
        res = ray.get([self._h(r).engine_chain.remote(self._groups[gid], base, ref, job=self.job)
                       for r in self.plan_.groups[gid].ranks])
        experts, end = self._routed(runs, res)
        self._routes[runs] = (experts, end - base)
        self._joined(gid, end)
        return experts, end

    def _choose_group(self, name: str) -> int:
        homes = self.plan_.homes[name]
        resident = [g for g in homes if name in self.caches[g] or (g, name) in self._pending]
        pool = resident or list(homes)
        return min(pool, key=lambda g: (self._gnow[g], g))

    def _plan_switch(self, gid: int, name: str, wait: bool,
                     protect: frozenset[str] = frozenset()) -> Switch:
        """Book ``name`` into the group's cache (evicting least-recently-used experts) and say
        what the sockets must do for it; raises CapacityError before booking anything."""
        cache = self.caches[gid]
        victims = cache.plan_admit(name, self.expert_bytes(name), protect)
        for v in victims:
            self._pending.pop((gid, v), None)
            cache.evict(v)
        cache.admit(name, self.expert_bytes(name))
        self.metrics.switches += 1
        return Switch(self.tag(name), tuple(self.tag(v) for v in victims), wait)

    def _switched(self, gid: int, sw: Switch, done: list) -> None:
        """Book the bytes a switch moved on the sockets of the group (their replies)."""
        self.metrics.copied_in += sum(d.copied_in for d in done)
        for j, victim in enumerate(sw.victims):
            back = sum(d.copied_back[j] for d in done)
            self.metrics.copied_back += back
            log.info("evicted expert %r from group %d (%d B copied back)",
                     victim[len(self.prefix) + 1:], gid, back)

    def serve(self, prompts: list, max_new_tokens: int = 8,
              options: ServeOptions = ServeOptions()) -> BatchResult:
        """Route and serve one batch; returns per-request results and the latency split.

        The driver decides what needs no modeled time (expert per prompt, group, hit or miss,
        evictions, prefetches) and sends each group's sockets one program
        (:meth:`~sn40l.cluster.serve_ops.ServeOps.engine_serve`): two Ray round trips per
        batch, the router's and the experts'. A batch whose prompts the router already routed
        since load takes one: the driver takes the experts and the router's modeled duration
        from that earlier run, and the router group runs the router again ahead of its items in
        the same call (its runs replay on the sockets); their replies must match."""
        if not self.loaded:
            raise ConfigError("the CoE is not loaded; call load() first")
        if not prompts:
            raise ConfigError("serve() needs at least one prompt")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        plen = max(len(self.router.tokens(p)) for p in prompts)
        if plen + max_new_tokens > self.config.serving.max_context:
            raise ConfigError(f"a prompt of {plen} tokens + {max_new_tokens} new tokens exceeds "
                              f"serving.max_context = {self.config.serving.max_context}")
        wall0 = time.perf_counter()
        plan = self.plan_
        t0 = max(self._gnow.values())
        rgid = plan.router_gids[0]
        runs = self._router_runs(prompts)
        known = self._routes.get(runs)
        if known is None:  # the router's answer decides the programs: it runs first
            experts, route_end = self._route(runs, t0)
        else:
            experts, route_end = known[0], t0 + known[1]
            self._joined(rgid, route_end)
        router_ns = route_end - t0
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
        targets = [self._choose_group(e) for e, _ in order]  # prefetch needs them up front
        mb = self.config.serving.max_batch
        items: dict[int, list[tuple[int, bool, Item]]] = {}  # gid -> (k, hit, item) in order
        for k, ((e, idx), gid) in enumerate(zip(order, targets)):
            dispatch = 0
            if plan.groups[gid].node != plan.groups[rgid].node:  # the prompts' tokens cross
                link = self.profile.link("internode")             # nodes
                dispatch = transfer_ns(4 * plen * len(idx), link.bandwidth, link.latency_ns)
            cache = self.caches[gid]
            switch, pending = None, None
            if (gid, e) in self._pending:
                pending = self._pending.pop((gid, e))
                cache.touch(e, count=False)
                cache.misses += 1
                hit, ready = False, Ready.PREFETCHED if pending is None else Ready.PENDING
            elif cache.touch(e):
                hit, ready = True, Ready.HIT
            else:
                hit, ready = False, Ready.SWITCH
                switch = self._plan_switch(gid, e, wait=True)
            vocab = self.builds[e].model.vocab
            run = Run(self.tag(e), tuple(tuple(tokenize(prompts[i], vocab)) for i in idx),
                      max_new_tokens, mb)
            prefetch = self._plan_prefetch(order, targets, k) if options.prefetch else None
            items.setdefault(gid, []).append(
                (k, hit, Item(run, route_end + dispatch, ready, switch, pending, prefetch)))
        chain = None
        if known is not None:
            chain = ray.put(list(runs))
            items.setdefault(rgid, [])
        refs = {}
        for gid, its in items.items():
            program = ray.put([it for _, _, it in its])  # once for the group's sockets
            if gid == rgid and chain is not None:
                refs[gid] = [self._h(r).engine_route_serve.remote(
                    self._groups[gid], t0, chain, program, job=self.job)
                    for r in plan.groups[gid].ranks]
                continue
            refs[gid] = [self._h(r).engine_serve.remote(self._groups[gid], self._gnow[gid],
                                                        program, job=self.job)
                         for r in plan.groups[gid].ranks]
        results: list[RequestResult | None] = [None] * len(prompts)
        switch_total = expert_total = 0
        copied_in0, back0 = self.metrics.copied_in, self.metrics.copied_back
        for gid, its in items.items():
            per_rank: list[list[ItemDone]] = ray.get(refs[gid])
            if gid == rgid and chain is not None:
                routed = self._routed(runs, [x[0] for x in per_rank])
                if routed != (experts, route_end):
                    raise RuntimeError(f"the router, given a batch it routed before, answered "
                                       f"{routed}, not {(experts, route_end)}")
                per_rank = [x[1] for x in per_rank]
            for j, (k, hit, it) in enumerate(its):
                done = [x[j] for x in per_rank]
                d = done[0]
                outs = self._same(gid, f"the tokens of {it.run.tag!r}",
                                  [x.run.tokens for x in done])
                self._same(gid, f"the modeled times of {it.run.tag!r}",
                           [(x.start_ns, x.ready_ns, x.run.end_ns) for x in done])
                if it.switch is not None:
                    self._switched(gid, it.switch, [x.switch for x in done])
                if it.prefetch is not None:
                    self._switched(gid, it.prefetch, [x.prefetch for x in done])
                    key = (gid, it.prefetch.tag[len(self.prefix) + 1:])
                    if key in self._pending:  # still in flight after this batch
                        self._pending[key] = d.prefetch.end_ns
                start, ready, end = d.start_ns, d.ready_ns, d.run.end_ns
                switch_total += ready - start
                expert_total += end - ready
                e, idx = order[k]
                phantom = self.builds[e].weights == "phantom"
                for jj, i in enumerate(idx):
                    results[i] = RequestResult(i, e, gid, plan.groups[gid].node, hit, router_ns,
                                               ready - start, end - ready, start, end,
                                               None if phantom else outs[jj])
            if its:
                self._joined(gid, per_rank[0][-1].run.end_ns)
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

    def _plan_prefetch(self, order, targets, k: int) -> Switch | None:
        """The prefetch to start once item ``k`` is ready: the expert of the next item bound
        for the same group, unless it is resident or on its way, protecting the expert about
        to run. Its end comes with the group's reply (``_pending`` holds None until then)."""
        gid = targets[k]
        for (e, _), g in list(zip(order, targets))[k + 1:]:
            if g != gid:
                continue
            if e in self.caches[gid] or (gid, e) in self._pending:
                return None
            try:
                sw = self._plan_switch(gid, e, wait=False, protect=frozenset({order[k][0]}))
            except CapacityError as exc:  # no room to prefetch: the miss pays later
                log.debug("prefetch of %r into group %d skipped: %s", e, gid, exc)
                return None
            self._pending[(gid, e)] = None
            return sw
        return None

    # -- reporting ----------------------------------------------------------------------------
    def occupancy(self) -> list[dict]:
        """Per group: resident experts (LRU first), pins, HBM used/capacity of its first socket."""
        rows = []
        stats = self.cluster.call("stats", ranks=[g.ranks[0] for g in self.plan_.groups])
        for g, st in zip(self.plan_.groups, stats):
            c = self.caches[g.gid]
            home = str(self.plan_.home)
            rows.append({"group": g.gid, "node": g.node, "ranks": list(g.ranks),
                         "resident": c.resident(), "pinned": sorted(c.pinned()),
                         "hits": c.hits, "misses": c.misses,
                         "hbm_used": st["tiers"]["hbm"]["used"],
                         "hbm_capacity": st["tiers"]["hbm"]["capacity"],
                         "home_used": st["tiers"][home]["used"]})
        return rows
