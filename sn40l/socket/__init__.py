"""The emulated SN40L socket: tensors (materialized or phantom), memory tiers, virtual clock.

Plain Python, no Ray: :class:`sn40l.cluster.actor.SocketActor` hosts a :class:`Socket` per actor.
"""

from sn40l.socket.clock import EventLog, TraceEvent, VirtualClock, chrome_trace
from sn40l.socket.device import Socket, SocketId
from sn40l.socket.memory import MemoryTier, Region
from sn40l.socket.tensor import Tensor
from sn40l.socket.timing import copy_ns, copy_path, transfer_ns
from sn40l.socket.types import DTYPES, DType, Tier, dtype

__all__ = ["EventLog", "TraceEvent", "VirtualClock", "chrome_trace", "Socket", "SocketId",
           "MemoryTier", "Region", "Tensor", "copy_ns", "copy_path", "transfer_ns", "DTYPES",
           "DType", "Tier", "dtype"]
