"""sbatch input beyond argv and #SBATCH lines: ``SBATCH_*`` variables and ``--signal``.

Slurm's precedence is the command line, then the input environment, then ``#SBATCH`` lines
(checked on Slurm 22.05: ``SBATCH_JOB_NAME`` beats ``#SBATCH -J``, ``-J`` beats both).
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l.scheduler.errors import SubmitError


# sbatch's input environment variables (sbatch(1), INPUT ENVIRONMENT VARIABLES) that name an
# option we take; the value is the option's key in the parsed options.
SBATCH_INPUT_ENV = {
    "SBATCH_ACCOUNT": "account", "SBATCH_ARRAY_INX": "array", "SBATCH_CLUSTERS": "cluster",
    "SBATCH_EXCLUSIVE": "exclusive", "SBATCH_EXPORT": "export", "SBATCH_GRES": "gres",
    "SBATCH_GPUS": "gpus", "SBATCH_JOB_NAME": "job_name", "SBATCH_MEM_PER_CPU": "mem_per_cpu",
    "SBATCH_MEM_PER_NODE": "mem", "SBATCH_NO_REQUEUE": "no_requeue",
    "SBATCH_OPEN_MODE": "open_mode", "SBATCH_PARTITION": "partition", "SBATCH_QOS": "qos",
    "SBATCH_REQUEUE": "requeue", "SBATCH_SIGNAL": "signal", "SBATCH_TIMELIMIT": "time",
    "SBATCH_WAIT": "wait",
}
_FLAG_OPTIONS = {"no_requeue", "requeue", "wait"}


def input_env_options(env: dict[str, str]) -> dict:
    """The options set by ``SBATCH_*`` variables in ``env`` (flags by their presence)."""
    out: dict = {}
    for var, key in SBATCH_INPUT_ENV.items():
        if var in env:
            value = env[var]
            out[key] = True if key in _FLAG_OPTIONS or (key == "exclusive" and not value) \
                else value
    return out


@dataclass(frozen=True)
class SignalSpec:
    """``--signal=[{R|B}:]SIG[@TIME]``: send ``signum`` ``seconds`` before the time limit,
    to the batch shell only (``B:``) or to the job's steps."""

    signum: int
    seconds: int = 60
    batch_only: bool = False


def parse_signal(text: str) -> SignalSpec:
    """Slurm's --signal value; the signal by number or name (``USR1``, ``SIGUSR1``)."""
    import signal as _signal

    bad = SubmitError(f"error: Invalid --signal specification: {text}", 255)
    body = text.strip()
    batch_only = False
    head, colon, rest = body.partition(":")
    if colon:
        if head not in ("B", "R", "BR", "RB"):
            raise bad
        batch_only = "B" in head
        body = rest
    sig_text, at, time_text = body.partition("@")
    if sig_text.isdigit():
        signum = int(sig_text)
    else:
        name = sig_text.upper()
        signum = getattr(_signal, name if name.startswith("SIG") else "SIG" + name, None)
        if not isinstance(signum, int):
            raise bad
    if not 0 < signum < 65:
        raise bad
    if at and not time_text.isdigit():
        raise bad
    return SignalSpec(int(signum), int(time_text) if at else 60, batch_only)
