"""Hardware profiles (SN40L, DGX A100, DGX H100) and exact unit parsing. Depends on nothing else."""

from sn40l.hardware.profile import (PROFILE_NAMES, SCHEMA, LinkSpec, Profile, Quantity, TierSpec,
                                    load_profile)
from sn40l.hardware.units import (format_bandwidth, format_bytes, format_ns, parse_bandwidth,
                                  parse_bytes, parse_flops, parse_time_ns)

__all__ = ["PROFILE_NAMES", "SCHEMA", "LinkSpec", "Profile", "Quantity", "TierSpec",
           "load_profile", "format_bandwidth", "format_bytes", "format_ns", "parse_bandwidth",
           "parse_bytes", "parse_flops", "parse_time_ns"]
