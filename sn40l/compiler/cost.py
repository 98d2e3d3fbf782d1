"""Cost of one kernel on one socket, from the hardware profile. Small pure functions.

A kernel streams ``weight_bytes + kv_bytes + act_bytes`` through HBM and does ``flops`` of BF16
math. Its time is ``launch + max(flops / (peak x eff_c), bytes / (B_hbm x eff_h))`` (the roofline
of DESIGN.md). In a fused kernel (a whole decoder layer) weight streaming overlaps compute and
the layer's collectives, so the kernel takes ``max(bytes / (B_hbm x eff_fused), compute +
collectives)``; unfused kernels pay their collectives after the math and one launch each.
Efficiencies come from the profile (``efficiency.*``). On a GPU profile (``execution.fusion_scope:
operator``) even a ``fused`` layer is several kernels, each priced like an unfused one (its
collectives after its math), at the GPU's own efficiencies.

Launch cost (the SN40L paper's AGCU commands "Program Load, Argument Load, and Kernel Execute"):
under *software* orchestration the host issues all three for every kernel, so a kernel pays
``kernel_execute`` (host doorbell and completion over PCIe) + Argument Load (``argument_bytes``
over the host link) + Program Load (``config_bytes_per_unit`` x the socket's PCUs and PMUs at
``program_load_bandwidth``). Under *hardware* orchestration a static schedule on the device steps
to the next kernel (``launch.hardware``) and pays Program Load only when the kernel's program
differs from the one before it (a decoder loop reuses its loaded program). A kernel description
that stands for several device kernels (the unfused baseline's attention is RoPE, QK^T, softmax
and PV) says so with ``launches``; ``reload`` marks a program change (see
:func:`sn40l.compiler.plan.kernels`).

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


def program_load_ns(profile: Profile) -> int:
    """Program Load: the configuration of every PCU and PMU of the socket (as many PMUs as
    PCUs, ``compute.units`` each) streamed at ``orchestration.program_load_bandwidth``."""
    nbytes = int(profile.value("orchestration.config_bytes_per_unit")) * 2 * int(
        profile.value("compute.units"))
    bw = int(profile.value("orchestration.program_load_bandwidth"))
    return math.ceil(nbytes * 1e9 / bw) if nbytes else 0


def argument_load_ns(profile: Profile) -> int:
    """Argument Load from the host: one host-link transfer of ``argument_bytes``."""
    nbytes = int(profile.value("orchestration.argument_bytes"))
    if not nbytes:
        return 0
    host = profile.link("host")
    return host.latency_ns + math.ceil(nbytes * 1e9 / host.bandwidth)


def software_launch_ns(profile: Profile) -> int:
    """Host-orchestrated launch of one kernel: Kernel Execute + Argument Load + Program Load."""
    return (int(profile.value("orchestration.kernel_execute")) + argument_load_ns(profile)
            + program_load_ns(profile))


def hardware_launch_ns(profile: Profile, reload: bool = True) -> int:
    """Device-orchestrated launch: the static schedule's step, plus Program Load when the
    program changes."""
    return int(profile.value("launch.hardware")) + (program_load_ns(profile) if reload else 0)


def launch_ns(profile: Profile, orchestration: Orchestration) -> int:
    """Launch cost of one kernel whose program differs from the previous kernel's."""
    if orchestration is Orchestration.SOFTWARE:
        return software_launch_ns(profile)
    return hardware_launch_ns(profile, True)


def kernel_launch_ns(kernel: dict, profile: Profile, orchestration: Orchestration) -> int:
    """Launch cost of a kernel description: ``launches`` device kernels (default 1); under
    hardware orchestration Program Load only when ``reload`` (default True)."""
    n = int(kernel.get("launches", 1))
    if orchestration is Orchestration.SOFTWARE:
        return n * software_launch_ns(profile)
    return hardware_launch_ns(profile, bool(kernel.get("reload", True))) + (n - 1) * (
        hardware_launch_ns(profile, True))


def overlaps(profile: Profile, fusion: FusionLevel) -> bool:
    """Whether a kernel's weight streaming overlaps its collectives: only a fused decoder
    kernel of a dataflow socket (``execution.fusion_scope: decoder``)."""
    return fusion is FusionLevel.FUSED and profile.fusion_scope == "decoder"


def kernel_ns(kernel: dict, profile: Profile, fusion: FusionLevel,
              orchestration: Orchestration, tp: int, cross_node: bool) -> int:
    """Modeled time of one kernel description (see :mod:`sn40l.compiler.plan`)."""
    stream = kernel["weight_bytes"] + kernel["kv_bytes"] + kernel["act_bytes"]
    mem = hbm_ns(stream, profile, fusion)
    math_ns = compute_ns(kernel["flops"], profile, fusion)
    comm = sum(allreduce_estimate_ns(b, tp, profile, cross_node) for b in kernel["allreduce"])
    comm += sum(allreduce_estimate_ns(b, tp, profile, cross_node) // 2
                for b in kernel["allgather"])  # an allgather is the second half of a ring
    if overlaps(profile, fusion):
        body = max(mem, math_ns + comm)
    else:
        body = max(mem, math_ns) + comm
    return kernel_launch_ns(kernel, profile, orchestration) + body
