"""``sn40l hw show [PROFILE]``: a profile's numbers with their sources and assumptions."""

from __future__ import annotations

import argparse

from sn40l.hardware.profile import PROFILE_NAMES, load_profile
from sn40l.hardware.units import format_bandwidth, format_bytes, format_ns
from sn40l.output import emit_json

_FORMAT = {"bytes": format_bytes, "bandwidth": format_bandwidth, "time": format_ns,
           "flops": lambda v: f"{v / 1e12:.0f} TFLOPS", "count": str, "ratio": lambda v: f"{v:g}", "choice": str}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hw", help="hardware profiles")
    verbs = p.add_subparsers(dest="verb", required=True)
    show = verbs.add_parser("show", help="print a profile with the source of every number")
    show.add_argument("profile", nargs="?", default="sn40l",
                      help=f"{', '.join(PROFILE_NAMES)} or the path of a profile .yaml")
    show.add_argument("--sockets-per-node", type=int, default=None,
                      help="show another node layout of the profile (sn40l: 8 or 16)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)
    ls = verbs.add_parser("list", help="list the shipped profiles")
    ls.set_defaults(func=lambda args: print("\n".join(PROFILE_NAMES)) or 0)


def cmd_show(args: argparse.Namespace) -> int:
    from sn40l.hardware.profile import SCHEMA

    profile = load_profile(args.profile)
    if args.sockets_per_node is not None:
        profile = profile.with_sockets_per_node(args.sockets_per_node)
    if args.json:
        emit_json({"name": profile.name, "device": profile.device,
                          "description": profile.description, "layouts": list(profile.layouts),
                          "values": {p: {"value": q.value, "written": q.text,
                                         "source": q.source, "assumption": q.assumption}
                                     for p, q in profile.quantities.items()}}, indent=2)
        return 0
    print(f"{profile.name}: {profile.description}")
    print(f"device {profile.device}; node layouts (sockets per node): "
          f"{', '.join(map(str, profile.layouts))}\n")
    width = max(map(len, SCHEMA))
    print(f"{'KEY':<{width}}  {'VALUE':>14}  WHERE IT COMES FROM")
    for path, q in profile.quantities.items():
        shown = _FORMAT[SCHEMA[path][0]](q.value)
        print(f"{path:<{width}}  {shown:>14}  {q.provenance}")
    return 0
