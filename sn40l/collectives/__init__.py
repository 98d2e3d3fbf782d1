"""P2P streaming channels and collectives (AllReduce, ReduceScatter, AllGather, Broadcast)."""
