"""Slurm's time formats: time limits, durations as squeue/sacct print them, --begin times.

Time limits are kept in whole seconds (Slurm keeps minutes; seconds let short limits be tested
and cost nothing). ``None`` means no limit (UNLIMITED).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

UNLIMITED = None

_LIMIT_FORMS = [
    # (regex, names of the groups in order days, hours, minutes, seconds)
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
]
_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time_limit(text: str) -> int | None:
    """Seconds of a Slurm time limit, or None for no limit.

    Accepts every form of ``sbatch --time``: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, and
    UNLIMITED / INFINITE / -1; 0 also means no limit, as in Slurm. Raises ValueError otherwise.
    """
    t = text.strip()
    if t.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return UNLIMITED
    for pattern, names in _LIMIT_FORMS:
        m = pattern.match(t)
        if m:
            seconds = sum(int(v) * _SECONDS[n] for v, n in zip(m.groups(), names))
            return UNLIMITED if seconds == 0 else seconds
    raise ValueError(f"invalid time specification {text!r}")


def format_duration(seconds: float | None, style: str = "squeue") -> str:
    """A duration as Slurm prints it.

    ``squeue`` style (TIME, TIME_LIMIT): ``M:SS`` under an hour, ``H:MM:SS``, ``D-HH:MM:SS``.
    ``sacct`` style (Elapsed, Timelimit): ``HH:MM:SS`` or ``D-HH:MM:SS``. None is UNLIMITED.
    """
    if seconds is None:
        return "UNLIMITED"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{s:02d}"
    if style == "sacct":
        return f"{hours:02d}:{minutes:02d}:{s:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{s:02d}"
    return f"{minutes}:{s:02d}"


def format_timestamp(epoch: float | None) -> str:
    """Slurm's ISO-like local time, ``2026-11-22T10:04:05``; ``Unknown`` when not set."""
    if not epoch:
        return "Unknown"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%dT%H:%M:%S")


_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400,
          "w": 604800, "week": 604800, "weeks": 604800}
_NAMED_TIMES = {"midnight": (0, 0), "noon": (12, 0), "elevenses": (11, 0), "fika": (15, 0),
                "teatime": (16, 0)}


def parse_begin(text: str, now: float | None = None) -> float:
    """Epoch seconds of a ``--begin`` value.

    Forms: ``now[+N[units]]`` (units seconds (default), minutes, hours, days, weeks),
    ``HH:MM[:SS]`` (today, or tomorrow if already past), ``YYYY-MM-DD[THH:MM[:SS]]``,
    ``MM/DD[/YY]``, and ``today``, ``tomorrow``, ``midnight``, ``noon``, ``elevenses``,
    ``fika``, ``teatime`` (the next such time). Raises ValueError otherwise.
    """
    now = time.time() if now is None else now
    t = text.strip().lower()
    base = datetime.fromtimestamp(now)
    m = re.match(r"^now(?:\+(\d+)\s*([a-z]*))?$", t)
    if m:
        if m.group(1) is None:
            return now
        unit = m.group(2)
        if unit not in _UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        return now + int(m.group(1)) * _UNITS[unit]
    if t == "today":
        return base.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    if t == "tomorrow":
        return (base.replace(hour=0, minute=0, second=0, microsecond=0)
                + timedelta(days=1)).timestamp()
    if t in _NAMED_TIMES:
        h, mi = _NAMED_TIMES[t]
        return _next_clock(base, h, mi, 0).timestamp()
    m = re.match(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$", t)
    if m:
        h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        _check_clock(h, mi, s, text)
        return _next_clock(base, h, mi, s).timestamp()
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:t(\d{1,2}):(\d{2})(?::(\d{2}))?)?$", t)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        h, mi, s = int(m.group(4) or 0), int(m.group(5) or 0), int(m.group(6) or 0)
        _check_clock(h, mi, s, text)
        return _datetime(y, mo, d, h, mi, s, text).timestamp()
    m = re.match(r"^(\d{1,2})/(\d{1,2})(?:/(\d{2}))?$", t)
    if m:
        y = 2000 + int(m.group(3)) if m.group(3) else base.year
        return _datetime(y, int(m.group(1)), int(m.group(2)), 0, 0, 0, text).timestamp()
    raise ValueError(f"invalid time specification {text!r}")


def _check_clock(h: int, mi: int, s: int, text: str) -> None:
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"invalid time of day in {text!r}")


def _datetime(y: int, mo: int, d: int, h: int, mi: int, s: int, text: str) -> datetime:
    try:
        return datetime(y, mo, d, h, mi, s)
    except ValueError:
        raise ValueError(f"invalid date in {text!r}") from None


def _next_clock(base: datetime, h: int, mi: int, s: int) -> datetime:
    at = base.replace(hour=h, minute=mi, second=s, microsecond=0)
    return at if at >= base else at + timedelta(days=1)


def parse_time_point(text: str, now: float | None = None) -> float:
    """Epoch seconds of a sacct ``-S``/``-E`` value: the ``--begin`` forms plus
    ``now-N[units]`` and ``MMDD[YY]``."""
    now = time.time() if now is None else now
    t = text.strip().lower()
    m = re.match(r"^now-(\d+)\s*([a-z]*)$", t)
    if m:
        if m.group(2) not in _UNITS:
            raise ValueError(f"unknown time unit {m.group(2)!r} in {text!r}")
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    m = re.match(r"^(\d{2})(\d{2})(\d{2})?$", t)
    if m:
        y = 2000 + int(m.group(3)) if m.group(3) else datetime.fromtimestamp(now).year
        return _datetime(y, int(m.group(1)), int(m.group(2)), 0, 0, 0, text).timestamp()
    if re.match(r"^\d{1,2}:\d{2}(:\d{2})?$", t):  # a time of day today (not the next one)
        h, mi, *s = (int(x) for x in t.split(":"))
        base = datetime.fromtimestamp(now)
        return base.replace(hour=h, minute=mi, second=s[0] if s else 0, microsecond=0).timestamp()
    if t == "midnight":
        return parse_begin("today", now)
    return parse_begin(text, now)
