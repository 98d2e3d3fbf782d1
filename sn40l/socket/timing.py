"""Small pure cost functions of the socket model. Each names its terms and its source.

All results are integer nanoseconds, rounded up, so modeled time is exact and deterministic.
"""

from __future__ import annotations

from sn40l.hardware.profile import LinkSpec, Profile
from sn40l.socket.types import Tier


def transfer_ns(nbytes: int, bandwidth: int, latency_ns: int) -> int:
    """Time to move ``nbytes`` over a path of ``bandwidth`` bytes/s after ``latency_ns``.

    The alpha-beta model: latency + bytes / bandwidth (DESIGN.md, virtual time). Known error:
    ignores protocol overheads that grow with message count, which profile latencies absorb.
    """
    if nbytes < 0:
        raise ValueError(f"bytes must be >= 0, got {nbytes}")
    if nbytes == 0:
        return 0
    return int(latency_ns) + -(-int(nbytes) * 10**9 // int(bandwidth))


def copy_path(profile: Profile, src: Tier | str, dst: Tier | str) -> LinkSpec:
    """Bandwidth and latency of a copy between two tiers of one socket, or the host.

    * DDR <-> HBM: the sustained DDR->HBM copy rate (``copy.ddr_to_hbm``), below the DDR peak.
    * HBM <-> SRAM: HBM bandwidth and latency (SRAM is far faster, HBM is the bottleneck).
    * DDR <-> SRAM: DDR peak bandwidth and latency.
    * host <-> any tier: the host link (PCIe).
    * within one tier: that tier's bandwidth (a read and a write each pass; see copy_ns).
    """
    s, d = str(src), str(dst)
    pair = {s, d}
    if "host" in pair:
        return profile.link("host")
    if pair == {"ddr", "hbm"}:
        return profile.ddr_to_hbm
    if pair == {"hbm", "sram"}:
        spec = profile.tier("hbm")
        return LinkSpec("hbm<->sram", spec.bandwidth, spec.latency_ns)
    if pair == {"ddr", "sram"}:
        spec = profile.tier("ddr")
        return LinkSpec("ddr<->sram", spec.bandwidth, spec.latency_ns)
    spec = profile.tier(s)
    return LinkSpec(f"{s}<->{s}", spec.bandwidth, spec.latency_ns)


def copy_ns(profile: Profile, src: Tier | str, dst: Tier | str, nbytes: int) -> int:
    """Modeled time of one copy of ``nbytes`` from ``src`` to ``dst`` (see :func:`copy_path`)."""
    path = copy_path(profile, src, dst)
    moved = 2 * nbytes if str(src) == str(dst) else nbytes  # same tier: read + write
    return transfer_ns(moved, path.bandwidth, path.latency_ns)
