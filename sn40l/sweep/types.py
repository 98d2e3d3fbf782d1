"""Closed choices of experiments: workload kinds, collective operations, row status, metrics."""

from __future__ import annotations

from sn40l.choices import Choice


class WorkloadKind(Choice):
    """What one point of an experiment runs."""

    MODEL = "model"            # prefill + greedy decode of a compiled model
    COLLECTIVE = "collective"  # AllReduce / ReduceScatter / AllGather / Broadcast over a size
    COE = "coe"                # a Composition of Experts serving batches


class CollectiveOp(Choice):
    """The collective a ``collective`` point times."""

    ALLREDUCE = "allreduce"
    REDUCE_SCATTER = "reduce_scatter"
    ALLGATHER = "allgather"
    BROADCAST = "broadcast"


class Status(Choice):
    """How a point ended: ``ok``; ``skipped`` (it cannot run: the reason says why, e.g. TP
    larger than the sockets, a model that does not fit); ``failed`` (it should have run)."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


class Metric(Choice):
    """Modeled metrics a row carries (plots and ``--metric`` name them)."""

    TTFT_MS = "ttft_ms"
    TPOT_MS = "tpot_ms"
    TOKENS_PER_S_PER_USER = "tokens_per_s_per_user"
    TOKENS_PER_S = "tokens_per_s"
    HBM_UTILISATION = "hbm_utilisation"
    LATENCY_MS = "latency_ms"
    BUSBW_GBPS = "busbw_GBps"
    ALGBW_GBPS = "algbw_GBps"
