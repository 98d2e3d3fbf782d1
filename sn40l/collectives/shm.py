"""Shared-memory segments in /dev/shm that peers on the same host map by name.

Plain ``mmap`` of a file under /dev/shm rather than :mod:`multiprocessing.shared_memory`: the
latter registers every attached segment with Python's resource tracker, which unlinks segments
the process did not create when it exits. The creator unlinks its own segments on close.
"""

from __future__ import annotations

import math
import mmap
import os

import numpy as np

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"


class Segment:
    """A named shared byte buffer: created by its owner, attached read-write by peers."""

    def __init__(self, name: str, size: int, create: bool):
        self.name = name
        self.name_bytes = name.encode()  # as messages carry it
        self.size = size
        self.owner = create
        path = os.path.join(SHM_DIR, name)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
                self.size = size
            self._mmap = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
        self.buf = (np.frombuffer(self._mmap, dtype=np.uint8) if self._mmap is not None
                    else np.zeros(0, np.uint8))

    def view(self, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An array view of ``shape``/``dtype`` at byte ``offset`` (no copy)."""
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        return self.buf[offset: offset + count * dtype.itemsize].view(dtype).reshape(shape)

    def flat(self, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        """A 1-D view of ``count`` elements of ``dtype`` at byte ``offset`` (no copy)."""
        return self.buf[offset: offset + count * dtype.itemsize].view(dtype)

    def close(self) -> None:
        self.buf = np.zeros(0, np.uint8)
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a view is still alive somewhere; the mapping goes with it
                pass
        if self.owner:
            try:
                os.unlink(os.path.join(SHM_DIR, self.name))
            except FileNotFoundError:
                pass


_PREFIX = "sn40l-"


def segment_name(cluster: str, rank: int, uniq: str, pid: int | None = None) -> str:
    """The name of a segment that socket ``rank`` of ``cluster`` creates in process ``pid``
    (default: this one): ``sn40l-<cluster>-<owner pid>-<rank>-<uniq>``. The owner's pid tells
    a sweep whether the segment is still in use; the cluster name tells a reader whose it is.
    ``uniq`` must not contain '-' (names are parsed from the right, so cluster names may)."""
    if "-" in uniq or not uniq:
        raise ValueError(f"segment suffix {uniq!r} must be non-empty without '-'")
    return f"{_PREFIX}{cluster}-{os.getpid() if pid is None else pid}-{rank}-{uniq}"


def segment_owner(name: str) -> tuple[str, int] | None:
    """(cluster, owner pid) of a name made by :func:`segment_name`, or None for other names."""
    if not name.startswith(_PREFIX):
        return None
    parts = name[len(_PREFIX):].rsplit("-", 3)
    if len(parts) != 4 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1])


def sweep(owners: "set[int] | None" = None) -> int:
    """Remove this user's segments whose owner pid is in ``owners`` (sockets just killed) or,
    with ``owners=None``, whose owner process is gone (what a crash left behind). A segment of
    a live owner is never touched, whichever cluster or state directory it belongs to.
    Returns the number removed."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    uid = os.getuid()
    for name in names:
        parsed = segment_owner(name)
        if parsed is None:
            continue
        pid = parsed[1]
        if owners is not None and pid not in owners:
            continue
        if owners is None and pid_alive(pid):
            continue
        path = os.path.join(SHM_DIR, name)
        try:
            if os.stat(path).st_uid != uid:
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
