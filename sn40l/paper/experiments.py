"""The paper's experiments, each over an existing API: the model runner and speculative decoder
on socket actors (Table IV, the 8B switch), the compiler's cost model (Fig. 10/11), the CoE
benchmark (Table V, Fig. 12) and the CoE's capacity sizing (Fig. 13).

Every function returns plain rows (dicts of numbers and names) for the report and the JSON.
Modeled times only come from the profiles; wall time is reported apart.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import ray

from sn40l.cluster.runner import (DEFAULT_SPEC_ACCEPTANCE, ModelRunner, SpeculativeDecoder,
                                  barrier)
from sn40l.compiler import PRESETS, CompileConfig, compile_model
from sn40l.errors import CapacityError, SN40LError
from sn40l.paper import reference

TABLE_IV_MODELS = ("llama3.1-8b", "llama3.1-70b", "llama3.1-405b")
DRAFT = "llama3.1-8b"
VARIANTS = (("unfused", "software"), ("fused", "software"), ("fused", "hardware"))
PROFILES = ("sn40l", "dgx-h100", "dgx-a100")


@dataclass(frozen=True)
class PaperConfig:
    """What the report runs. ``quick()`` is the reduced configuration of the tests."""

    table_iv_models: tuple[str, ...] = TABLE_IV_MODELS
    seq_len: int = 8192              # Table IV: 8K sequence
    prompt_len: int = 8
    plain_tokens: int = 4            # decode tokens of a plain Table IV run
    spec_new_tokens: int = 28        # new tokens of a speculative run (3+ steps of 8 drafts)
    spec_tokens: int = 8             # drafts per step (the cited acceptance was measured at 8)
    spec_acceptance: float = DEFAULT_SPEC_ACCEPTANCE
    fusion_tp: int = 8               # Fig. 10/11 on eight sockets
    coe_experts: tuple[int, ...] = (10, 50, 100, 150)
    coe_batch: tuple[int, ...] = (1, 8)
    coe_tokens: tuple[int, ...] = (20, 200)
    coe_rounds: int = 2
    coe_warmup: int = 2
    footprint_experts: tuple[int, ...] = (10, 50, 100, 150, 300, 500, 1000)
    quick_run: bool = field(default=False)

    @classmethod
    def quick(cls) -> "PaperConfig":
        return cls(table_iv_models=TABLE_IV_MODELS[:2], plain_tokens=2, spec_new_tokens=4,
                   spec_tokens=2, coe_experts=(10,), coe_batch=(1,),
                   coe_tokens=(20,), coe_rounds=1, coe_warmup=0,
                   footprint_experts=(10, 150), quick_run=True)

    def to_dict(self) -> dict:
        return asdict(self)


def steps(cfg: PaperConfig) -> int:
    """Progress steps of a whole report."""
    return (2 * len(cfg.table_iv_models) + 1 + len(reference.TABLE_III)
            + len(PROFILES) + 1)


def table_iv(cfg: PaperConfig, bar) -> dict:
    """Llama 3.1 8B/70B/405B on one 16-socket node, phantom weights, plain and speculative
    (the 8B drafting on the same sockets), plus the DDR -> HBM switch of the 8B."""
    from sn40l.cluster import Cluster
    from sn40l.collectives import create_group, destroy_group

    cluster = Cluster.start(nodes=1, sockets_per_node=16, name=f"paper-{os.getpid()}")
    ranks = list(range(16))
    rows = []
    try:
        compiled = {m: compile_model(CompileConfig(m, 16, 1, "decode", 1, cfg.seq_len))
                    for m in dict.fromkeys((DRAFT,) + cfg.table_iv_models)}
        draft = ModelRunner(cluster, ranks, compiled[DRAFT], weights="phantom", tag="p-draft")
        draft.load()
        try:
            prompt = list(range(1, cfg.prompt_len + 1))
            for m in cfg.table_iv_models:
                bar.note(f"Table IV {m}")
                target = draft if m == DRAFT else ModelRunner(cluster, ranks, compiled[m],
                                                              weights="phantom", tag="p-t")
                if target is not draft:
                    target.load()
                try:
                    plain = target.generate(prompt, cfg.plain_tokens)
                    bar.update()
                    spec = None
                    if m != DRAFT:  # the paper drafts the larger two with the 8B
                        spec = SpeculativeDecoder(target, draft, cfg.spec_tokens,
                                                  cfg.spec_acceptance).generate(
                            prompt, cfg.spec_new_tokens)
                    bar.update()
                finally:
                    if target is not draft:
                        target.unload()
                rows.append({
                    "model": m, "sockets": 16, "seq_len": cfg.seq_len,
                    "tokens_per_s_per_user": plain.tokens_per_s_per_user,
                    "ttft_ms": plain.ttft_ns / 1e6,
                    "spec_tokens_per_s_per_user": spec and spec.tokens_per_s_per_user,
                    "spec_acceptance_rate": spec and spec.acceptance_rate,
                    "spec_draft_ms": spec and spec.draft_ns / 1e6,
                    "paper_tokens_per_s_per_user": reference.TABLE_IV[m]})
        finally:
            draft.unload()
        bar.note("switch an 8B model on 16 sockets")
        group = f"paper-sw-{os.getpid()}"
        create_group(cluster, ranks, group)
        pef = compiled[DRAFT].to_bytes()
        try:
            ray.get([cluster.socket(r).engine_load.remote("p-sw", pef, i, group, "phantom",
                                                          home="ddr")
                     for i, r in enumerate(ranks)])
            t0 = barrier(cluster, ranks)
            act = ray.get([cluster.socket(r).engine_activate.remote("p-sw") for r in ranks])
            switch = {"model": DRAFT, "sockets": 16,
                      "bytes": sum(a["bytes"] for a in act),
                      "switch_ms": (max(a["end_ns"] for a in act) - t0) / 1e6}
        finally:
            ray.get([cluster.socket(r).engine_unload.remote("p-sw") for r in ranks])
            destroy_group(cluster, ranks, group)
        bar.update()
    finally:
        cluster.stop()
    skipped = [m for m in TABLE_IV_MODELS if m not in cfg.table_iv_models]
    return {"rows": rows, "switch": switch, "draft": DRAFT, "not_run": skipped, "spec_tokens": cfg.spec_tokens,
            "spec_acceptance": cfg.spec_acceptance}


def fusion(cfg: PaperConfig, bar) -> dict:
    """Fig. 10/11: unfused, fused with software orchestration and fused with hardware
    orchestration, prefill and decode, from the compiler's cost model on eight sockets.
    Speedups and kernel-count ratios are over the unfused (software-orchestrated) baseline."""
    rows, missing = [], []
    for model, seq in reference.TABLE_III:
        bar.note(f"Fig. 10/11 {model} {seq}")
        if model not in PRESETS:
            missing.append(model)
            bar.update()
            continue
        for mode in ("prefill", "decode"):
            est = {}
            try:
                for fus, orch in VARIANTS:
                    plan = compile_model(CompileConfig(model, cfg.fusion_tp, 1, mode, 1, seq,
                                                       fus, orch)).plan
                    est[(fus, orch)] = plan["estimate"]
            except SN40LError as exc:
                rows.append({"model": model, "seq_len": seq, "mode": mode, "error": str(exc)})
                continue
            base = est[VARIANTS[0]]
            rows.append({
                "model": model, "seq_len": seq, "mode": mode,
                "unfused_ms": base["step_ns"] / 1e6,
                "fused_so_ms": est[VARIANTS[1]]["step_ns"] / 1e6,
                "fused_ho_ms": est[VARIANTS[2]]["step_ns"] / 1e6,
                "speedup_fused_so": base["step_ns"] / est[VARIANTS[1]]["step_ns"],
                "speedup_fused_ho": base["step_ns"] / est[VARIANTS[2]]["step_ns"],
                "kernels_unfused": base["kernels"], "kernels_fused": est[VARIANTS[2]]["kernels"],
                "kernel_ratio": base["kernels"] / est[VARIANTS[2]]["kernels"]})
        bar.update()
    return {"rows": rows, "missing_presets": sorted(set(missing)), "tp": cfg.fusion_tp,
            "paper_speedup_range": reference.FUSION_SPEEDUP_RANGE}


def coe(cfg: PaperConfig, bar) -> dict:
    """Table V / Fig. 12 over ``sn40l coe bench`` (sequential serving): per profile, every
    expert count; a count a profile cannot hold on one node is an OOM row."""
    from sn40l.coe.bench import BenchConfig, run_bench

    rows, refused = [], []
    t0 = time.perf_counter()
    for prof in PROFILES:
        bar.note(f"CoE on {prof}")
        todo = list(cfg.coe_experts)
        while todo:
            bench = BenchConfig(experts=tuple(todo), batch=cfg.coe_batch, tokens=cfg.coe_tokens,
                                profiles=(prof,), modes=("sequential",), rounds=cfg.coe_rounds,
                                warmup=cfg.coe_warmup)
            try:
                rows += run_bench(bench, progress=lambda msg: bar.note(msg.strip()))["rows"]
                todo = []
            except CapacityError as exc:
                if len(todo) == 1:
                    refused.append({"profile": prof, "experts": todo[0], "error": str(exc)})
                    todo = []
                else:  # find which counts fit: one at a time
                    rows_one = []
                    for n in todo:
                        try:
                            rows_one += run_bench(BenchConfig(**dict(
                                asdict(bench), experts=(n,))),
                                progress=lambda msg: bar.note(msg.strip()))["rows"]
                        except CapacityError as one:
                            refused.append({"profile": prof, "experts": n, "error": str(one)})
                    rows += rows_one
                    todo = []
        bar.update()
    for r in rows:
        r["rounds"] = cfg.coe_rounds
        if r.get("oom") and not any(x["profile"] == r["profile"] and x["experts"] ==
                                    r["experts"] for x in refused):
            refused.append({"profile": r["profile"], "experts": r["experts"],
                            "error": f"OOM: {r['oom']}"})
    return {"rows": rows, "refused": refused, "speedups": coe_speedups(rows),
            "wall_s": time.perf_counter() - t0,
            "paper_switch_speedup_range": reference.SWITCH_SPEEDUP_RANGE}


def coe_speedups(rows: list[dict]) -> list[dict]:
    """SN40L over each DGX per (experts, batch, tokens): overall and expert-only speedups and
    the modeled switch time per expert switched."""
    def per_switch(r: dict) -> float | None:
        return r["switch_ms"] * r["rounds"] / r["switches"] if r.get("switches") else None

    by = {(r["profile"], r["experts"], r["batch"], r["tokens"]): r for r in rows}
    out = []
    for (prof, n, b, t), sn in sorted(by.items()):
        if prof != "sn40l" or sn.get("oom"):
            continue
        for dgx in PROFILES[1:]:
            d = by.get((dgx, n, b, t))
            if d is not None and d.get("oom"):  # the bench's OOM row: no DGX numbers
                out.append({"experts": n, "batch": b, "tokens": t, "versus": dgx,
                            "sn40l_ms": sn["latency_ms"], "dgx_ms": None,
                            "sn40l_nodes": sn["nodes"], "dgx_nodes": d["nodes"],
                            "overall_speedup": None, "expert_speedup": None,
                            "sn40l_switch_ms_per_expert": per_switch(sn),
                            "dgx_switch_ms_per_expert": None, "oom": d["oom"]})
                continue
            out.append({"experts": n, "batch": b, "tokens": t, "versus": dgx,
                        "sn40l_ms": sn["latency_ms"], "dgx_ms": d and d["latency_ms"],
                        "sn40l_nodes": sn["nodes"], "dgx_nodes": d and d["nodes"],
                        "overall_speedup": d and d["latency_ms"] / sn["latency_ms"],
                        "expert_speedup": d and d["expert_ms"] / sn["expert_ms"],
                        "sn40l_switch_ms_per_expert": per_switch(sn),
                        "dgx_switch_ms_per_expert": d and per_switch(d)})
    return out


def footprint_nodes(cfg: PaperConfig, bar) -> dict:
    """Fig. 13: nodes needed to hold N llama2-7b experts at TP8 latency: the SN40L from socket
    DDR (switching at DDR -> HBM speed), a DGX with every expert in HBM (switching from host
    memory is what it cannot afford), and a DGX from host memory for comparison."""
    from sn40l.coe.placement import footprint
    from sn40l.coe.registry import synthetic
    from sn40l.coe.sizing import coe_needs
    from sn40l.hardware.profile import load_profile

    bar.note("Fig. 13 footprint")
    rows = []
    for prof in PROFILES:
        profile = load_profile(prof)
        coe_cfg = synthetic(1, "llama2-7b", 8, router={"preset": "llama2-7b"})
        needs, router_bytes = coe_needs(coe_cfg, prof)
        for n in cfg.footprint_experts:
            f = footprint(profile, needs[0], 8, n, router_bytes)
            rows.append({"profile": prof, "experts": n,
                         "nodes_home": f["nodes_needed_home"], "nodes_hbm": f["nodes_needed_hbm"],
                         "home": f["home"]})
    bar.update()
    return {"rows": rows, "paper_reduction_max": reference.FOOTPRINT_REDUCTION_MAX}
