"""The typed job model: what a user asked for (:class:`JobRequest`) and a job the scheduler
holds (:class:`Job`: the request plus its scheduling state).

Both are frozen: a change is a new value made with :func:`dataclasses.replace`, and only the
scheduler core makes them. The request is parsed once, when the record is read: its
``--dependency`` text becomes :attr:`JobRequest.deps` and its ``--array`` the tuple of task
ids. The derived values (tasks per node, what a job needs on each node, the id squeue shows)
are written here once. :mod:`sn40l.scheduler.store` maps both to the database's rows
(:func:`~sn40l.scheduler.store.job_from_record`, :func:`~sn40l.scheduler.store.job_to_record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sn40l.scheduler.types import DepKind, JobState


def tasks_per_node(nodes: int, ntasks: int, ntasks_per_node: int | None) -> int:
    """Tasks on each node: ``--ntasks-per-node`` if given, else ``ntasks`` spread over the
    nodes, rounded up (Slurm's block distribution puts the extra tasks on the first nodes)."""
    return ntasks_per_node or -(-ntasks // max(1, nodes))


@dataclass(frozen=True)
class Dep:
    """One ``--dependency`` term: kind, job id, array task (None = the whole job or array),
    and for ``after`` a delay in minutes."""

    kind: DepKind
    job: int = 0
    task: int | None = None
    delay_min: int = 0


@dataclass(frozen=True)
class Signal:
    """A parsed ``--signal=[B:]SIG[@TIME]``: the signal, seconds before the time limit, whether
    only the batch shell gets it, and the text as typed."""

    signum: int
    seconds: int
    batch_only: bool
    text: str


@dataclass(frozen=True)
class JobRequest:
    """What ``sbatch``/``srun`` asked for, after option parsing (sn40l.scheduler.request)."""

    name: str
    nodes: int
    nodes_max: int
    ntasks: int
    workdir: str
    submit_dir: str
    script: str
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    nodes_implicit: bool = False
    gres_rdu: int = 0
    time_limit: int | None = None  # seconds; None = the partition's default
    time_set: bool = False
    begin: float | None = None
    array: tuple[int, ...] | None = None
    array_throttle: int = 0
    array_text: str | None = None
    dependency: str | None = None  # as typed (scontrol shows it back)
    dep_mode: str = "all"  # "all" (terms joined by ",") or "any" ("?")
    deps: tuple[Dep, ...] = ()
    nodelist: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    output: str | None = None
    error: str | None = None
    input: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mail_type: str | None = None
    mail_user: str | None = None
    comment: str | None = None
    signal: Signal | None = None
    open_mode: str | None = None
    mem_mb: int | None = None
    mem_per_cpu_mb: int | None = None
    requeue: bool = True
    exclusive: bool = False
    hold: bool = False
    nice: int | None = None
    env: dict[str, str] = field(default_factory=dict, compare=False)
    export: str = "ALL"
    script_args: tuple[str, ...] = ()
    wrapped: bool = False
    command: str | None = None
    submit_host: str = ""  # the submitting process's host name (SLURM_SUBMIT_HOST)
    alloc_sid: int = 0     # the submitting process's session id (scontrol's AllocNode:Sid)

    @property
    def tasks_per_node(self) -> int:
        return tasks_per_node(self.nodes, self.ntasks, self.ntasks_per_node)

    @property
    def cpus_per_node(self) -> int:
        return self.tasks_per_node * (self.cpus_per_task or 1)

    @property
    def mem_per_node_mb(self) -> int:
        """``--mem``, else ``--mem-per-cpu`` times the CPUs on a node, else 0 (no limit)."""
        return self.mem_mb or (self.mem_per_cpu_mb or 0) * self.cpus_per_node

    @property
    def need(self) -> tuple[int, int, int]:
        """(CPUs, RDU sockets, memory MB) the job needs on each of its nodes."""
        return self.cpus_per_node, self.gres_rdu, self.mem_per_node_mb


@dataclass(frozen=True)
class Alloc:
    """What a running job holds on one node."""

    cpus: int
    sockets: tuple[int, ...]
    mem: int


@dataclass(frozen=True)
class Job:
    """A job (or one array task) and where it stands."""

    id: int
    state: JobState
    reason: str  # a Reason's text, "ReqNodeNotAvail" may carry node names after it
    uid: int
    gid: int
    user: str
    name: str
    partition: str
    submit_time: float
    req: JobRequest
    priority: int = 0
    time_limit: int | None = None  # seconds; None = UNLIMITED
    eligible_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    alloc: dict[str, Alloc] | None = field(default=None, compare=False)
    batch_host: str | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    final_state: JobState | None = None
    restarts: int = 0
    held: str | None = None  # "user" | "admin" | None
    priority_before_hold: int | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    array_throttle: int = 0
    cancelled_by: int | None = None
    kill_reason: str | None = None  # a KillCause's value while the controller ends it
    launch_time: float | None = None
    launch_error: str | None = None
    requeue_pending: bool | None = None
    requeue_hold: bool | None = None
    requeue_at: float | None = None
    next_step: int | None = None

    @property
    def display_id(self) -> str:
        """The id squeue shows: ``<array id>_<task>`` for an array task, else the job id."""
        if self.array_job_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return str(self.id)

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    @property
    def holds_resources(self) -> bool:
        return self.state.holds_resources

    @property
    def tasks_per_node(self) -> int:
        return self.req.tasks_per_node

    @property
    def need(self) -> tuple[int, int, int]:
        return self.req.need

    def end_by_limit(self, start: float) -> float:
        """When the job's time limit runs out if it starts at ``start`` (inf = UNLIMITED)."""
        return float("inf") if self.time_limit is None else start + self.time_limit
