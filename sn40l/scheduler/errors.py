"""The scheduler's own exceptions that more than one module raises (a leaf module)."""

from __future__ import annotations

from sn40l.errors import SchedulerError


class SubmitError(SchedulerError):
    """A submission refused before or by the controller. ``str`` is the full message as Slurm
    prints it (without the ``sbatch:`` prefix); ``exit_code`` is what the command exits with."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class RequestError(SchedulerError):
    """A request refused by the controller; ``str`` is Slurm's text (e.g. "Invalid job id
    specified"), ``code`` a stable name for clients."""

    def __init__(self, message: str, code: str = "error"):
        super().__init__(message)
        self.code = code
