"""The interface every transport of a group implements: send a message to a member, wait for
one from a member, say how a member is reached (Unix datagrams plus shared segments, or a TCP
stream), and check that the members are still there. A transport never formats user-facing errors: it raises
:class:`~sn40l.collectives.endpoint.PeerGone` or TimeoutError and the communicator names the
member."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

from sn40l.collectives.endpoint import Endpoint
from sn40l.collectives.types import TransportKind
from sn40l.collectives.wire import Message


@dataclass(frozen=True)
class Member:
    """A member of a group: its index in the group and where its socket actor runs."""

    index: int
    rank: int  # global socket rank in the cluster
    node: int
    host: str
    pid: int
    address: bytes  # abstract Unix address of its endpoint (same host)
    actor_name: str
    net: tuple[str, int] = ("", 0)  # TCP address of its endpoint (any host)


class Transport(ABC):
    """How one member of one group reaches the others. ``__init__`` only stores."""

    kind: ClassVar[TransportKind]

    def __init__(self, endpoint: Endpoint, group: bytes, key: bytes, members: list[Member],
                 index: int, timeout_s: float):
        self.endpoint = endpoint
        self.group = group
        self.key = key
        self.members = members
        self.index = index
        self.timeout_s = timeout_s

    def maps_segments(self, member: int) -> bool:
        """Whether ``member`` is reached by Unix datagrams and reads this member's data in
        place from its shared segments (else: a TCP stream that carries the data). A datagram
        is MACed whole, payload included; a frame on an authenticated stream MACs its header,
        and its waiter sleeps until the stream's reader files it."""
        return False

    @abstractmethod
    def send(self, dst: int, parts: "list[bytes | memoryview]",
             timeout_s: float | None = None) -> None:
        """Deliver one message (the buffers of :func:`sn40l.collectives.wire.encode`)."""

    def wait(self, src: int, seq: int, tag: int, deadline: float,
             check: Callable[[], None]) -> Message:
        """The message (seq, tag) from member ``src``; raises at the deadline or on an abort."""
        return self.endpoint.wait((self.group, seq, tag, src), deadline, check,
                                  self.maps_segments(src))

    def check(self) -> None:
        """Raise PeerGone for a member this transport knows to be gone (called while
        waiting; the communicator checks the processes of members on this host itself)."""

    def close(self) -> None:
        """Release what this transport holds for the group."""
