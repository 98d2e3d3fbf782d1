"""What sbatch sends: options from the command line and #SBATCH lines, resolved to a request.

:func:`build_request` turns argv (+ the script's ``#SBATCH`` lines, overridden by the command
line) into a plain dict the controller accepts; it checks everything that needs no knowledge of
the cluster and raises :class:`SubmitError` with Slurm's message and exit code otherwise. The
array and dependency grammars live here too, since the controller re-checks them.
"""

from __future__ import annotations

import os
import re
import shlex
import socket as std_socket
from dataclasses import dataclass

from sn40l.scheduler.errors import SubmitError
from sn40l.scheduler.getopt import Opt, Parser, UsageError
from sn40l.scheduler.job import Dep
from sn40l.scheduler.sbatch_input import input_env_options, parse_signal
from sn40l.scheduler.timespec import parse_begin, parse_time_limit
from sn40l.scheduler.types import DepKind

MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: indices 0..1000


SBATCH_OPTS = [
    Opt("J", "job-name", "yes", "job_name"),
    Opt("N", "nodes", "yes", "nodes"),
    Opt("n", "ntasks", "yes", "ntasks"),
    Opt("", "ntasks-per-node", "yes", "ntasks_per_node"),
    Opt("c", "cpus-per-task", "yes", "cpus_per_task"),
    Opt("", "gres", "yes", "gres"),
    Opt("G", "gpus", "yes", "gpus"),
    Opt("t", "time", "yes", "time"),
    Opt("p", "partition", "yes", "partition"),
    Opt("o", "output", "yes", "output"),
    Opt("e", "error", "yes", "error"),
    Opt("i", "input", "yes", "input"),
    Opt("D", "chdir", "yes", "chdir"),
    Opt("", "export", "yes", "export"),
    Opt("w", "nodelist", "yes", "nodelist"),
    Opt("x", "exclude", "yes", "exclude"),
    Opt("d", "dependency", "yes", "dependency"),
    Opt("a", "array", "yes", "array"),
    Opt("", "requeue", "no", "requeue"),
    Opt("", "no-requeue", "no", "no_requeue"),
    Opt("", "exclusive", "optional", "exclusive"),
    Opt("H", "hold", "no", "hold"),
    Opt("b", "begin", "yes", "begin"),
    Opt("", "parsable", "no", "parsable"),
    Opt("", "test-only", "no", "test_only"),
    Opt("", "mem", "yes", "mem"),
    Opt("", "mem-per-cpu", "yes", "mem_per_cpu"),
    Opt("A", "account", "yes", "account"),
    Opt("q", "qos", "yes", "qos"),
    Opt("", "mail-type", "yes", "mail_type"),
    Opt("", "mail-user", "yes", "mail_user"),
    Opt("", "comment", "yes", "comment"),
    Opt("", "open-mode", "yes", "open_mode"),
    Opt("", "wrap", "yes", "wrap"),
    Opt("", "signal", "yes", "signal"),
    Opt("", "nice", "optional", "nice"),
    Opt("", "priority", "yes", "priority"),
    Opt("W", "wait", "no", "wait"),
    Opt("Q", "quiet", "no", "quiet"),
    Opt("v", "verbose", "no", "verbose", many=True),
    Opt("", "cluster-name", "yes", "cluster"),
    Opt("M", "clusters", "yes", "cluster"),
    Opt("h", "help", "no", "help"),
    Opt("V", "version", "no", "version"),
    Opt("", "usage", "no", "usage"),
]

