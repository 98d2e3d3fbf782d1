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


def sweep(prefix: str) -> int:
    """Remove leftover segments whose names start with ``prefix`` (after a crash)."""
    removed = 0
    for name in os.listdir(SHM_DIR):
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except OSError:
                pass
    return removed
