"""The CoE section of ``sn40l demo``: ``demo_section(cluster, report)`` fits the demo's
``SECTIONS`` list (each section takes the cluster and the report)."""

from __future__ import annotations

import time
from pathlib import Path

from sn40l.cluster.runner import ModelRunner
from sn40l.coe.model import tokenize
from sn40l.coe.registry import parse_registry, synthetic
from sn40l.coe.runtime import CoERuntime, ServeOptions
from sn40l.hardware.units import format_ns

TINY4 = {
    "name": "demo-tiny4", "weights": "random", "serving": {"max_batch": 8, "max_context": 64},
    "cache": {"max_resident": 2},
    "experts": [
        {"name": "math", "preset": "tiny", "tp": 8,
         "domain": "algebra calculus integral derivative equation theorem proof matrix"},
        {"name": "code", "preset": "tiny", "tp": 8,
         "domain": "python function compile bug loop variable class recursion"},
        {"name": "law", "preset": "tiny", "tp": 8,
         "domain": "contract court statute liability plaintiff defendant appeal"},
        {"name": "medicine", "preset": "tiny", "tp": 8,
         "domain": "patient diagnosis symptom dose clinical therapy infection"}]}
PROMPTS = ["what is the integral of this equation", "my python loop has a bug",
           "the defendant lost the appeal in court", "patient symptom and dose",
           "prove the theorem for the matrix"]
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "coe"


class _Rows:
    """Collects rows when the caller gives no report."""

    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []
        self.ok = True

    def add(self, section: str, what: str, modeled: str = "-", wall: str = "-") -> None:
        self.rows.append((section, what, modeled, wall))


def demo_section(cluster, report=None) -> list[tuple[str, str, str, str]]:
    """Tiny materialized CoE on node 0 (outputs checked against each expert alone), then a
    phantom Samba-CoE of 150 Llama-2-7B experts over all nodes: load, serve a batch of 8
    sequentially and with grouping + prefetch. Rows are (section, what, modeled, wall)."""
    rep = report if report is not None else _Rows()
    added: list[tuple[str, str, str, str]] = []

    def add(what: str, modeled: str = "-", wall: str = "-") -> None:
        added.append(("coe", what, modeled, wall))
        rep.add("coe", what, modeled, wall)

    print("[coe] Composition of Experts: router -> expert, experts in DDR, LRU cache in HBM",
          flush=True)
    t0 = time.perf_counter()
    rt = CoERuntime(cluster, parse_registry(TINY4), nodes=[0])
    rt.load()
    try:
        res = rt.serve(PROMPTS, 6)
        latency, copied_back = res.latency_ns, res.copied_back
        resident = rt.caches[0].resident()
        weights = rt.builds["math"].segment_bytes("weight")
    finally:
        rt.unload()
    # each expert alone: its artifact and seed on the same sockets, one prompt at a time
    ok = True
    for p, r in zip(PROMPTS, res.requests):
        b = rt.builds[r.expert]
        alone = ModelRunner(cluster, cluster.node_ranks(0), b.artifact, seed=b.seed,
                            tag=f"demo-alone-{r.expert}")
        alone.load()
        try:
            ok &= alone.generate(tokenize(p, b.model.vocab), 6).tokens == r.tokens
        finally:
            alone.unload()
    rep.ok &= ok
    routed = ", ".join(f"{p.split()[-1]}->{r.expert}" for p, r in zip(PROMPTS, res.requests))
    add(f"4 tiny Llama experts TP8 on node 0, run by the sockets' tile engines: routed "
        f"{routed}; outputs equal each expert run alone: {ok}", format_ns(latency),
        f"{time.perf_counter() - t0:.2f} s")
    add(f"HBM cache (2 slots, LRU first): {resident}; copied back {copied_back} B of dirty KV "
        f"caches, 0 of the {weights} B read-only weights per socket and expert")
    t0 = time.perf_counter()
    cfg = synthetic(150, "llama2-7b", 8, name="demo-samba150", router={"preset": "llama2-7b"})
    rt = CoERuntime(cluster, cfg)
    info = rt.load()
    try:
        add(f"Samba-CoE: 150 x Llama-2-7B (1.0T params, phantom) in DDR of "
            f"{len(rt.plan().groups)} TP8 group(s), router (7B backbone + centroid head) in HBM",
            format_ns(info["load_ns"]), f"{time.perf_counter() - t0:.2f} s")
        picks = [3, 77, 3, 149, 12, 77, 0, 5]
        prompts = [f"topic{i:03d}a topic{i:03d}b topic{i:03d}c" for i in picks]
        for opts in (ServeOptions(), ServeOptions(group_by_expert=True, prefetch=True)):
            rt.reset()
            t1 = time.perf_counter()
            b = rt.serve(prompts, 20, opts)
            add(f"BS=8, 20 tokens, {opts.label}: router {format_ns(b.router_ns)}, switch "
                f"{format_ns(b.switch_ns)}, experts {format_ns(b.expert_ns)}, HBM hits "
                f"{b.hit_rate:.0%}", format_ns(b.latency_ns), f"{time.perf_counter() - t1:.2f} s")
    finally:
        rt.unload()
    return added
