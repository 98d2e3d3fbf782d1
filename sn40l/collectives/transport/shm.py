"""One host: messages are Unix datagrams between the members' endpoints, and the tensors
themselves stay in the sender's shared-memory segment, which the receiver maps and reads in
place (a ring step is one fused ``np.add`` from the peer's segment into this one's)."""

from __future__ import annotations

from sn40l.collectives.endpoint import PeerGone
from sn40l.collectives.transport.base import Transport
from sn40l.collectives.types import TransportKind


class ShmTransport(Transport):
    """Unix datagrams plus /dev/shm segments; every member runs on this host."""

    kind = TransportKind.SHM

    def maps_segments(self, member: int) -> bool:
        return True

    def send(self, dst: int, parts, timeout_s: float | None = None) -> None:
        try:
            self.endpoint.send_datagram(self.members[dst].address, parts,
                                        self.timeout_s if timeout_s is None else timeout_s)
        except (ConnectionRefusedError, FileNotFoundError):
            raise PeerGone(dst, "is gone (its socket actor no longer listens)") from None
