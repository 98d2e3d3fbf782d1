"""Exact parsing and printing of human units: bytes, bandwidth, FLOP/s and time.

Every quantity is parsed into an integer in a base unit (bytes, bytes per second, FLOP per
second, nanoseconds) with :class:`decimal.Decimal` arithmetic, so "1.5TiB" is exactly
1649267441664 bytes and "1.8TB/s" exactly 1800000000000 B/s. A value that does not land on a
whole base unit (for example "0.5B") is refused rather than rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Callable

from sn40l.errors import UnitError

_BYTE_PREFIX = {
    "": 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_TIME_NS = {"ns": Decimal(1), "us": Decimal(10**3), "µs": Decimal(10**3), "ms": Decimal(10**6),
            "s": Decimal(10**9), "min": Decimal(60 * 10**9), "h": Decimal(3600 * 10**9)}
_FLOPS_PREFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}

_NUM = r"(?P<num>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*"
_BYTES_RE = re.compile(_NUM + r"(?P<prefix>[KMGTP]i?)?B$")
_BW_RE = re.compile(_NUM + r"(?P<prefix>[KMGTP]i?)?B/s$")
_FLOPS_RE = re.compile(_NUM + r"(?P<prefix>[KMGTP])?FLOPS$")
_TIME_RE = re.compile(_NUM + r"(?P<unit>ns|us|µs|ms|s|min|h)$")


def _whole(value: Decimal, text: str, kind: str) -> int:
    if value != value.to_integral_value():
        raise UnitError(f"{text!r} is not a whole number of {kind}")
    return int(value)


def _parse(text: object, regex: re.Pattern, kind: str, example: str,
           scale: Callable[[re.Match], Decimal]) -> int:
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a {kind} quantity; write it like {example!r}")
    if isinstance(text, int):
        return text
    if not isinstance(text, str):
        raise UnitError(f"{text!r} is not a {kind} quantity; write it like {example!r}")
    match = regex.match(text.strip())
    if match is None:
        raise UnitError(f"{text!r} is not a {kind} quantity; write it like {example!r}")
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise UnitError(f"{text!r}: bad number") from exc
    return _whole(number * scale(match), text, kind)


def parse_bytes(text: object) -> int:
    """Parse "64GiB", "520MiB", "13.5GB" or a plain int into bytes."""
    return _parse(text, _BYTES_RE, "bytes", "64GiB",
                  lambda m: Decimal(_BYTE_PREFIX[m.group("prefix") or ""]))


def parse_bandwidth(text: object) -> int:
    """Parse "1.8TB/s", "200GB/s" or a plain int into bytes per second."""
    return _parse(text, _BW_RE, "bytes/s", "1.8TB/s",
                  lambda m: Decimal(_BYTE_PREFIX[m.group("prefix") or ""]))


def parse_flops(text: object) -> int:
    """Parse "638TFLOPS" or a plain int into FLOP per second."""
    return _parse(text, _FLOPS_RE, "FLOP/s", "638TFLOPS",
                  lambda m: Decimal(_FLOPS_PREFIX[m.group("prefix") or ""]))


def parse_time_ns(text: object) -> int:
    """Parse "2us", "1.5ms", "30s" or a plain int (nanoseconds) into nanoseconds."""
    return _parse(text, _TIME_RE, "nanoseconds", "2us", lambda m: _TIME_NS[m.group("unit")])


def format_bytes(n: float) -> str:
    """Binary-prefixed size for tables: 68719476736 -> '64.0 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_bandwidth(bytes_per_s: float) -> str:
    """Decimal-prefixed bandwidth as vendors quote it: 1.8e12 -> '1.80 TB/s'."""
    value = float(bytes_per_s)
    for unit in ("B/s", "KB/s", "MB/s", "GB/s", "TB/s", "PB/s"):
        if abs(value) < 1000 or unit == "PB/s":
            return f"{value:.2f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_ns(ns: float) -> str:
    """Human time for tables: 1500 -> '1.50 us'."""
    value = float(ns)
    if abs(value) < 1e3:
        return f"{value:.0f} ns"
    if abs(value) < 1e6:
        return f"{value / 1e3:.2f} us"
    if abs(value) < 1e9:
        return f"{value / 1e6:.3f} ms"
    return f"{value / 1e9:.3f} s"
