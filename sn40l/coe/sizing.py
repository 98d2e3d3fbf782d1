"""Sizes of a CoE on numbers only, from the compiled artifacts: each expert's per-socket
segments and the router's HBM footprint. Pure (no Ray), so the capacity check, the footprint
report and the benchmark's node count are computed before any socket is touched."""

from __future__ import annotations

from sn40l.coe.model import ExpertBuild, build_experts
from sn40l.coe.placement import ExpertNeed
from sn40l.coe.registry import CoEConfig
from sn40l.coe.router import Router


def needs_of(config: CoEConfig, builds: dict[str, ExpertBuild]) -> list[ExpertNeed]:
    """Per-socket needs of every expert: weights and KV caches at home and in HBM,
    activations in HBM only."""
    return [ExpertNeed(e.name, builds[e.name].segment_bytes("weight"),
                       builds[e.name].segment_bytes("kv"), e.replicas, e.hot,
                       builds[e.name].segment_bytes("activation"))
            for e in config.experts]


def coe_needs(config: CoEConfig, profile: str = "sn40l") -> tuple[list[ExpertNeed], int]:
    """Per-socket needs of every expert, and the router's HBM bytes per socket."""
    return (needs_of(config, build_experts(config, profile)),
            Router(config, profile).hbm_bytes_per_socket())
