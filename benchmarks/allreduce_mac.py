"""Cost of authenticating collective messages: for the sizes the transports send (a
header-only shared-memory message, 4 KiB of elements by value, a 64 KiB chunk, a 4 MiB TCP ring
piece), the whole encode + decode of one message and, within it, the two MAC computations
(sender and receiver). Wall time on this machine, medians of 7 runs. Not a test.

    python benchmarks/allreduce_mac.py
"""

from __future__ import annotations

import os
import statistics
import time

from sn40l.collectives.wire import _mac, decode, encode


def _time(fn, repeats: int) -> float:
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        runs.append((time.perf_counter() - t0) / repeats)
    return statistics.median(runs)


def main() -> None:
    key, group = os.urandom(32), b"model-tp8-3"
    print(f"{'message':>28} | {'encode+decode us':>16} | {'of which MAC us':>15} | {'MAC %':>5}")
    for label, size, whole in (("header only (shm)", 0, True),
                               ("4 KiB by value (shm)", 4096, True),
                               ("64 KiB chunk (shm)", 65536, True),
                               ("4 MiB ring piece (net)", 4 << 20, False)):
        payload = os.urandom(size)
        repeats = max(3, (1 << 22) // max(size, 4096))
        parts = encode(key, group, 1, 2, 3, 4, count=size // 4, dt=b"<f4", payload=payload,
                       mac_payload=whole)
        data = b"".join(parts)
        covered = parts[:-1] if whole else parts[:1]

        def both():
            decode(b"".join(encode(key, group, 1, 2, 3, 4, count=size // 4, dt=b"<f4",
                                   payload=payload, mac_payload=whole)), key, whole)

        total = _time(both, repeats)
        macs = 2 * _time(lambda: _mac(key, covered), repeats)
        print(f"{label:>28} | {total * 1e6:>16.2f} | {macs * 1e6:>15.2f} | "
              f"{100 * macs / total:>5.0f}")
        assert decode(data, key, whole).seq == 1
    print("one message, sender and receiver side together; the 4 MiB TCP frame's MAC covers "
          "its header (the connection is authenticated)")


if __name__ == "__main__":
    main()
