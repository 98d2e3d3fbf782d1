"""The scheduler's closed sets: job states, pending/end reasons, kill causes, dependency kinds.

Every member is a ``str`` enum whose value is Slurm's own spelling, so a state written to the
job store or sent to a client is the text Slurm prints, and records read back compare equal to
the members. A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

from enum import Enum


class _Text(str, Enum):
    """A str enum that prints as its value (``str(JobState.RUNNING) == "RUNNING"``)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str, what: str) -> "_Text":
        """The member spelled ``text`` (case-insensitive); ValueError listing the valid ones."""
        for member in cls:
            if member.value.lower() == str(text).lower():
                return member
        raise ValueError(f"invalid {what} {text!r}; valid: "
                         f"{', '.join(m.value for m in cls)}")


class JobState(_Text):
    """Slurm's job states (long names, as ``squeue -o %T`` and sacct print them)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    REQUEUED = "REQUEUED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"

    @property
    def code(self) -> str:
        """The two-letter code of ``squeue``'s ST column (``PD``, ``R``, ``CD`` ...)."""
        return STATE_CODES[self]

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def holds_resources(self) -> bool:
        return self in (JobState.RUNNING, JobState.COMPLETING)


STATE_CODES = {JobState.PENDING: "PD", JobState.RUNNING: "R", JobState.COMPLETING: "CG",
               JobState.COMPLETED: "CD", JobState.FAILED: "F", JobState.CANCELLED: "CA",
               JobState.TIMEOUT: "TO", JobState.NODE_FAIL: "NF", JobState.REQUEUED: "RQ",
               JobState.SUSPENDED: "S", JobState.OUT_OF_MEMORY: "OOM",
               JobState.PREEMPTED: "PR", JobState.BOOT_FAIL: "BF", JobState.DEADLINE: "DL"}
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED,
                          JobState.TIMEOUT, JobState.NODE_FAIL, JobState.OUT_OF_MEMORY,
                          JobState.PREEMPTED, JobState.BOOT_FAIL, JobState.DEADLINE})
ACTIVE_STATES = tuple(s for s in JobState if s not in FINAL_STATES)

# What `squeue -t bogus` lists after "Valid job states include:" (Slurm 22.05's own order).
SQUEUE_VALID_STATES = ("PENDING,RUNNING,SUSPENDED,COMPLETED,CANCELLED,FAILED,TIMEOUT,NODE_FAIL,"
                       "PREEMPTED,BOOT_FAIL,DEADLINE,OUT_OF_MEMORY,COMPLETING,CONFIGURING,"
                       "RESIZING,RESV_DEL_HOLD,REQUEUED,REQUEUE_FED,REQUEUE_HOLD,REVOKED,"
                       "SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED")


class Reason(_Text):
    """Slurm's job reason codes (``squeue %r``, ``scontrol show job`` Reason=) that we set.
    ``ReqNodeNotAvail`` is followed by the unavailable nodes when shown."""

    NONE = "None"
    PRIORITY = "Priority"
    RESOURCES = "Resources"
    DEPENDENCY = "Dependency"
    DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"
    BEGIN_TIME = "BeginTime"
    JOB_HELD_USER = "JobHeldUser"
    JOB_HELD_ADMIN = "JobHeldAdmin"
    PARTITION_NODE_LIMIT = "PartitionNodeLimit"
    PARTITION_TIME_LIMIT = "PartitionTimeLimit"
    PARTITION_DOWN = "PartitionDown"
    REQ_NODE_NOT_AVAIL = "ReqNodeNotAvail"
    JOB_ARRAY_TASK_LIMIT = "JobArrayTaskLimit"
    NON_ZERO_EXIT_CODE = "NonZeroExitCode"
    TIME_LIMIT = "TimeLimit"
    JOB_LAUNCH_FAILURE = "JobLaunchFailure"
    RAISED_SIGNAL = "RaisedSignal"
    NODE_DOWN = "NodeDown"


class KillCause(_Text):
    """Why the controller is ending a running job (decides its final state)."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"
    NODE_FAIL = "node_fail"
    REQUEUE = "requeue"


class DepKind(_Text):
    """The kinds of ``--dependency`` term."""

    AFTER = "after"
    AFTERANY = "afterany"
    AFTEROK = "afterok"
    AFTERNOTOK = "afternotok"
    AFTERCORR = "aftercorr"
    SINGLETON = "singleton"


class DepStatus(_Text):
    """Where a dependency stands: satisfied, still waiting, or never satisfiable."""

    OK = "ok"
    WAIT = "wait"
    NEVER = "never"


def end_reason(state: JobState, exit_code: int, signal_num: int) -> Reason:
    """Reason= of a finished job as Slurm 22.05 sets it: TimeLimit for TIMEOUT;
    NonZeroExitCode for a script's non-zero exit; JobLaunchFailure when the batch shell died of
    a signal (as observed for both ``kill -9 $$`` and an unopenable -o file); else None."""
    if state == JobState.TIMEOUT:
        return Reason.TIME_LIMIT
    if state == JobState.FAILED:
        return Reason.JOB_LAUNCH_FAILURE if signal_num else Reason.NON_ZERO_EXIT_CODE
    return Reason.NONE
