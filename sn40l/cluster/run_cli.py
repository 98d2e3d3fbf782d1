"""``sn40l run``: prefill + greedy decode of a compiled model on emulated sockets.

Inside a job (``SN40L_JOB_ID``, ``SN40L_CLUSTER``, ``SN40L_SOCKETS``, ``SN40L_LEASE`` set by the
scheduler) it uses exactly the job's sockets, with the job's capability: directly over Ray when
the job's user has Ray's credentials (``SN40L_RAY_ADDRESS``, ``SN40L_RAY_AUTH``), else through
the controller (:mod:`sn40l.scheduler.agent`). Otherwise it starts an embedded local cluster.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a compiled model: prefill + greedy decode")
    p.add_argument("model", help="a .pef file, a preset name or a Hugging Face checkpoint "
                                 "directory (compiled on the fly)")
    p.add_argument("--prompt-ids", required=True, help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--weights", default=None,
                   help="random (materialized, from --seed), phantom, or a checkpoint "
                        "directory; default: the checkpoint compiled from, random for tiny "
                        "presets, phantom otherwise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tp", type=int, default=8, help="when compiling a preset on the fly")
    p.add_argument("--nodes", type=int, default=1, help="when compiling a preset on the fly")
    p.add_argument("--seq-len", type=int, default=2048, help="when compiling a preset")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_run)


def _prompt(text: str) -> list[int]:
    from sn40l.errors import ConfigError

    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--prompt-ids {text!r} must be comma-separated integers") from None
    if not ids:
        raise ConfigError("--prompt-ids needs at least one token id")
    return ids


def cmd_run(args: argparse.Namespace) -> int:
    from sn40l.compiler import Artifact, CompileConfig, compile_model

    prompt = _prompt(args.prompt_ids)
    if Path(args.model).suffix == ".pef":
        art = Artifact.load(args.model)
    else:
        art = compile_model(CompileConfig(args.model, args.tp, args.nodes, "decode", 1,
                                          args.seq_len))
    model_name = art.plan["model"]["name"]
    weights = args.weights or art.plan.get("checkpoint") or (
        "random" if model_name.startswith("tiny") else "phantom")
    if weights != "phantom":  # a phantom-only preset is refused before any socket starts
        from sn40l.compiler.models import check_materializable
        from sn40l.socket.engine import model_from_plan

        check_materializable(model_from_plan(art.plan))
    if os.environ.get("SN40L_JOB_ID") and not os.environ.get("SN40L_RAY_ADDRESS"):
        from sn40l.scheduler.agent import run_in_job  # a job without Ray access

        res, ranks = run_in_job(art, prompt, args.max_new_tokens, weights, args.seed)
        return _report(args, art, model_name, weights, res, ranks, _profile(art))
    cluster, ranks, job, started = _sockets(art)
    try:
        from sn40l.cluster.runner import ModelRunner

        runner = ModelRunner(cluster, ranks, art, weights=weights, seed=args.seed, job=job,
                             tag=f"run-{os.getpid()}")
        runner.load()
        try:
            res = runner.generate(prompt, args.max_new_tokens)
        finally:
            runner.unload()
    finally:
        if started:
            cluster.stop()
    return _report(args, art, model_name, weights, res, ranks, cluster.profile)


def _profile(art):
    from sn40l.hardware.profile import load_profile

    return load_profile(art.plan["profile"])


def _report(args, art, model_name, weights, res, ranks, profile) -> int:
    from sn40l.hardware.units import format_ns

    hbm_bw = art.plan["estimate"]["hbm_bytes_per_step"]
    tps = res.tokens_per_s_per_user
    util = (hbm_bw * tps) / profile.tier("hbm").bandwidth if tps else 0.0
    out = {"model": model_name, "tp": art.tp, "weights": weights, "tokens": res.tokens,
           "ttft_ms": res.ttft_ns / 1e6, "tokens_per_s_per_user": tps,
           "hbm_bandwidth_utilisation": util, "wall_s": res.wall_s, "sockets": ranks}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{model_name} TP{art.tp} ({weights} weights) on sockets {ranks}")
    print(f"tokens: {','.join(map(str, res.tokens))}")
    print(f"modeled: TTFT {format_ns(res.ttft_ns)}, {tps:.1f} output tokens/s/user, "
          f"HBM bandwidth utilisation {util:.0%}")
    print(f"wall: {res.wall_s:.2f} s")
    return 0


def _sockets(art):
    """(cluster, ranks, job id, started here) from the job's environment or a local cluster."""
    from sn40l.cluster import Cluster, ensure_ray
    from sn40l.errors import ConfigError

    if os.environ.get("SN40L_JOB_ID"):
        ensure_ray(os.environ["SN40L_RAY_ADDRESS"], auth=os.environ.get("SN40L_RAY_AUTH"))
        cluster = Cluster.connect(os.environ["SN40L_CLUSTER"])
        ranks = [int(r) for r in os.environ["SN40L_SOCKETS"].split(",")][: art.tp]
        if len(ranks) < art.tp:
            raise ConfigError(f"the job holds {len(ranks)} sockets; the model needs TP {art.tp}")
        job = os.environ.get("SN40L_LEASE") or int(os.environ["SN40L_JOB_ID"])
        return cluster, ranks, job, False
    nodes = int(art.plan["config"]["nodes"])
    per_node = art.tp // nodes
    ensure_ray(None)
    cluster = Cluster.start(nodes=nodes, sockets_per_node=8 if per_node <= 8 else 16,
                            profile=art.plan["profile"], name=f"run-{os.getpid()}")
    spn = cluster.spec.sockets_per_node
    return cluster, [n * spn + s for n in range(nodes) for s in range(per_node)], None, True
