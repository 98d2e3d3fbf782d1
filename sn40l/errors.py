"""The exception family of sn40l. A leaf module: it imports nothing from the package.

Every error a user can cause names the offending value, the rule it broke and what is allowed.
"""

from __future__ import annotations


class SN40LError(Exception):
    """Base class of every error sn40l raises on purpose."""


class ConfigError(SN40LError, ValueError):
    """A configuration value (YAML key, CLI option) is invalid; the message names the key."""


class UnitError(ConfigError):
    """A quantity such as '64GiB' or '2us' could not be parsed exactly."""


class ProfileError(ConfigError):
    """A hardware profile is unknown or fails validation."""


class OutOfDeviceMemory(SN40LError, MemoryError):
    """An emulated memory tier cannot satisfy an allocation."""

    def __init__(self, socket: str, tier: str, requested: int, free: int, largest_free: int,
                 what: str = ""):
        self.socket, self.tier = socket, tier
        self.requested, self.free, self.largest_free = requested, free, largest_free
        label = f" for {what!r}" if what else ""
        super().__init__(
            f"out of {tier.upper()} memory on socket {socket}{label}: requested {requested} bytes, "
            f"{free} bytes free, largest free block {largest_free} bytes")

    def __reduce__(self):
        return (OutOfDeviceMemory, (self.socket, self.tier, self.requested, self.free,
                                    self.largest_free))


class RegionError(SN40LError, KeyError):
    """A named memory region does not exist, already exists, or is read-only."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PhantomDataError(SN40LError, TypeError):
    """The data of a phantom tensor (shape and dtype only) was read."""


class ClusterError(SN40LError, RuntimeError):
    """The emulated cluster is missing, already running, or unhealthy."""


class SocketBusyError(SN40LError, PermissionError):
    """A socket allocated to one job refused work sent on behalf of another."""


class CollectiveError(SN40LError, RuntimeError):
    """A collective failed: a peer died, stopped answering, or the group was destroyed."""


class CompileError(SN40LError, ValueError):
    """A model could not be compiled, or a .pef artifact is corrupt or of the wrong version."""


class SchedulerError(SN40LError, RuntimeError):
    """The scheduler refused a request."""


class CapacityError(ConfigError):
    """A workload (a CoE, a model) does not fit the memory tiers; gives need and capacity per tier."""
