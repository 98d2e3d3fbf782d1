"""CoE benchmark: modeled latency of a Composition of Experts on SN40L vs DGX H100/A100.

Runs the same sweep as ``sn40l coe bench`` (the defaults are the issue's command line) and prints
the table: latency per batch split into router / switch / expert time (modeled, from the
profiles), HBM hit rate, wall seconds apart, and the footprint report. Not a test.

    python benchmarks/coe.py [--experts 10,50,100,150] [--batch 1,8] [--tokens 20,200]
                             [--profiles sn40l,dgx-h100,dgx-a100] [--plot coe.png] [--json]
"""

from __future__ import annotations

import sys

from sn40l.cli import main

if __name__ == "__main__":
    sys.exit(main(["coe", "bench", *sys.argv[1:]]))
