"""``sn40l sweep`` (run an experiment) and ``sn40l plot`` (plot saved results).

``sn40l sweep [EXPERIMENT.yaml] [--workload KIND] [--PARAM v1,v2,...] --out results.csv``:
the YAML file and the flags use the same names (:data:`sn40l.sweep.experiment.PARAMS`); flags
add axes to the file's or replace them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sn40l.errors import ConfigError
from sn40l.sweep.experiment import PARAMS, Experiment, split_list
from sn40l.sweep.types import WorkloadKind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run an experiment grid on a warm cluster")
    p.add_argument("experiment", nargs="?", default=None,
                   help="experiment YAML (name, workload, repeats, axes); see "
                        "deploy/experiments/")
    p.add_argument("--workload", default=None,
                   help=f"{', '.join(w.value for w in WorkloadKind)} (default: the file's, "
                        "else model)")
    p.add_argument("--name", default=None, help="experiment name (default: the file's stem)")
    p.add_argument("--repeats", type=int, default=None, help="runs of every point")
    for prm in PARAMS.values():
        p.add_argument(prm.flag, dest=f"axis_{prm.name}", default=None, metavar="V[,V...]",
                       help=f"{prm.help} [{', '.join(w.value for w in prm.workloads)}]")
    p.add_argument("--out", "-o", required=True,
                   help="results file: NAME.csv and NAME.json are both written")
    p.add_argument("--resume", action="store_true",
                   help="skip the points already in --out (ok or skipped)")
    p.add_argument("--plot", default=None, metavar="DIR", help="write the plots to DIR")
    p.add_argument("--cluster", default=None, help="a running cluster's name")
    p.add_argument("--address", default=None, help="Ray address (HOST:PORT) of a running "
                                                   "cluster")
    p.add_argument("--via-slurm", action="store_true",
                   help="submit the points as one array job on the cluster's scheduler")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_sweep)
    pl = sub.add_parser("plot", help="plot a sweep's saved results")
    pl.add_argument("results", help="results .csv or .json written by sn40l sweep")
    pl.add_argument("-o", "--out", required=True, metavar="DIR", help="directory for the PNGs")
    pl.set_defaults(func=cmd_plot)


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """The experiment of the YAML file (if any) with the flags' axes added or replaced."""
    base = Experiment.from_yaml(args.experiment) if args.experiment else None
    workload = WorkloadKind.from_str(args.workload) if args.workload else (
        base.workload if base else WorkloadKind.MODEL)
    if base is not None and workload is not base.workload:
        raise ConfigError(f"--workload {workload} differs from the file's workload "
                          f"{base.workload}")
    raw = {k: list(v) for k, v in base.axes} if base else {}
    for prm in PARAMS.values():
        text = getattr(args, f"axis_{prm.name}")
        if text is not None:
            if workload not in prm.workloads:
                allowed = [q.flag for q in PARAMS.values() if workload in q.workloads]
                raise ConfigError(f"{prm.flag} does not apply to workload {workload}; "
                                  f"allowed: {', '.join(allowed)}")
            raw[prm.name] = split_list(text)
    name = args.name or (base.name if base else f"{workload}-sweep")
    repeats = args.repeats if args.repeats is not None else (base.repeats if base else 1)
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats} must be >= 1")
    return Experiment.build(name, workload, raw, repeats, base.description if base else "",
                            where=args.experiment or "flags")


def cmd_sweep(args: argparse.Namespace) -> int:
    from sn40l.sweep.results import ResultFile, format_table
    from sn40l.sweep.run import check_runnable

    exp = experiment_from_args(args)
    check_runnable(exp)
    if args.plot:
        _need_matplotlib()
    results = ResultFile(Path(args.out), exp)
    if args.resume:
        results.load_existing()
    elif results.json_path.exists() or results.csv_path.exists():
        raise ConfigError(f"{results.csv_path} already exists; use --resume to continue it or "
                          "another --out")
    if args.via_slurm:
        from sn40l.sweep.slurm import run_via_slurm

        run_via_slurm(exp, results, args)
    else:
        _run_here(exp, results, args)
    if args.plot:
        from sn40l.sweep.plots import plot_results

        for path in plot_results(exp.to_dict(), results.rows, args.plot):
            print(f"plot written to {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(results.rows, indent=1))
    else:
        from sn40l.sweep.workloads import METRICS

        shown = tuple(m for m in METRICS if any(r.get(m) is not None for r in results.rows))
        print(format_table(results.rows, exp.swept, shown))
        print(f"rows written to {results.csv_path} and {results.json_path}")
    return 0 if all(r["status"] != "failed" for r in results.rows) else 1


def _run_here(exp, results, args) -> None:
    from sn40l.cluster.attach import announce, attach
    from sn40l.sweep.run import run_sweep

    attached = attach(args.cluster, args.address)
    if attached is not None:
        announce("sweep", attached)
    run_sweep(exp, results, attached, quiet=args.quiet,
              announce=lambda c, private: announce("sweep", c, private))


def _need_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("plots need matplotlib (a dependency of sn40l): pip install 'matplotlib>=3.7'")


def cmd_plot(args: argparse.Namespace) -> int:
    from sn40l.sweep.plots import plot_results
    from sn40l.sweep.results import read_results

    _need_matplotlib()
    data = read_results(args.results)
    paths = plot_results(data["experiment"], data["rows"], args.out)
    for path in paths:
        print(path)
    if not paths:
        print("no plot applies to these results (no ok rows over a swept axis)",
              file=sys.stderr)
    return 0