SBATCH_USAGE = """\
Usage: sbatch [OPTIONS(0)...] [ : [OPTIONS(N)...]] script(0) [args(0)...]

Parallel run options (the common ones):
  -a, --array=indexes         job array index values (e.g. 0-15%4, 1,3,5, 0-15:2)
  -A, --account=name          charge job to specified account (recorded)
  -b, --begin=time            defer job until HH:MM MM/DD/YY, YYYY-MM-DD[THH:MM[:SS]], now+N
  -c, --cpus-per-task=ncpus   number of cpus required per task
  -d, --dependency=type:jobid[:time] defer job until condition on jobid is satisfied
                              (after, afterany, afterok, afternotok, aftercorr, singleton;
                              ',' means all, '?' means any)
  -D, --chdir=directory       set working directory for batch script
  -e, --error=err             file for batch script's standard error
      --export[=names]        specify environment variables to export (ALL, NONE, NAME=val)
      --gres=rdu:N            RDU sockets required per node
  -H, --hold                  submit job in held state
  -J, --job-name=jobname      name of job
  -N, --nodes=N[-M]           number of nodes on which to run
  -n, --ntasks=ntasks         number of tasks to run
      --ntasks-per-node=n     number of tasks to invoke on each node
  -o, --output=out            file for batch script's standard output
                              (patterns %j %x %A %a %N %u %%)
  -p, --partition=partition   partition requested
      --parsable              outputs only the jobid and cluster name (if present)
      --requeue / --no-requeue  permit or forbid the job to be requeued
  -t, --time=minutes          time limit (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, UNLIMITED)
      --test-only             validate the job and estimate its start; submit nothing
  -w, --nodelist=hosts...     request a specific list of hosts
  -x, --exclude=hosts...      exclude a specific list of hosts
      --exclusive             allocate nodes in exclusive mode
      --wrap[=command string] wrap command string in a sh script and submit
      --mem=MB, --qos, --mail-type, --mail-user  accepted and recorded
"""


def parse_int(value: str, option: str, lo: int = 1) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise SubmitError(f"error: Invalid numeric value \"{value}\" for {option}.", 255) \
            from None
    if n < lo:
        raise SubmitError(f"error: Invalid numeric value \"{value}\" for {option}.", 255)
    return n


def parse_gres(text: str) -> int:
    """RDUs per node from ``--gres``: ``rdu``, ``rdu:N``, ``rdu:sn40l:N`` (comma lists allowed,
    each naming rdu). Anything else is not a resource this cluster has."""
    total = 0
    for item in text.split(","):
        item = item.strip()
        if not item or item.lower() == "none":
            continue
        if item.startswith("gres/"):
            item = item[5:]
        parts = item.split(":")
        if parts[0] != "rdu" or len(parts) > 3:
            raise SubmitError("error: Invalid generic resource (gres) specification", 1)
        count = parts[-1] if len(parts) > 1 else "1"
        if len(parts) == 3 and parts[1] != "sn40l":
            raise SubmitError("error: Invalid generic resource (gres) specification", 1)
        if not count.isdigit():
            if len(parts) == 2 and parts[1] == "sn40l":
                count = "1"
            else:
                raise SubmitError("error: Invalid generic resource (gres) specification", 1)
        total += int(count)
    return total


