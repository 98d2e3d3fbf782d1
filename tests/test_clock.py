"""Virtual clock: integer ns, forward only, engines overlap, bounded trace, Chrome export."""

from __future__ import annotations

import json

import pytest

from sn40l.socket import EventLog, TraceEvent, VirtualClock, chrome_trace, transfer_ns


def test_run_and_occupy_overlap_on_different_engines():
    c = VirtualClock()
    assert c.run("compute", 100, "k1") == (0, 100)
    # an asynchronous copy starts now and does not move the clock
    assert c.occupy("dma", 1000, "prefetch") == (100, 1100)
    assert c.now == 100
    assert c.run("compute", 50, "k2") == (100, 150)
    # the next copy queues behind the first on the same engine
    assert c.occupy("dma", 10, "copy2") == (1100, 1110)
    assert c.advance_to(1110) == 1110 and c.advance_to(5) == 1110  # never backwards


def test_negative_steps_refused():
    c = VirtualClock()
    with pytest.raises(ValueError, match="forward"):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.run("compute", -5, "x")


def test_transfer_time_is_alpha_plus_bytes_over_bandwidth_rounded_up():
    assert transfer_ns(0, 10**9, 500) == 0
    assert transfer_ns(1, 10**9, 500) == 501
    assert transfer_ns(3, 2 * 10**9, 0) == 2  # 1.5 ns rounds up
    assert transfer_ns(13_500_000_000, 125 * 10**9, 2000) == 108_002_000


def test_event_log_is_bounded():
    log = EventLog(capacity=3)
    c = VirtualClock(log)
    for i in range(5):
        c.run("compute", 1, f"k{i}")
    assert [e.name for e in log.events()] == ["k2", "k3", "k4"] and log.dropped == 2


def test_chrome_trace_uses_modeled_microseconds(tmp_path):
    ev = TraceEvent("copy", "dma", "dma", 1500, 4500, {"bytes": 3})
    trace = chrome_trace({(1, 2): [ev]})
    json.dumps(trace)  # serialisable
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"][0]
    assert x["ts"] == 1.5 and x["dur"] == 3.0 and x["pid"] == 1
    names = [e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"]
    assert "node 1" in names and "socket 2 dma" in names
