"""P2P streaming channels and collectives (AllReduce, ReduceScatter, AllGather, Broadcast,
Barrier, send/recv) between socket actors, with modeled time from the profile's links."""

from sn40l.collectives.communicator import Communicator, Member, star_limit_bytes
from sn40l.collectives.group import create_group, destroy_group
from sn40l.collectives.types import AllReduceAlgo, ReduceOp, Transport

__all__ = ["Communicator", "Member", "star_limit_bytes", "create_group", "destroy_group",
           "AllReduceAlgo", "ReduceOp", "Transport"]