def parse_mem_mb(text: str) -> int:
    """Megabytes of ``--mem`` (``4096``, ``4G``, ``500M``, ``1T``); 0 means all of a node."""
    m = re.match(r"^(\d+)([KMGT]?)B?$", str(text).strip(), re.IGNORECASE)
    if not m:
        raise SubmitError(f"error: Invalid --mem specification {text!r}", 255)
    n, unit = int(m.group(1)), m.group(2).upper()
    return {"K": max(1, n // 1024) if n else 0, "": n, "M": n, "G": n * 1024,
            "T": n * 1024 * 1024}[unit]


@dataclass(frozen=True)
class ArraySpec:
    """A parsed ``--array``: the task ids and the throttle (0 = none)."""

    indices: tuple[int, ...]
    throttle: int = 0


def parse_array(text: str) -> ArraySpec:
    """``0-15``, ``1,3,5-7``, ``0-15:4``, each optionally ``%N`` (run at most N at once)."""
    bad = SubmitError("error: Invalid job array specification", 255)
    body, pct, throttle_text = text.strip().partition("%")
    throttle = 0
    if pct:
        if not throttle_text.isdigit():
            raise bad
        throttle = int(throttle_text)
    indices: list[int] = []
    for item in body.split(","):
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", item.strip())
        if not m:
            raise bad
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo or step < 1:
            raise bad
        indices.extend(range(lo, hi + 1, step))
    if not indices or max(indices) >= MAX_ARRAY_SIZE:
        raise SubmitError(f"error: Invalid job array specification (indices must be 0 to "
                          f"{MAX_ARRAY_SIZE - 1})", 255)
    return ArraySpec(tuple(sorted(set(indices))), throttle)


DEPENDENCY_TYPES = tuple(k.value for k in DepKind)


def parse_dependency(text: str) -> tuple[str, list[Dep]]:
    """(``"all"`` or ``"any"``, terms) of a ``--dependency`` value. ``,`` joins terms that must
    all hold, ``?`` terms of which one suffices (they may not be mixed, as in Slurm)."""
    bad = SubmitError("error: Batch job submission failed: Job dependency problem", 1)
    text = text.strip()
    if not text:
        raise bad
    if "," in text and "?" in text:
        raise bad
    mode = "any" if "?" in text else "all"
    deps: list[Dep] = []
    for term in re.split(r"[,?]", text):
        if term == "singleton":
            deps.append(Dep(DepKind.SINGLETON))
            continue
        kind, colon, rest = term.partition(":")
        if kind not in DEPENDENCY_TYPES or kind == "singleton" or not colon or not rest:
            raise bad
        for ref in rest.split(":"):
            m = re.match(r"^(\d+)(?:_(\d+))?(?:\+(\d+))?$", ref)
            if not m or (m.group(3) and kind != "after"):
                raise bad
            deps.append(Dep(DepKind(kind), int(m.group(1)),
                            int(m.group(2)) if m.group(2) is not None else None,
                            int(m.group(3) or 0)))
    return mode, deps


def batch_directives(script: str) -> list[str]:
    """The arguments of the ``#SBATCH`` lines at the top of a script: they are read up to the
    first line that is neither blank nor a comment, as sbatch does."""
    args: list[str] = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if line.startswith("#SBATCH"):  # only at the start of the line, as sbatch reads it
            rest = line[len("#SBATCH"):]
            if rest and not rest[0].isspace():
                continue  # e.g. '#SBATCHX': not a directive
            args += shlex.split(rest, comments=True)
    return args


WRAP_TEMPLATE = "#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{}\n"


def read_script(path: str, shown: str | None = None) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise SubmitError(f"error: Unable to open file {shown or path}", 1) from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise SubmitError(f"error: Batch script {shown or path} is not text; the first line must start "
                          "with #! followed by the path to an interpreter", 1) from None


def check_script(script: str) -> None:
    if not script.startswith("#!"):
        raise SubmitError("error: This does not look like a batch script.  The first\n"
                          "sbatch: error: line must start with #! followed by the path to an "
                          "interpreter.\nsbatch: error: For instance: #!/bin/sh", 1)
    if "\0" in script:
        raise SubmitError("error: The batch script contains a NULL character", 1)


def build_request(argv: list[str], env: dict[str, str] | None = None,
                  cwd: str | None = None, stdin_text: str | None = None,
                  prog: str = "sbatch") -> dict:
    """The request of ``sbatch argv`` run in ``cwd`` with environment ``env``.

    Returns the request dict (see :func:`resolve`), with ``parsable``/``test_only``/... flags
    the command itself acts on. Raises :class:`SubmitError` (exit code 255 for what getopt and
    option parsing refuse, 1 for what a submission refuses), or ``UsageError``.
    """
    env = dict(os.environ if env is None else env)
    cwd = cwd or os.getcwd()
    parser = Parser(prog, SBATCH_OPTS, stop_at_operand=True)
    try:
        cli, operands, _ = parser.parse(argv)
    except UsageError as exc:
        raise SubmitError(f"{str(exc)[len(prog) + 2:]}\nTry \"{prog} --help\" for more "
                          "information", 255) from None
    if cli.get("help") or cli.get("usage") or cli.get("version"):
        return {"help": True}
    if "wrap" in cli:
        if operands:
            raise SubmitError("error: Script arguments not permitted with --wrap option", 255)
        script = WRAP_TEMPLATE.format(cli["wrap"])
        default_name = "wrap"
        script_args: list[str] = []
    elif operands:
        path = operands[0]
        script = read_script(os.path.join(cwd, path), path)
        default_name = os.path.basename(path)
        script_args = operands[1:]
    else:
        if stdin_text is None:
            raise SubmitError("error: no batch script given and standard input is a terminal",
                              1)
        script = stdin_text
        default_name = "sbatch"
        script_args = []
    check_script(script)
    try:
        directives, _, _ = Parser(prog, SBATCH_OPTS, stop_at_operand=True).parse(
            batch_directives(script))
    except UsageError as exc:
        raise SubmitError(f"{str(exc)[len(prog) + 2:]} (in an #SBATCH line)", 255) from None
    # Slurm's precedence: the command line, then SBATCH_* variables, then #SBATCH lines
    merged = {**directives, **input_env_options(env), **cli}
    req = resolve(merged, env, cwd)
    req.update(script=script, script_args=script_args,
               name=merged.get("job_name") or default_name,
               wrapped="wrap" in cli,  # scontrol shows Command=(null) for these
               command=cli.get("wrap") if "wrap" in cli else (
                   os.path.abspath(os.path.join(cwd, operands[0])) if operands else None))
    return req


def resolve(o: dict, env: dict[str, str], cwd: str) -> dict:
    """Turn option values (strings, as typed) into the typed request the controller takes."""
    req: dict = {"parsable": bool(o.get("parsable")), "test_only": bool(o.get("test_only")),
                 "wait": bool(o.get("wait")), "quiet": bool(o.get("quiet"))}
    # node and task counts
    nodes_min = nodes_max = None
    if "nodes" in o:
        m = re.match(r"^(\d+)(?:-(\d+))?$", str(o["nodes"]).strip())
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise SubmitError(f"error: Invalid node count specification \"{o['nodes']}\"", 255)
        nodes_min = int(m.group(1))
        nodes_max = int(m.group(2)) if m.group(2) else nodes_min
    ntasks = parse_int(o["ntasks"], "-n/--ntasks") if "ntasks" in o else None
    ntpn = (parse_int(o["ntasks_per_node"], "--ntasks-per-node")
            if "ntasks_per_node" in o else None)
    cpt = parse_int(o["cpus_per_task"], "-c/--cpus-per-task") if "cpus_per_task" in o else None
    if nodes_min is None:
        nodes_min = nodes_max = 1
        if ntasks and ntpn:
            nodes_min = nodes_max = -(-ntasks // ntpn)
        req["nodes_implicit"] = True
    if ntasks is None:
        ntasks = nodes_min * (ntpn or 1)
    if ntpn and ntasks > nodes_max * ntpn:
        raise SubmitError("error: Batch job submission failed: Requested node configuration "
                          "is not available", 1)
    if ntasks < nodes_min:
        nodes_min = nodes_max = ntasks  # Slurm: fewer tasks than nodes shrinks the node count
    req.update(nodes=nodes_min, nodes_max=nodes_max, ntasks=ntasks, ntasks_per_node=ntpn,
               cpus_per_task=cpt)
    gres = 0
    if "gres" in o:
        gres = parse_gres(str(o["gres"]))
    if "gpus" in o:
        raise SubmitError("error: Invalid generic resource (gres) specification: this cluster "
                          "has RDUs, not GPUs; use --gres=rdu:N", 1)
    req["gres_rdu"] = gres
    # time
    if "time" in o:
        try:
            req["time_limit"] = parse_time_limit(str(o["time"]))
        except ValueError:
            raise SubmitError("error: Invalid --time specification", 255) from None
        req["time_set"] = True
    else:
        req["time_limit"] = None
        req["time_set"] = False
    if "begin" in o:
        try:
            req["begin"] = parse_begin(str(o["begin"]))
        except ValueError:
            raise SubmitError(f"error: Invalid time specification {o['begin']}", 255) from None
    else:
        req["begin"] = None
    if "array" in o:
        spec = parse_array(str(o["array"]))
        req["array"] = list(spec.indices)
        req["array_throttle"] = spec.throttle
        req["array_text"] = str(o["array"])
    if "dependency" in o:
        parse_dependency(str(o["dependency"]))  # syntax now; ids by the controller
        req["dependency"] = str(o["dependency"])
    from sn40l.scheduler import hostlist

    for key in ("nodelist", "exclude"):
        if key in o:
            try:
                req[key] = hostlist.expand(str(o[key]))
            except ValueError as exc:
                raise SubmitError(f"error: Invalid {key} specification: {exc}", 255) from None
    if req.get("nodelist") and "nodes" not in o:
        req["nodes"] = req["nodes_max"] = max(req["nodes"], len(req["nodelist"]))
        req["ntasks"] = max(req["ntasks"], req["nodes"])
    workdir = os.path.join(cwd, str(o["chdir"])) if "chdir" in o else cwd
    req["workdir"] = os.path.normpath(workdir)
    req["submit_dir"] = cwd
    req["submit_host"], req["alloc_sid"] = std_socket.gethostname(), os.getsid(0)
    for key in ("output", "error", "input", "partition", "account", "qos", "mail_type",
                "mail_user", "comment"):
        if key in o:
            req[key] = str(o[key])
    if "signal" in o:
        spec = parse_signal(str(o["signal"]))
        req["signal"] = {"signum": spec.signum, "seconds": spec.seconds,
                         "batch_only": spec.batch_only, "text": str(o["signal"])}
    if "open_mode" in o:
        if str(o["open_mode"]) not in ("append", "truncate"):
            raise SubmitError(f"error: Invalid --open-mode specification {o['open_mode']!r}; "
                              "allowed: append, truncate", 255)
        req["open_mode"] = str(o["open_mode"])
    if "mem" in o:
        req["mem_mb"] = parse_mem_mb(str(o["mem"]))
    if "mem_per_cpu" in o:
        req["mem_per_cpu_mb"] = parse_mem_mb(str(o["mem_per_cpu"]))
    req["requeue"] = bool(o.get("requeue")) or not o.get("no_requeue")  # Slurm's default: yes
    req["exclusive"] = "exclusive" in o and o["exclusive"] not in ("oversubscribe",)
    req["hold"] = bool(o.get("hold"))
    if "nice" in o:
        req["nice"] = 100 if o["nice"] is True else parse_int(str(o["nice"]), "--nice", -10000)
    req["env"] = export_env(str(o.get("export", "ALL")), env)
    req["export"] = str(o.get("export", "ALL"))
    return req


def export_env(spec: str, env: dict[str, str]) -> dict[str, str]:
    """The environment a job starts with under ``--export=spec`` (ALL, NONE, or a list of names
    and NAME=value pairs, optionally starting with ALL)."""
    items = [s for s in spec.split(",") if s]
    if not items:
        items = ["ALL"]
    first = items[0].upper()
    if first == "ALL":
        out = dict(env)
        items = items[1:]
    elif first == "NONE":
        out = {}
        items = items[1:]
    else:
        out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise SubmitError(f"error: Invalid --export specification {spec!r}", 255)
        if eq:
            out[name] = value
        elif name in env:
            out[name] = env[name]
    return out
