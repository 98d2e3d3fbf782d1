"""Cost of authenticating collective messages: encode + decode of one message with its
HMAC-SHA256/128 against the same header and payload packed and parsed without a MAC, for the
sizes the transports send (a header-only shared-memory message, a 4 KiB star by value, a 64 KiB
chunk, a 4 MiB TCP ring piece). Wall time on this machine, medians of repeats. Not a test.

    python benchmarks/allreduce_mac.py
"""

from __future__ import annotations

import os
import statistics
import time

from sn40l.collectives.wire import HEAD, decode, encode


def _plain(group: bytes, payload: bytes) -> int:
    """The same header and payload without a MAC (what the wire cost before #11)."""
    head = HEAD.pack(0, 3, len(group), 0, 0, 1, 2, 3, 4, 0, len(payload) // 4, len(payload))
    data = b"".join((head, group, b"<f4", payload))
    return HEAD.unpack_from(data)[5] + len(memoryview(data)[HEAD.size + len(group) + 3:])


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
    print(f"{'message':>26} | {'no MAC us':>9} | {'with MAC us':>11} | {'MAC cost us':>11}")
    for label, size in (("header only (shm)", 0), ("4 KiB star by value", 4096),
                        ("64 KiB chunk", 65536), ("4 MiB ring piece (net)", 4 << 20)):
        payload = os.urandom(size)
        repeats = max(3, (1 << 22) // max(size, 4096))

        def authed():
            data = b"".join(encode(key, group, 1, 2, 3, 4, count=size // 4, dt=b"<f4",
                                   payload=payload))
            return decode(data, key)

        plain = _time(lambda: _plain(group, payload), repeats)
        mac = _time(authed, repeats)
        print(f"{label:>26} | {plain * 1e6:>9.2f} | {mac * 1e6:>11.2f} | "
              f"{(mac - plain) * 1e6:>11.2f}")
    print("encode + decode of one message, sender and receiver side together")


if __name__ == "__main__":
    main()
