"""Doorbells: small messages between the members of a group on one host as records in shared
memory, each announced by a futex word, instead of Unix datagrams.

Each member owns one doorbell segment per group (0600, in /dev/shm like the data segments). A
member *rings* its doorbell by writing a record (the op it belongs to, the element count and
dtype, the name of the data segment holding the elements, one modeled arrival time per
receiver) and then the record's flag word, the op's number; then it wakes whoever sleeps on
that word (``FUTEX_WAKE``: one system call wakes every waiting member). A member *waits* for a
peer's doorbell by reading the peer's flag word: when the op is already there it costs no
system call at all; otherwise it polls the word for :data:`SPIN_S`, yielding its CPU between
reads, and then sleeps on it (``FUTEX_WAIT``) until the peer rings.

Why: on two cores, eight socket actors spend a small AllReduce mostly in Python that runs with
cold caches after every wake-up; each datagram costs an ``encode`` and a ``verify`` on top of the
system calls (about 20 us per message here, against 2-3 us in a warm loop), and member 0 of a
star handles fourteen per AllReduce and fourteen per barrier. A doorbell costs a flag read and
one ``struct`` unpack; member 0 releases all seven others with one call. Measured alternately
on this project's 2-core machine (8 sockets, 4 KiB): 0.67-0.87 ms against 0.91-1.28 ms with
datagrams. The messages modeled are the same: every record carries the arrival time its
datagram would have carried.

Trust: a datagram address in Linux's abstract namespace takes datagrams from any local user,
so each datagram carries a MAC (:mod:`sn40l.collectives.wire`). A doorbell segment is a 0600
file of the user running the sockets, opened only after checking its owner, as the data
segments (which already carry the elements of large messages without a MAC) are: another
user can neither read nor ring it. Its name is derived from the group's secret, so it names
one group's incarnation only.

Ordering: the record is written before the flag and read after it. On x86-64 stores become
visible in program order and loads are not reordered with older loads (TSO), which is what
this needs; on other architectures :func:`available` is False and groups use datagrams.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import hmac
import os
import platform
import struct
import time
from typing import Callable

import numpy as np

from sn40l.collectives.shm import SHM_DIR, Segment, segment_name

_SYS_FUTEX = {"x86_64": 202}.get(platform.machine())
FUTEX_WAIT, FUTEX_WAKE = 0, 1  # not FUTEX_PRIVATE: the word is shared between processes
WAKE_ALL = 0x7FFFFFFF
# How long a waiter polls the flag, yielding the CPU between reads, before it sleeps on the
# futex. A sleeper is woken from another CPU, which costs 30-40 us of CPU on each side on this
# project's 2-core (nested virtual) machine against about 6 us for a switch on one CPU; with
# more members than cores, a yielding waiter hands its CPU to the members it waits for. A peer
# that is only waiting for a CPU answers within a few switches (8 sockets on 2 cores: about
# 4 x 40 us); a longer wait is for work, and then sleeping costs nothing and leaves the CPU
# to others. Polling also spends the sockets' CPU share, so that other programs on the host
# run first: while Ray started worker processes, some 20-iteration medians took 4-11 ms with
# every poll time tried (0.1 to 1 ms, more often with the longer ones) where sleeping took 2-5
# ms. 8 sockets, 4 KiB, quiet, 20-iteration medians measured alternately: 0.47-0.82 ms with
# 0.2 ms against 0.70-1.07 ms without polling (0.1 ms: 0.64-1.32). Open MPI's shared-memory
# transport waits the same way (it polls, and yields when oversubscribed).
SPIN_S = 200e-6
ABORTED = 0xFFFFFFFF  # flag of a member that gave up on the group

# record layout (byte offsets): flag u32 | count i64 | dtype 8s | name length u16, name | stamps
_FLAG, _COUNT, _DTYPE, _NAME_LEN, _NAME, _STAMPS = 0, 8, 16, 24, 26, 256
NAME_MAX = _STAMPS - _NAME
_HEAD = struct.Struct("<q8sH")  # count, dtype, name length

if _SYS_FUTEX is not None:
    _libc = ctypes.CDLL(None, use_errno=True)
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def available() -> bool:
    """Whether doorbells work here: Linux on x86-64 (TSO ordering, the futex call number)."""
    return _SYS_FUTEX is not None and os.path.isdir(SHM_DIR) and SHM_DIR == "/dev/shm"


def futex_wake(addr: int) -> None:
    """Wake every process sleeping on the 32-bit word at ``addr``."""
    _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), FUTEX_WAKE, WAKE_ALL, None, None, 0)


def futex_wait(addr: int, current: int, timeout_s: float) -> None:
    """Sleep while the word at ``addr`` holds ``current``, at most ``timeout_s`` (returns at
    once if it already differs; the caller reads the word again either way)."""
    ts = _Timespec(int(timeout_s), int((timeout_s % 1) * 1e9))
    if _syscall(_SYS_FUTEX, ctypes.c_void_p(addr), FUTEX_WAIT, ctypes.c_uint32(current),
                ctypes.byref(ts), None, 0) == -1:
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, os.strerror(err))


def bell_name(cluster: str, rank: int, pid: int, key: bytes) -> str:
    """The doorbell segment of socket ``rank`` (process ``pid``) in the group whose secret is
    ``key`` (the suffix is a MAC of a constant: it names the group without revealing its
    key)."""
    tag = hmac.new(key, b"sn40l-doorbell", hashlib.sha256).hexdigest()[:16]
    return segment_name(cluster, rank, f"bell.{tag}", pid)


def op_flag(seq: int) -> int:
    """The flag value of op ``seq`` (never 0, the value of a fresh segment, nor ABORTED)."""
    return seq % 0xFFFFFFF0 + 1


class Bell:
    """One member's doorbell: its own (``own=True``, created) or a peer's (mapped)."""

    def __init__(self, name: str, world: int, own: bool):
        size = _STAMPS + 8 * world
        if own:
            self.seg = Segment(name, size, create=True)
        else:
            self.seg = Segment(name, 0, create=False)
            st = os.stat(os.path.join(SHM_DIR, name))
            if st.st_uid != os.getuid() or self.seg.size < size:
                self.seg.close()
                raise PermissionError(f"doorbell segment {name} is not this user's "
                                      f"(owner uid {st.st_uid}) or is too small")
        buf, self._mm = self.seg.buf, self.seg._mmap
        # the flag as a memoryview: a read costs a fifth of a numpy scalar read, and a waiter
        # reads it on every turn of its wait
        self._flag = memoryview(self._mm)[_FLAG:_FLAG + 4].cast("I")
        self.stamps = buf[_STAMPS:_STAMPS + 8 * world].view(np.int64)
        self._addr = buf.ctypes.data + _FLAG

    # -- the owner --------------------------------------------------------------------------
    def ring(self, seq: int, count: int, dtype: bytes, seg_name: bytes) -> None:
        """Publish op ``seq``'s record (stamps already written into :attr:`stamps`)."""
        if len(seg_name) > NAME_MAX or len(dtype) > 8:
            raise ValueError(f"segment name {seg_name!r} or dtype {dtype!r} too long for a "
                             "doorbell record")
        _HEAD.pack_into(self._mm, _COUNT, count, dtype, len(seg_name))
        self._mm[_NAME:_NAME + len(seg_name)] = seg_name
        self._flag[0] = op_flag(seq)
        futex_wake(self._addr)

    def abort(self) -> None:
        """Tell members waiting on this doorbell that this member gave up on the group."""
        self._flag[0] = ABORTED
        futex_wake(self._addr)

    # -- a reader ---------------------------------------------------------------------------
    def wait(self, seq: int, deadline: float, poll: Callable[[], None],
             poll_s: float) -> tuple[int, bytes, bytes]:
        """Block until op ``seq``'s record is here; (count, dtype, data segment name).

        ``poll()`` runs whenever ``poll_s`` passes without the record (it raises when the
        group is aborted or a peer is gone) and when the owner rang ABORTED, after which
        ConnectionAbortedError is raised. TimeoutError at ``deadline``."""
        want = op_flag(seq)
        flag = self._flag
        spin_end = 0.0
        while True:
            v = flag[0]
            if v == want:
                count, dtype, n = _HEAD.unpack_from(self._mm, _COUNT)
                return count, dtype.rstrip(b"\0"), self._mm[_NAME:_NAME + n]
            if v == ABORTED:
                poll()
                raise ConnectionAbortedError
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError
            if not spin_end:
                spin_end = now + SPIN_S
            if now < spin_end:
                os.sched_yield()
                continue
            futex_wait(self._addr, v, min(poll_s, deadline - now))
            if flag[0] == v:  # nothing rang within poll_s (or a spurious wake-up)
                poll()

    def close(self) -> None:
        self._flag.release()
        self._flag = self.stamps = np.zeros(0, np.int64)
        self._mm = None
        self.seg.close()
