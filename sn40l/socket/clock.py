"""Virtual time of one socket: an integer-nanosecond clock, busy-until engines and a trace.

The clock's :attr:`VirtualClock.now` is the time the socket's program has reached. Work runs on
named engines ("compute", "dma", "p2p-tx", "host") that are busy until some time, so an
asynchronous copy on the DMA engine can overlap a kernel on the compute engine: the copy
*occupies* its engine without moving ``now``, and ``wait`` joins it later. Time only moves
forward, and nothing here reads the wall clock, so the same operations give the same times on
any machine at any load.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from sn40l.errors import ConfigError


@dataclass(frozen=True)
class TraceEvent:
    """One modeled interval of work on one engine of one socket."""

    name: str
    cat: str
    engine: str
    start_ns: int
    end_ns: int
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


class EventLog:
    """A bounded log of :class:`TraceEvent`; the oldest events drop first."""

    def __init__(self, capacity: int = 100_000):
        if capacity <= 0:
            raise ConfigError(f"trace capacity must be > 0 events, got {capacity}")
        self.capacity = capacity
        self._events: collections.deque[TraceEvent] = collections.deque(maxlen=capacity)
        self.dropped = 0

    def record(self, event: TraceEvent) -> None:
        if len(self._events) == self.capacity:
            self.dropped += 1
        self._events.append(event)

    def events(self) -> list[TraceEvent]:
        return list(self._events)

    def clear(self) -> None:
        self._events.clear()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._events)


def chrome_trace(events_by_socket: dict[tuple[int, int], list[TraceEvent]],
                 labels: dict[tuple[int, int], str] | None = None) -> dict:
    """Chrome trace JSON (opens in Perfetto): one process per node, one thread per socket engine.

    ``events_by_socket`` maps (node index, socket index) to its events. Timestamps are modeled
    microseconds, never wall time.
    """
    out: list[dict] = []
    tids: dict[tuple[int, int, str], int] = {}
    for (node, sock), events in sorted(events_by_socket.items()):
        out.append({"ph": "M", "name": "process_name", "pid": node,
                    "args": {"name": f"node {node}"}})
        for ev in events:
            key = (node, sock, ev.engine)
            if key not in tids:
                tids[key] = sock * 16 + len([k for k in tids if k[:2] == (node, sock)])
                label = (labels or {}).get((node, sock), f"socket {sock}")
                out.append({"ph": "M", "name": "thread_name", "pid": node, "tid": tids[key],
                            "args": {"name": f"{label} {ev.engine}"}})
            out.append({"ph": "X", "name": ev.name, "cat": ev.cat, "pid": node,
                        "tid": tids[key], "ts": ev.start_ns / 1000.0,
                        "dur": ev.duration_ns / 1000.0, "args": ev.args})
    return {"traceEvents": out, "displayTimeUnit": "ns",
            "otherData": {"clock": "modeled (virtual) time"}}


def write_chrome_trace(path: str, trace: dict) -> None:
    with open(path, "w") as fh:
        json.dump(trace, fh)


class VirtualClock:
    """Integer-nanosecond virtual clock of one socket with busy-until engines. Thread-safe."""

    def __init__(self, log: EventLog | None = None):
        self._now = 0
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self.log = log if log is not None else EventLog()

    @property
    def now(self) -> int:
        return self._now

    def busy_until(self, engine: str) -> int:
        return self._busy.get(engine, 0)

    def advance_to(self, t: int) -> int:
        """Move ``now`` to ``t`` if that is later (a receive completing, a join); return now."""
        with self._lock:
            if t > self._now:
                self._now = int(t)
            return self._now

    def advance(self, dt: int) -> int:
        if dt < 0:
            raise ValueError(f"virtual time only moves forward; got a step of {dt} ns")
        with self._lock:
            self._now += int(dt)
            return self._now

    def occupy(self, engine: str, duration_ns: int, name: str, cat: str = "op",
               not_before: int | None = None, **args: Any) -> tuple[int, int]:
        """Reserve ``engine`` for ``duration_ns`` starting at the earliest time it is free and
        not before ``not_before`` (default: now). Records the interval; does not move ``now``.
        """
        start, end = self.reserve(engine, duration_ns, not_before)
        self.log.record(TraceEvent(name, cat, engine, start, end, dict(args)))
        return start, end

    def reserve(self, engine: str, duration_ns: int,
                not_before: int | None = None) -> tuple[int, int]:
        """:meth:`occupy` without a trace event, for callers that reserve an engine at a high
        rate (a P2P message) and log one event for the whole operation instead."""
        if duration_ns < 0:
            raise ValueError(f"duration must be >= 0 ns, got {duration_ns}")
        with self._lock:
            ready = self._now if not_before is None else max(int(not_before), self._now)
            start = max(ready, self._busy.get(engine, 0))
            end = start + int(duration_ns)
            self._busy[engine] = end
        return start, end

    def run(self, engine: str, duration_ns: int, name: str, cat: str = "op",
            not_before: int | None = None, **args: Any) -> tuple[int, int]:
        """Occupy ``engine`` and wait for it: a synchronous operation."""
        start, end = self.occupy(engine, duration_ns, name, cat, not_before, **args)
        self.advance_to(end)
        return start, end

    def record(self, name: str, cat: str, engine: str, start: int, end: int, **args: Any) -> None:
        """Log an interval computed elsewhere (e.g. a receive that completed at ``end``)."""
        self.log.record(TraceEvent(name, cat, engine, int(start), int(end), dict(args)))

    def state(self) -> dict:
        return {"now_ns": self._now, "busy_until": dict(self._busy)}
