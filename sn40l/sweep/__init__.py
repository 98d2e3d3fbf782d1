"""Scaling experiments: grids of model, collective and CoE runs on warm clusters, tidy rows
(CSV/JSON) and plots. ``sn40l sweep`` and ``sn40l plot`` are the command line."""

from sn40l.sweep.experiment import PARAMS, Experiment, Point
from sn40l.sweep.types import CollectiveOp, Metric, Status, WorkloadKind

__all__ = ["PARAMS", "Experiment", "Point", "CollectiveOp", "Metric", "Status", "WorkloadKind"]
