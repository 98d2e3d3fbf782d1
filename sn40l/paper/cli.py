"""``sn40l paper --out DIR``: rerun the SN40L paper's experiments and write a report."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paper", help="rerun the SN40L paper's experiments and write a report")
    p.add_argument("--out", required=True, help="report directory (report.md, PNGs, JSON)")
    p.add_argument("--quick", action="store_true",
                   help="a reduced configuration (fewer tokens and CoE points), for tests")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_paper)


def cmd_paper(args: argparse.Namespace) -> int:
    from sn40l.paper.experiments import PaperConfig
    from sn40l.paper.report import check_out, run

    from pathlib import Path

    check_out(Path(args.out))
    cfg = PaperConfig.quick() if args.quick else PaperConfig()
    res = run(args.out, cfg, quiet=args.quiet)
    print(f"wrote {args.out}/report.md ({res['wall_s']:.0f} s wall)")
    return 0
