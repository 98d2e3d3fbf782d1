"""The ``sn40l`` command: a thin dispatcher over per-package command modules.

Each subcommand lives in the package that owns it and is imported only when it is run, so
``sn40l squeue`` does not pay for importing Ray or numpy. A command module provides either

* ``register(subparsers)``: adds its argparse parser(s), each with ``set_defaults(func=...)``
  where ``func(args) -> int``; or
* ``run_command(name, argv) -> int``: takes the raw arguments (Slurm-style commands parse their
  own options to mirror Slurm's messages and exit codes).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from sn40l.errors import SN40LError
from sn40l.output import reserve_stdout

# command -> (module, one-line help). Order is the order of `sn40l --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sn40l.demo", "bring up 2 nodes x 8 sockets locally and show what the emulator does"),
    "hw": ("sn40l.hardware.cli", "show hardware profiles and where each number comes from"),
    "cluster": ("sn40l.cluster.cli", "start, inspect and stop an emulated cluster"),
    "bench": ("sn40l.collectives.cli", "benchmarks of the P2P layer (bench allreduce)"),
    "compile": ("sn40l.compiler.cli", "compile a model preset to a .pef artifact"),
    "inspect": ("sn40l.compiler.cli", "print a .pef's kernels, memory needs and estimated time"),
    "run": ("sn40l.cluster.run_cli", "run a compiled model (prefill + greedy decode)"),
    "coe": ("sn40l.coe.cli", "Composition-of-Experts runtime and benchmark"),
    "paper": ("sn40l.paper.cli", "rerun the SN40L paper's experiments and write a report"),
    "sweep": ("sn40l.sweep.cli", "run an experiment grid (TP, nodes, models, batch, ...)"),
    "plot": ("sn40l.sweep.cli", "plot a sweep's saved results (scaling, bandwidth, split)"),
    "sbatch": ("sn40l.scheduler.cli", "submit a batch script (Slurm's sbatch)"),
    "squeue": ("sn40l.scheduler.cli", "show queued and running jobs (Slurm's squeue)"),
    "scancel": ("sn40l.scheduler.cli", "cancel or signal jobs (Slurm's scancel)"),
    "sinfo": ("sn40l.scheduler.cli", "show partitions and nodes (Slurm's sinfo)"),
    "sacct": ("sn40l.scheduler.cli", "show accounting of jobs and steps (Slurm's sacct)"),
    "scontrol": ("sn40l.scheduler.cli", "show/hold/release/requeue/update jobs and nodes"),
    "srun": ("sn40l.scheduler.cli", "run parallel tasks (inside a job: a job step)"),
}


def configure_logging() -> None:
    """Configure the package logger from SN40L_LOG_LEVEL (default WARNING); NOCONFIG skips."""
    level = os.environ.get("SN40L_LOG_LEVEL", "WARNING").upper()
    if level == "NOCONFIG":
        return
    logger = logging.getLogger("sn40l")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(getattr(logging, level, logging.WARNING))


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: sn40l COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'sn40l COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # the `sn40l` command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from sn40l import __version__
        print(f"sn40l {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"sn40l: error: unknown command {name!r}; commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    if as_program and "--json" in argv:  # stdout: the JSON document only; the rest to stderr
        reserve_stdout()
    configure_logging()
    if hasattr(signal, "SIGPIPE"):  # `sn40l squeue | head` ends quietly, as Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # Imported here on purpose: only the command being run pays for its imports (Ray, numpy).
    module = importlib.import_module(COMMANDS[name][0])
    try:
        if hasattr(module, "run_command"):
            return int(module.run_command(name, argv[1:]) or 0)
        parser = argparse.ArgumentParser(prog="sn40l")
        sub = parser.add_subparsers(dest="command", required=True)
        module.register(sub)
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"sn40l {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only our own errors and Ray's are shown briefly
        message = user_error(exc)
        if message is None:
            raise
        print(f"sn40l {name}: error: {message}", file=sys.stderr)
        return 1


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an error to show without a traceback, or None for a bug.

    A failure inside a socket actor reaches the driver as Ray's ``RayTaskError`` (which is
    also an instance of the cause's class, and whose text is the whole remote stack): it is
    unwrapped to the cause's own message, once. A dead actor or an expired Ray wait is
    reported by what happened. The remote stack is logged at DEBUG (SN40L_LOG_LEVEL=DEBUG).
    """
    ray_exc = sys.modules.get("ray.exceptions")  # Ray is never imported just to check
    if ray_exc is not None and isinstance(exc, ray_exc.RayTaskError):
        logging.getLogger("sn40l").debug("remote failure:\n%s", exc)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, SN40LError):
            return str(cause)
        if isinstance(cause, BaseException):
            return f"{type(cause).__name__} in {exc.function_name}: {cause}"
        return f"{exc.function_name} failed"
    if isinstance(exc, SN40LError):
        return str(exc)
    if ray_exc is not None and isinstance(exc, ray_exc.RayActorError):
        return ("a socket actor died during the command (see 'sn40l cluster status'): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if ray_exc is not None and isinstance(exc, ray_exc.GetTimeoutError):
        return f"Ray did not answer in time: {exc}"
    return None


if __name__ == "__main__":
    sys.exit(main())
