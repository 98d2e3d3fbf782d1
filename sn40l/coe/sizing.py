"""Sizes of a CoE on numbers only: each expert's per-socket segments and the router's HBM
footprint. Pure (no Ray), so the capacity check, the footprint report and the benchmark's node
count are computed before any socket is touched."""

from __future__ import annotations

from dataclasses import dataclass

from sn40l.coe.model import (ModelShape, kv_numel_per_socket, model_shape, shape_from_hf_config,
                             weight_numel_per_socket)
from sn40l.coe.placement import ExpertNeed, aligned
from sn40l.coe.registry import CoEConfig, ExpertSpec
from sn40l.coe.router import CentroidRouter
from sn40l.coe.types import SegmentRole, Weights
from sn40l.errors import ConfigError


@dataclass(frozen=True)
class Segment:
    """One per-socket segment of an expert: its name suffix, role and element count (bf16)."""

    name: str
    role: SegmentRole
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * 2


def expert_shape(config: CoEConfig, e: ExpertSpec) -> ModelShape:
    if e.preset:
        shape = model_shape(e.preset)
    elif e.checkpoint:
        shape = shape_from_hf_config(e.checkpoint)
    else:
        raise ConfigError(f"expert {e.name!r}: pef = {e.pef!r} needs the compiler's artifact "
                          "reader, which this build does not have; use preset or checkpoint")
    if config.weights is Weights.RANDOM and shape.name != "tiny":
        raise ConfigError(f"expert {e.name!r}: weights: random needs a model the runtime "
                          f"executes for real (preset 'tiny'), got {shape.name!r}; use "
                          "weights: phantom for large experts")
    return shape


def expert_segments(config: CoEConfig, e: ExpertSpec, shape: ModelShape) -> list[Segment]:
    """Weights (read-only) and the KV cache sized for serving.max_batch x max_context."""
    s = config.serving
    return [Segment("weights", SegmentRole.WEIGHT, weight_numel_per_socket(shape, e.tp)),
            Segment("kv", SegmentRole.STATE,
                    kv_numel_per_socket(shape, e.tp, s.max_batch, s.max_context))]


def resident_bytes(segments: list[Segment]) -> int:
    """HBM bytes per socket an expert takes when resident (aligned segments)."""
    return sum(aligned(s.nbytes) for s in segments)


def coe_needs(config: CoEConfig) -> tuple[list[ExpertNeed], int]:
    """Per-socket needs of every expert, and the router's HBM bytes per socket."""
    needs = []
    for e in config.experts:
        segs = expert_segments(config, e, expert_shape(config, e))
        w = sum(s.nbytes for s in segs if s.role is SegmentRole.WEIGHT)
        st = sum(s.nbytes for s in segs if s.role is SegmentRole.STATE)
        needs.append(ExpertNeed(e.name, w, st, e.replicas, e.hot))
    return needs, CentroidRouter(config).hbm_bytes_per_socket()
