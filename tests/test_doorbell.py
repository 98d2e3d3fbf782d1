"""The doorbell's wait on its own, between two threads on a real /dev/shm segment: a record rung
while the waiter polls arrives whole, a waiter nobody rings sleeps once its short poll is over
(instead of burning a CPU until the deadline) and still checks in every ``poll_s``, and an
abort rung while it polls is reported."""

from __future__ import annotations

import os
import threading
import time

import pytest

from sn40l.collectives import doorbell
from sn40l.collectives.doorbell import Bell, bell_name

pytestmark = pytest.mark.skipif(not doorbell.available(),
                                reason="doorbells need Linux on x86-64 with /dev/shm")


@pytest.fixture
def bells():
    name = bell_name("dbtest", 0, os.getpid(), os.urandom(16))
    own = Bell(name, 2, own=True)
    peer = Bell(name, 2, own=False)
    yield own, peer
    peer.close()
    own.close()
    assert not os.path.exists(os.path.join("/dev/shm", name))


def _later(delay_s: float, fn) -> threading.Thread:
    def run():
        time.sleep(delay_s)
        fn()
    th = threading.Thread(target=run)
    th.start()
    return th


def test_a_record_rung_while_the_waiter_polls_arrives_whole(bells):
    own, peer = bells
    own.stamps[1] = 12345
    # rung well inside the poll (SPIN_S) and well after it: both arrive
    for seq, delay in ((7, doorbell.SPIN_S / 4), (8, doorbell.SPIN_S * 20)):
        th = _later(delay, lambda s=seq: own.ring(s, 1024, b"<f4", b"sn40l-x-1-0-data"))
        got = peer.wait(seq, time.monotonic() + 10, lambda: None, 0.05)
        th.join()
        assert got == (1024, b"<f4", b"sn40l-x-1-0-data")
        assert int(peer.stamps[1]) == 12345


def test_a_waiter_nobody_rings_sleeps_and_checks_in(bells):
    _, peer = bells
    polls = []
    cpu0, t0 = time.thread_time(), time.monotonic()
    with pytest.raises(TimeoutError):
        peer.wait(3, t0 + 0.5, lambda: polls.append(time.monotonic()), 0.05)
    waited, cpu = time.monotonic() - t0, time.thread_time() - cpu0
    assert 0.5 <= waited < 2.0
    # the poll lasts SPIN_S (0.2 ms); a waiter polling until the deadline would use ~0.5 s
    assert cpu < 0.1, f"the waiter used {cpu:.3f} s of CPU in {waited:.3f} s"
    assert 5 <= len(polls) <= 11, polls  # every poll_s (0.05 s) after the first sleep


def test_an_abort_rung_while_the_waiter_polls_is_reported(bells):
    own, peer = bells
    polls = []
    th = _later(doorbell.SPIN_S / 4, own.abort)
    with pytest.raises(ConnectionAbortedError):
        peer.wait(4, time.monotonic() + 10, lambda: polls.append(1), 0.05)
    th.join()
    assert polls == [1]  # the waiter looks for the abort's reason before it reports it
