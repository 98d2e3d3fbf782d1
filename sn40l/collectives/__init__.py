"""P2P streaming and collectives (AllReduce, ReduceScatter, AllGather, Broadcast, Barrier,
send/recv) between socket actors, over shared memory on one host or TCP between hosts, with
modeled time from the profile's links and every message authenticated."""

from sn40l.collectives.algorithms import star_limit_bytes
from sn40l.collectives.communicator import Communicator
from sn40l.collectives.group import create_group, destroy_group
from sn40l.collectives.transport import Member, Transport
from sn40l.collectives.types import AllReduceAlgo, ReduceOp, TransportKind

__all__ = ["Communicator", "Member", "Transport", "star_limit_bytes", "create_group",
           "destroy_group", "AllReduceAlgo", "ReduceOp", "TransportKind"]
