"""AllReduce benchmark (same as `sn40l bench allreduce`): prints the table for 8 sockets on one
node and 16 over two nodes. Medians over iterations; wall and modeled time apart. Not a test.

    python benchmarks/allreduce.py [--sizes 4K,64K,1M,16M,64M]
"""

from __future__ import annotations

import sys

from sn40l.cli import main

if __name__ == "__main__":
    extra = sys.argv[1:]
    code = main(["bench", "allreduce", "--sockets", "8", *extra])
    code |= main(["bench", "allreduce", "--sockets", "8", "--nodes", "2", *extra])
    sys.exit(code)
