"""Cost of one kernel on one socket, from the hardware profile. Small pure functions.

A kernel streams ``weight_bytes + kv_bytes + act_bytes`` through HBM and does ``flops`` of BF16
math. Its time is ``launch + max(flops / (peak x eff_c), bytes / (B_hbm x eff_h))`` (the roofline
of DESIGN.md). In a fused kernel (a whole decoder layer) weight streaming overlaps compute and
the layer's collectives, so the kernel takes ``max(bytes / (B_hbm x eff_fused), compute +
collectives)``; unfused kernels pay their collectives after the math and one launch each.
Efficiencies and launch overheads come from the profile (``efficiency.*``, ``launch.*``).

Collective times here are *estimates* for ``sn40l inspect``; on sockets they emerge from the
messages of :mod:`sn40l.collectives`. The estimate uses the star algorithm for small messages
(2 latencies plus n x S / B on the root's port) and the ring otherwise. Known error: it ignores
port contention between concurrent collectives.
"""

from __future__ import annotations

import math

from sn40l.compiler.types import FusionLevel, Orchestration
from sn40l.hardware.profile import Profile


def compute_ns(flops: int, profile: Profile, fusion: FusionLevel) -> int:
    """BF16 math at the profile's peak times the fusion level's compute efficiency."""
    eff = profile.value(f"efficiency.compute_{fusion.value}")
    return math.ceil(flops / (profile.bf16_flops * eff) * 1e9) if flops else 0


def hbm_ns(nbytes: int, profile: Profile, fusion: FusionLevel) -> int:
    """HBM streaming at peak bandwidth times the fusion level's HBM efficiency."""
    eff = profile.value(f"efficiency.hbm_{fusion.value}")
    return math.ceil(nbytes / (profile.tier("hbm").bandwidth * eff) * 1e9) if nbytes else 0


def allreduce_estimate_ns(nbytes: int, n: int, profile: Profile, cross_node: bool) -> int:
    """Estimated AllReduce of ``nbytes`` over ``n`` sockets (see the module docstring)."""
    if n <= 1 or nbytes == 0:
        return 0
    link = profile.link("internode" if cross_node else "p2p")
    alpha, bw = link.latency_ns, link.bandwidth
    star = 2 * alpha + n * nbytes / bw * 1e9
    ring = 2 * (n - 1) * (alpha + nbytes / (n * bw) * 1e9)
    return math.ceil(min(star, ring))


def launch_ns(profile: Profile, orchestration: Orchestration) -> int:
    """Per-kernel launch overhead of the orchestration mode."""
    return int(profile.value(f"launch.{orchestration.value}"))


def kernel_ns(kernel: dict, profile: Profile, fusion: FusionLevel,
              orchestration: Orchestration, tp: int, cross_node: bool) -> int:
    """Modeled time of one kernel description (see :mod:`sn40l.compiler.plan`)."""
    stream = kernel["weight_bytes"] + kernel["kv_bytes"] + kernel["act_bytes"]
    mem = hbm_ns(stream, profile, fusion)
    math_ns = compute_ns(kernel["flops"], profile, fusion)
    comm = sum(allreduce_estimate_ns(b, tp, profile, cross_node) for b in kernel["allreduce"])
    comm += sum(allreduce_estimate_ns(b, tp, profile, cross_node) // 2
                for b in kernel["allgather"])  # an allgather is the second half of a ring
    if fusion is FusionLevel.FUSED:
        body = max(mem, math_ns + comm)
    else:
        body = max(mem, math_ns) + comm
    return launch_ns(profile, orchestration) + body
