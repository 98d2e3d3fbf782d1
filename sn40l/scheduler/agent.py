"""``sn40l run`` for a job whose user cannot reach Ray: the controller runs it on the job's sockets.

Why an agent: the Ray cluster's token (``~/.ray/auth_token`` of the user who started it, or
``RAY_AUTH_TOKEN``) lets its holder run any code in the Ray workers, which run as that user -
handing it to another user's job would hand over that account. On one machine a non-root driver
cannot attach to a root-started Ray anyway (the object store's Unix socket is mode 0755, so
connecting needs root). A job of another user therefore never sees Ray: its ``sn40l run``
compiles (or loads) the artifact as the user, and sends it with the job's capability to the
controller over the controller's Unix socket. The controller checks the caller's uid
(``SO_PEERCRED``) against the job's and the capability in constant time, then loads, generates
and unloads on exactly the job's sockets with that capability. The request is typed data (a
``.pef`` artifact, token ids, limits); nothing in it is executed.
"""

from __future__ import annotations

import hmac
import itertools
import os

from sn40l.scheduler.core import Who
from sn40l.scheduler.errors import RequestError
from sn40l.scheduler.types import JobState

_runs = itertools.count()
AGENT_WEIGHTS = ("random", "phantom")  # checkpoints are files; the agent reads none for users


def run_for_job(ctl, who: Who, job_id: int, capability: str, pef: bytes, prompt_ids: list,
                max_new_tokens: int, weights: str, seed: int = 0) -> dict:
    """Controller side: run ``pef`` for job ``job_id`` on its sockets; returns the result."""
    from sn40l.cluster.runner import ModelRunner
    from sn40l.compiler.pef import Artifact

    with ctl.lock:
        job = ctl.core.jobs.get(int(job_id))
        if job is None or not (who.is_admin or who.uid == job.uid):
            raise RequestError("Access/permission denied", "Permission")
        if job.state != JobState.RUNNING:
            raise RequestError(f"Job {job_id} is not running", "NotRunning")
        expected = ctl.steps.capability(job)
    if not hmac.compare_digest(str(capability).encode(), expected.encode()):
        raise RequestError(f"job {job_id}'s sockets need job {job_id}'s capability "
                           "(SN40L_LEASE in its environment); the one given is not it",
                           "Permission")
    if weights not in AGENT_WEIGHTS and who.uid != os.geteuid():
        raise RequestError(f"--weights {weights!r}: a job of uid {who.uid} runs through the "
                           f"controller, which loads only {', '.join(AGENT_WEIGHTS)} weights "
                           "for it", "Invalid")
    try:
        art = Artifact.from_bytes(bytes(pef), origin=f"job {job_id}'s artifact")
    except Exception as exc:  # noqa: BLE001 - any defect of the artifact is the caller's
        raise RequestError(str(exc), "Invalid") from None
    ranks = ctl.steps.ranks(job)[: art.tp]
    if len(ranks) < art.tp:
        raise RequestError(f"the job holds {len(ranks)} sockets; the model needs TP {art.tp}",
                           "Invalid")
    runner = ModelRunner(ctl.cluster, ranks, art, weights=weights, seed=int(seed),
                         job=capability, tag=f"job{job_id}-run{next(_runs)}")
    runner.load()
    try:
        res = runner.generate([int(t) for t in prompt_ids], int(max_new_tokens))
    finally:
        runner.unload()
    return {"tokens": res.tokens, "ttft_ns": res.ttft_ns, "decode_ns": res.decode_ns,
            "wall_s": res.wall_s, "sockets": ranks}


def run_in_job(art, prompt_ids: list[int], max_new_tokens: int, weights: str, seed: int):
    """Job side: ask the controller to run ``art``; returns (RunResult, ranks)."""
    from sn40l.cluster.runner import RunResult
    from sn40l.errors import ConfigError
    from sn40l.scheduler.client import Client, ControllerError

    try:
        with Client(os.environ.get("SN40L_CLUSTER"), os.environ.get("SN40L_STATE_DIR"),
                    timeout_s=3600) as c:
            out = c.call("job_run", job_id=int(os.environ["SN40L_JOB_ID"]),
                         capability=os.environ.get("SN40L_LEASE", ""), pef=art.to_bytes(),
                         prompt_ids=list(prompt_ids), max_new_tokens=int(max_new_tokens),
                         weights=weights, seed=int(seed))
    except ControllerError as exc:
        raise ConfigError(str(exc)) from None
    return (RunResult(out["tokens"], out["ttft_ns"], out["decode_ns"], out["wall_s"]),
            out["sockets"])
