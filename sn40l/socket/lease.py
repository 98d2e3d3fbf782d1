"""A socket's lease: which job holds it, and the capability that proves it.

The scheduler leases a job's sockets with an unguessable token; the job receives
``"<job id>:<token>"`` (its *capability*, ``SN40L_LEASE`` in the job's environment) and passes it
as the ``job`` argument of every call on a leased socket. A job id alone proves nothing: anyone
with Ray access can type another job's id. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from sn40l.errors import SocketBusyError

TOKEN_MIN_CHARS = 32  # 128 bits or more of entropy in hex or url-safe base64


@dataclass(frozen=True)
class Capability:
    """A job's right to use the sockets leased to it."""

    job: int
    token: str

    def __str__(self) -> str:
        return f"{self.job}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> "Capability":
        """``"<job id>:<token>"`` -> Capability; anything else is refused by name."""
        job, sep, token = str(text).partition(":")
        if not sep or not job.isdigit() or len(token) < TOKEN_MIN_CHARS:
            raise SocketBusyError(f"malformed job capability {_redact(text)!r}: expected "
                                  f"'<job id>:<token of {TOKEN_MIN_CHARS}+ characters>' as in "
                                  "SN40L_LEASE")
        return cls(int(job), token)


def _redact(text: object) -> str:
    s = str(text)
    return s if len(s) <= 12 else s[:8] + "..."


class Lease:
    """The lease state of one socket (plain data; the actor holds the lock)."""

    def __init__(self) -> None:
        self._held: tuple[int, bytes] | None = None  # replaced whole: readers need no lock

    @property
    def job(self) -> int | None:
        held = self._held
        return None if held is None else held[0]

    def grant(self, job: int, token: str, label: str) -> None:
        """Lease to ``job`` under ``token``; refused while another job (or another token of
        the same job) holds it."""
        if len(token) < TOKEN_MIN_CHARS:
            raise SocketBusyError(f"lease token for job {job} is too short ({len(token)} "
                                  f"characters; at least {TOKEN_MIN_CHARS})")
        held = self._held
        if held is not None and not (held[0] == job and _matches(held, token)):
            raise SocketBusyError(f"socket {label} is allocated to job {held[0]}; "
                                  f"job {job} cannot lease it")
        self._held = (job, token.encode())

    def check(self, job: "str | int | None", label: str) -> int | None:
        """The job id a call is made for, if the socket is leased and ``job`` is the holder's
        capability; None when the socket is free. Anything else is refused, naming the
        job that holds the socket."""
        held = self._held
        if held is None:
            return _job_id(job)
        holder = held[0]
        cap = None
        if isinstance(job, str):
            try:
                cap = Capability.parse(job)
            except SocketBusyError:
                cap = None
        if cap is not None and cap.job == holder and _matches(held, cap.token):
            return holder
        if job is None:
            who = "outside any job"
        elif cap is None and isinstance(job, str):
            who = "with a malformed capability"
        else:
            claimed = cap.job if cap is not None else job
            who = (f"by job {claimed} without job {holder}'s capability"
                   if claimed == holder or cap is None
                   else f"by job {claimed}")
        raise SocketBusyError(f"socket {label} is allocated to job {holder}; work sent {who} "
                              "is refused")

    def end(self) -> None:
        self._held = None


def _matches(held: tuple[int, bytes], token: str) -> bool:
    return hmac.compare_digest(held[1], token.encode())


def _job_id(job: "str | int | None") -> int | None:
    """The job a call on a free socket names (for bookkeeping only; it proves nothing)."""
    if job is None or isinstance(job, int):
        return job
    head = str(job).partition(":")[0]
    return int(head) if head.isdigit() else None
