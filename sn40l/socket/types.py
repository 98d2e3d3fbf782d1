"""Closed choices of the emulated socket: memory tiers and emulated dtypes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sn40l.choices import Choice
from sn40l.errors import ConfigError


class Tier(Choice):
    """A memory tier of one socket. ``str(Tier.HBM) == 'hbm'``.

    ``HOST`` is the socket's share of its node's host memory (``node.host_memory`` / sockets
    per node): pinned buffers the socket's DMA reaches over the host link. The GPU baselines,
    which have no device DDR, keep CoE experts there."""

    SRAM = "sram"
    HBM = "hbm"
    DDR = "ddr"
    HOST = "host"


@dataclass(frozen=True)
class DType:
    """An emulated dtype: its size on the device and the numpy dtype it is computed in.

    numpy has no bfloat16, so BF16 data is computed in float32 while capacity and bandwidth are
    always accounted at 2 bytes per element, as on the device.
    """

    name: str
    itemsize: int
    compute: str

    @property
    def np(self) -> np.dtype:
        return np.dtype(self.compute)


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("bf16", 2, "float32"),
    DType("fp16", 2, "float16"),
    DType("fp32", 4, "float32"),
    DType("fp64", 8, "float64"),
    DType("int8", 1, "int8"),
    DType("uint8", 1, "uint8"),
    DType("int32", 4, "int32"),
    DType("int64", 8, "int64"),
)}

_NUMPY_TO_EMULATED = {"float32": "fp32", "float16": "fp16", "float64": "fp64", "int8": "int8",
                      "uint8": "uint8", "int32": "int32", "int64": "int64"}


def dtype(name: "str | DType | np.dtype") -> DType:
    """Look up an emulated dtype by name ('bf16', 'fp32', ...) or from a numpy dtype."""
    if isinstance(name, DType):
        return name
    if isinstance(name, np.dtype) or (isinstance(name, type) and issubclass(name, np.generic)):
        key = _NUMPY_TO_EMULATED.get(np.dtype(name).name)
        if key is None:
            raise ConfigError(f"numpy dtype {np.dtype(name).name!r} has no emulated dtype; "
                              f"allowed: {', '.join(sorted(_NUMPY_TO_EMULATED))}")
        return DTYPES[key]
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; dtypes: {', '.join(DTYPES)}") from None
