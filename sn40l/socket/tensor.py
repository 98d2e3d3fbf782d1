"""The one tensor type of sn40l: materialized (numpy data) or phantom (shape and dtype only)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sn40l.errors import ConfigError, PhantomDataError
from sn40l.socket.types import DType, dtype as as_dtype


@dataclass(frozen=True)
class Tensor:
    """A tensor whose data may be absent.

    Accounting reads only :attr:`shape` and :attr:`dtype`; :attr:`nbytes` is the size on the
    emulated device (BF16 = 2 bytes per element) whatever numpy computes in. Reading
    :attr:`data` of a phantom tensor raises :class:`PhantomDataError`.
    """

    shape: tuple[int, ...]
    dtype: DType
    _data: np.ndarray | None = None

    @staticmethod
    def phantom(shape: "tuple[int, ...] | list[int]", dtype: "str | DType" = "bf16") -> "Tensor":
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ConfigError(f"tensor shape {shape} has a negative dimension")
        return Tensor(shape, as_dtype(dtype), None)

    @staticmethod
    def of(array: np.ndarray, dtype: "str | DType | None" = None) -> "Tensor":
        """A materialized tensor. ``dtype`` is the emulated dtype (default: from the array)."""
        array = np.asarray(array)
        dt = as_dtype(dtype) if dtype is not None else as_dtype(array.dtype)
        data = np.ascontiguousarray(array, dtype=dt.np)
        return Tensor(tuple(data.shape), dt, data)

    @property
    def is_phantom(self) -> bool:
        return self._data is None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            raise PhantomDataError(f"tensor of shape {self.shape} ({self.dtype.name}) is phantom: "
                                   "it has a shape and a dtype but no data")
        return self._data

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes on the emulated device."""
        return self.numel * self.dtype.itemsize

    def like(self, array: np.ndarray | None) -> "Tensor":
        """A tensor of the same emulated dtype holding ``array`` (phantom if None)."""
        if array is None:
            return Tensor(self.shape, self.dtype, None)
        return Tensor.of(array, self.dtype)

    def __repr__(self) -> str:
        kind = "phantom" if self.is_phantom else "materialized"
        return f"Tensor({kind}, shape={self.shape}, dtype={self.dtype.name})"
