"""Placement of experts over the TP groups of a cluster, and the capacity check before load.

A node of S sockets holds S/tp TP groups. Each expert gets one or more *home* groups that keep
its weights in DDR (SN40L) or in the node's host memory (GPU baselines, DDR capacity 0). The
check runs on numbers only, before anything is written, and a CoE that does not fit is refused
with the need and the capacity of every tier.

Policies are looked up by name in :data:`POLICIES`; each is a pure function
``policy(experts, groups, capacity) -> {expert: [gid, ...]}`` and raises :class:`CapacityError`
when it cannot place an expert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from sn40l.coe.types import Home
from sn40l.errors import CapacityError, ConfigError
from sn40l.hardware.profile import Profile
from sn40l.hardware.units import format_bytes
from sn40l.socket.memory import DEFAULT_ALIGNMENT


def aligned(nbytes: int) -> int:
    """Bytes a region of ``nbytes`` takes in a tier (the allocator's 256-byte alignment)."""
    a = DEFAULT_ALIGNMENT
    return max(a, -(-nbytes // a) * a)


@dataclass(frozen=True)
class Group:
    """A TP group: ``tp`` sockets of one node that hold and run an expert together."""

    gid: int
    node: int
    ranks: tuple[int, ...]


@dataclass(frozen=True)
class ExpertNeed:
    """Per-socket bytes of one expert (weights, state, scratch) and placement hints."""

    name: str
    weight_bytes: int
    state_bytes: int
    replicas: int = 1
    hot: bool = False
    scratch_bytes: int = 0  # activations: allocated in HBM while resident, never homed

    @property
    def per_socket(self) -> int:
        """Home bytes per socket: the weights and the state (KV caches)."""
        return aligned(self.weight_bytes) + (aligned(self.state_bytes) if self.state_bytes
                                             else 0)

    @property
    def resident(self) -> int:
        """HBM bytes per socket while resident: home segments plus scratch."""
        return self.per_socket + (aligned(self.scratch_bytes) if self.scratch_bytes else 0)


def make_groups(nodes: int, sockets_per_node: int, tp: int) -> list[Group]:
    if tp > sockets_per_node or sockets_per_node % tp:
        raise ConfigError(f"expert TP {tp} must divide the {sockets_per_node} sockets of a node; "
                          f"allowed: {', '.join(str(d) for d in range(1, sockets_per_node + 1) if sockets_per_node % d == 0)}")
    out = []
    for n in range(nodes):
        for g in range(sockets_per_node // tp):
            base = n * sockets_per_node + g * tp
            out.append(Group(len(out), n, tuple(range(base, base + tp))))
    return out


def home_tier(profile: Profile) -> Home:
    return Home.DDR if profile.tier("ddr").capacity > 0 else Home.HOST


def home_capacity_per_socket(profile: Profile) -> int:
    """Bytes per socket an expert home offers: the socket's DDR, or its share of host memory."""
    if home_tier(profile) is Home.DDR:
        return profile.tier("ddr").capacity
    return int(profile.value("node.host_memory")) // profile.sockets_per_node


# -- policies --------------------------------------------------------------------------------

Policy = Callable[[list[ExpertNeed], list[Group], dict[int, int]], dict[str, list[int]]]


def _pick(need: ExpertNeed, groups: list[Group], free: dict[int, int], count: int,
          order: Callable[[Group], tuple]) -> list[int]:
    chosen: list[int] = []
    nodes_used: set[int] = set()
    for _ in range(count):
        fits = [g for g in groups if g.gid not in chosen and free[g.gid] >= need.per_socket]
        if not fits:
            most = max(free.values(), default=0)
            raise CapacityError(
                f"placement: expert {need.name!r} needs {format_bytes(need.per_socket)} per "
                f"socket in {count} group(s); the emptiest remaining group has "
                f"{format_bytes(most)} per socket")
        # prefer a node that holds no copy yet, then the policy's order
        best = min(fits, key=lambda g: (g.node in nodes_used, *order(g)))
        chosen.append(best.gid)
        nodes_used.add(best.node)
        free[best.gid] -= need.per_socket
    return chosen


def spread(experts: list[ExpertNeed], groups: list[Group], free: dict[int, int]
           ) -> dict[str, list[int]]:
    """Capacity-based spread: each expert (largest first) goes to the group with the most free
    home capacity; ties go to the lowest group id. Replicas land on distinct nodes first."""
    out = {}
    for need in sorted(experts, key=lambda e: -e.per_socket):
        out[need.name] = _pick(need, groups, free, need.replicas,
                               lambda g: (-free[g.gid], g.gid))
    return {e.name: out[e.name] for e in experts}


def pack(experts: list[ExpertNeed], groups: list[Group], free: dict[int, int]
         ) -> dict[str, list[int]]:
    """First fit in group order: fills node 0 before node 1 (fewest nodes busy)."""
    return {need.name: _pick(need, groups, free, need.replicas, lambda g: (g.gid,))
            for need in experts}


def replicate_hot(experts: list[ExpertNeed], groups: list[Group], free: dict[int, int]
                  ) -> dict[str, list[int]]:
    """Spread, and every expert marked ``hot`` gets a home on every node (so a request for it
    never leaves the node it arrives at)."""
    nodes = len({g.node for g in groups})
    boosted = [ExpertNeed(e.name, e.weight_bytes, e.state_bytes,
                          max(e.replicas, nodes) if e.hot else e.replicas, e.hot)
               for e in experts]
    return spread(boosted, groups, free)


POLICIES: dict[str, Policy] = {"spread": spread, "pack": pack, "replicate-hot": replicate_hot}


# -- the plan and its capacity check --------------------------------------------------------

@dataclass(frozen=True)
class PlacementPlan:
    """Where every expert lives and what each tier must hold (per socket)."""

    groups: tuple[Group, ...]
    homes: dict[str, tuple[int, ...]]
    home: Home
    router_gids: tuple[int, ...]
    router_bytes: int
    cache_budget: dict[int, int]  # HBM bytes per socket left for cached experts, by group
    home_used: dict[int, int]     # home bytes per socket, by group
    home_capacity: int

    def experts_on(self, gid: int) -> list[str]:
        return [name for name, gids in self.homes.items() if gid in gids]

    def nodes_used(self) -> list[int]:
        return sorted({self.groups[g].node for gids in self.homes.values() for g in gids})


def plan(experts: list[ExpertNeed], profile: Profile, nodes: int, tp: int,
         router_bytes: int, policy: str = "spread", pins: tuple[str, ...] = (),
         what: str = "CoE") -> PlacementPlan:
    """Check capacity tier by tier, then place. Nothing is written to any socket here."""
    spn = profile.sockets_per_node
    groups = make_groups(nodes, spn, tp)
    home = home_tier(profile)
    cap_home = home_capacity_per_socket(profile)
    hbm = profile.tier("hbm").capacity
    router_s = aligned(router_bytes) if router_bytes else 0
    total_home = sum(e.per_socket * e.replicas for e in experts)
    largest = max(experts, key=lambda e: e.resident)
    pinned = sum(e.resident for e in experts if e.name in pins)
    problems = []
    if total_home > cap_home * len(groups):
        label = "DDR" if home is Home.DDR else "host memory"
        problems.append(
            f"{label}: needs {format_bytes(total_home * tp)} for {len(experts)} experts "
            f"({format_bytes(total_home / len(groups))} per socket over {len(groups)} TP{tp} "
            f"groups), has {format_bytes(cap_home * tp * len(groups))} "
            f"({format_bytes(cap_home)} per socket)")
    if router_s + pinned + largest.resident > hbm:
        problems.append(
            f"HBM: needs {format_bytes(router_s + pinned + largest.resident)} per socket "
            f"(router {format_bytes(router_s)} + pinned experts {format_bytes(pinned)} + the "
            f"largest expert {largest.name!r} {format_bytes(largest.resident)}), has "
            f"{format_bytes(hbm)} per socket")
    if problems:
        raise CapacityError(f"{what} does not fit {nodes} node(s) of {profile.name} "
                            f"({nodes * spn} sockets): " + "; ".join(problems))
    if policy not in POLICIES:
        raise ConfigError(f"unknown placement policy {policy!r}; policies: {', '.join(POLICIES)}")
    free = {g.gid: cap_home for g in groups}
    homes = POLICIES[policy](experts, groups, free)
    router_gids = tuple(next(g.gid for g in groups if g.node == n) for n in range(nodes))
    budget = {}
    by_name = {e.name: e for e in experts}
    for g in groups:
        held = [by_name[n] for n, gids in homes.items() if g.gid in gids]
        budget[g.gid] = hbm - (router_s if g.gid in router_gids else 0)
        if held and max(e.resident for e in held) > budget[g.gid]:
            raise CapacityError(
                f"{what}: HBM of group {g.gid} (node {g.node}) has {format_bytes(budget[g.gid])}"
                f" per socket after the router, less than expert "
                f"{max(held, key=lambda e: e.resident).name!r} needs")
    return PlacementPlan(tuple(groups), {k: tuple(v) for k, v in homes.items()}, home,
                         router_gids, router_s, budget,
                         {g.gid: cap_home - free[g.gid] for g in groups}, cap_home)


def footprint(profile: Profile, expert: ExpertNeed, tp: int, n_experts: int,
              router_bytes: int = 0) -> dict:
    """How many experts one node holds and how many nodes ``n_experts`` need, in the home tier
    (DDR or host memory) and HBM-only (every expert resident, no switching)."""
    spn = profile.sockets_per_node
    groups = spn // tp
    hbm = profile.tier("hbm").capacity
    per_node_home = groups * (home_capacity_per_socket(profile) // expert.per_socket)
    per_node_hbm = groups * ((hbm - aligned(router_bytes)) // expert.resident)
    # The SN40L paper's optimistic DGX rule: all of HBM and host memory hold weights and KV
    # (here less the router and one resident expert as working space). The emulated runtime
    # homes experts in the home tier only, so the home figure is what it can run.
    spare_hbm = max(0, hbm - aligned(router_bytes) - expert.resident)
    per_node_both = groups * ((home_capacity_per_socket(profile) + spare_hbm)
                              // expert.per_socket)
    return {"profile": profile.name, "home": str(home_tier(profile)),
            "expert_bytes": expert.resident * tp,
            "experts_per_node_home": per_node_home,
            "experts_per_node_hbm": per_node_hbm,
            "experts_per_node_hbm_and_home": per_node_both,
            "nodes_needed_home": math.ceil(n_experts / per_node_home) if per_node_home else None,
            "nodes_needed_hbm": math.ceil(n_experts / per_node_hbm) if per_node_hbm else None}
