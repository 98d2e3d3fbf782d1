"""``sn40l run``: prefill + greedy decode of a compiled model on emulated sockets.

Inside a job (``SN40L_JOB_ID``, ``SN40L_CLUSTER``, ``SN40L_SOCKETS``, ``SN40L_LEASE`` set by the
scheduler) it uses exactly the job's sockets, with the job's capability: directly over Ray when
the job's user has Ray's credentials (``SN40L_RAY_ADDRESS``, ``SN40L_RAY_AUTH``), else through
the controller (:mod:`sn40l.scheduler.agent`). Otherwise it starts an embedded local cluster.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sn40l.output import emit_json


# Materialized runs keep each socket's KV cache in host memory as float32: the default
# --seq-len is capped so that it stays under this (assumption: a laptop-sized share per socket).
HOST_KV_BUDGET = 256 * 2**20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a compiled model: prefill + greedy decode")
    p.add_argument("model", help="a .pef file, a preset name or a Hugging Face checkpoint "
                                 "directory (compiled on the fly)")
    p.add_argument("--prompt", default=None,
                   help="text, encoded with the checkpoint's tokenizer.json (checkpoints only)")
    p.add_argument("--chat", action="store_true",
                   help="with --prompt: apply the checkpoint's chat template to it first")
    p.add_argument("--prompt-ids", default=None, help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--weights", default=None,
                   help="random (materialized, from --seed), phantom, or a checkpoint "
                        "directory; default: the checkpoint compiled from, random for tiny "
                        "presets, phantom otherwise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tp", type=int, default=8, help="when compiling a preset on the fly")
    p.add_argument("--nodes", type=int, default=1, help="when compiling a preset on the fly")
    p.add_argument("--seq-len", type=int, default=None,
                   help="when compiling on the fly; default: the model's maximum context, "
                        "capped where the KV cache would not fit (said on stderr)")
    p.add_argument("--draft", default=None,
                   help="speculative decoding: a draft model (preset, .pef or checkpoint) "
                        "sharing the target's vocabulary, compiled at the target's TP")
    p.add_argument("--spec-tokens", type=int, default=None,
                   help="tokens the draft proposes per step (with --draft)")
    p.add_argument("--spec-acceptance", type=float, default=None,
                   help="phantom models: share of drafted tokens accepted (default "
                        "0.5868, Llama 3 8B drafting for 70B; see sn40l.cluster.runner)")
    p.add_argument("--draft-placement", default="same", choices=["same", "other"],
                   help="the draft on the target's sockets (same) or on sockets of its own")
    p.add_argument("--allow-unknown-config-keys", action="store_true",
                   help="run a checkpoint whose config.json has keys the loader does not know "
                        "(a warning instead of an error; results may be wrong)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (everything else on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--cluster", default=None,
                   help="a running cluster's name (default: the running cluster, if any)")
    p.add_argument("--address", default=None,
                   help="Ray address (HOST:PORT) of a running cluster")
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


def _default_seq_len(model, tp: int, new_tokens: int) -> int:
    """The model's maximum context, capped so one socket's KV cache fits HOST_KV_BUDGET."""
    import sys

    from sn40l.compiler.plan import shard_shapes
    from sn40l.hardware.units import format_bytes

    kv = shard_shapes(model, tp)["kv_heads"] * model.head_dim
    per_token = model.layers * 2 * kv * 4  # float32 K and V of every layer on one socket
    cap = max(new_tokens + 1, HOST_KV_BUDGET // per_token)
    if model.max_position <= cap:
        return model.max_position
    print(f"sn40l run: --seq-len defaults to {cap}, not the model's maximum "
          f"{model.max_position}: a KV cache of {model.max_position} tokens takes "
          f"{format_bytes(model.max_position * per_token)} per socket (budget "
          f"{format_bytes(HOST_KV_BUDGET)}); pass --seq-len to choose", file=sys.stderr)
    return cap


def _artifact(model: str, args: argparse.Namespace, tp: int | None = None,
              nodes: int | None = None, seq_len: int | None = None):
    """A .pef, or a preset / checkpoint compiled on the fly (``seq_len``, else --seq-len, else
    the model's default)."""
    from sn40l.compiler import Artifact, CompileConfig, compile_model
    from sn40l.compiler.checkpoint import is_checkpoint, load_config
    from sn40l.compiler.models import preset

    if Path(model).suffix == ".pef":
        return Artifact.load(model)
    unknown = "warn" if args.allow_unknown_config_keys else "error"
    cfg = load_config(model, unknown) if is_checkpoint(model) else preset(model)
    tp = tp or args.tp
    seq = seq_len or args.seq_len or _default_seq_len(cfg, tp, args.max_new_tokens)
    return compile_model(CompileConfig(model, tp, nodes or args.nodes, "decode", 1, seq), cfg)


def layer_skip_tensors(art, draft_art, weights: str, seed: int) -> dict | None:
    """A draft whose shape is the target's with fewer layers, next to a target with random
    weights, gets the target's first layers (a layer-skip draft); otherwise None."""
    from sn40l.socket.engine import model_from_plan, random_weights

    t, d = model_from_plan(art.plan), model_from_plan(draft_art.plan)
    same = [getattr(t, f) for f in ("hidden", "heads", "kv_heads", "intermediate", "vocab")] == \
        [getattr(d, f) for f in ("hidden", "heads", "kv_heads", "intermediate", "vocab")]
    if weights != "random" or not same or d.layers >= t.layers:
        return None
    full = random_weights(t, seed)
    return {k: v for k, v in full.items()
            if not k.startswith("layers.") or int(k.split(".")[1]) < d.layers}


def _check_spec_flags(args: argparse.Namespace) -> None:
    from sn40l.errors import ConfigError

    if args.draft is None:
        for flag, value in (("--spec-tokens", args.spec_tokens),
                            ("--spec-acceptance", args.spec_acceptance)):
            if value is not None:
                raise ConfigError(f"{flag} needs --draft (speculative decoding)")
        return
    if args.spec_tokens is None or args.spec_tokens < 1:
        raise ConfigError(f"--draft needs --spec-tokens K >= 1, got {args.spec_tokens}")


def check_pair(art, draft_art, weights: str, acceptance: float | None) -> None:
    """What :class:`SpeculativeDecoder` refuses, checked before any socket is started."""
    from sn40l.errors import ConfigError

    t, d = art.plan["model"], draft_art.plan["model"]
    if t["vocab"] != d["vocab"]:
        raise ConfigError(f"draft {d['name']!r} has a vocabulary of {d['vocab']}, the target "
                          f"{t['name']!r} {t['vocab']}: a draft must share the target's "
                          "vocabulary")
    if acceptance is not None and weights != "phantom":
        raise ConfigError("--spec-acceptance applies to phantom models only; materialized "
                          "models measure their acceptance")


def check_run(art, prompt: list[int], max_new_tokens: int, weights: str, seed: int) -> None:
    """What the sockets would refuse, refused here first: token ids outside the vocabulary, a
    prompt plus new tokens longer than the compiled sequence, an unknown weights source, more
    host memory than materialized weights may take."""
    from sn40l.compiler.checkpoint import is_checkpoint
    from sn40l.compiler.validate import check_load
    from sn40l.errors import ConfigError

    vocab, seq_len = int(art.plan["model"]["vocab"]), int(art.plan["config"]["seq_len"])
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ConfigError(f"--prompt-ids: token id(s) {bad[:5]} out of range; the model's "
                          f"vocabulary is 0 to {vocab - 1}")
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens} is out of range; allowed 1 to "
                          f"{max(1, seq_len - len(prompt))}")
    if len(prompt) + max_new_tokens > seq_len:
        raise ConfigError(f"{len(prompt)} prompt tokens + --max-new-tokens {max_new_tokens} "
                          f"exceed the compiled sequence length {seq_len} (--seq-len)")
    if weights not in ("random", "phantom") and not is_checkpoint(weights):
        raise ConfigError(f"--weights {weights!r}: allowed 'random', 'phantom' or a checkpoint "
                          "directory (config.json + model.safetensors)")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"--seed {seed} is out of range; allowed 0 to {2**63 - 1}")
    check_load(art.plan, weights, origin=f"model {art.plan['model']['name']!r}")


def cmd_run(args: argparse.Namespace) -> int:
    from sn40l.compiler.models import check_materializable
    from sn40l.compiler.tokenizer import CheckpointTokenizer
    from sn40l.errors import ConfigError
    from sn40l.progress import progress
    from sn40l.socket.engine import model_from_plan

    if (args.prompt is None) == (args.prompt_ids is None):
        raise ConfigError("give exactly one of --prompt TEXT and --prompt-ids IDS")
    if args.chat and args.prompt is None:
        raise ConfigError("--chat applies the chat template to --prompt TEXT; none given")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    _check_spec_flags(args)
    steps = ["compile", "bring-up", "load", "generate"]
    with progress(len(steps), "run", quiet=args.quiet) as bar:
        bar.note(f"compile {args.model}")
        art = _artifact(args.model, args)
        ckpt = art.plan.get("checkpoint")
        tokenizer = None
        if args.prompt is not None:
            if not ckpt:
                raise ConfigError(f"--prompt needs a tokenizer; {art.plan['model']['name']!r} "
                                  "is a preset without one: use --prompt-ids")
            tokenizer = CheckpointTokenizer.from_dir(ckpt)
            prompt = (tokenizer.encode_chat(args.prompt) if args.chat
                      else tokenizer.encode(args.prompt))
            if not prompt:
                raise ConfigError(f"--prompt {args.prompt!r} encodes to no tokens")
        else:
            prompt = _prompt(args.prompt_ids)
        model_name = art.plan["model"]["name"]
        weights = args.weights or ckpt or (
            "random" if model_name.startswith("tiny") else "phantom")
        if weights != "phantom":  # a phantom-only preset is refused before any socket starts
            check_materializable(model_from_plan(art.plan))
        check_run(art, prompt, args.max_new_tokens, weights, args.seed)  # before any socket
        draft_art = draft_tensors = None
        if args.draft:
            draft_art = _artifact(args.draft, args, art.tp, int(art.plan["config"]["nodes"]),
                                  int(art.plan["config"]["seq_len"]))  # the target's context
            draft_tensors = layer_skip_tensors(art, draft_art, weights, args.seed)
            check_pair(art, draft_art, weights, args.spec_acceptance)
        if os.environ.get("SN40L_JOB_ID") and not os.environ.get("SN40L_RAY_ADDRESS"):
            if args.draft:
                raise ConfigError("--draft inside a job without Ray access is not supported "
                                  "yet (the controller runs plain decoding only)")
            from sn40l.scheduler.agent import run_in_job  # a job without Ray access

            bar.update(note="run on the job's sockets through the controller")
            res, ranks = run_in_job(art, prompt, args.max_new_tokens, weights, args.seed)
            bar.update(len(steps) - 1)
            return _report(args, art, model_name, weights, res, ranks, _profile(art), prompt,
                           tokenizer)
        bar.update(note="bring-up")
        other = args.draft is not None and args.draft_placement == "other"
        cluster, ranks, job, started = _sockets(art, args, extra=art.tp if other else 0)
        ranks, draft_ranks = ranks[:art.tp], (ranks[art.tp:] if other else ranks[:art.tp])
        spec = None
        try:
            from sn40l.cluster.runner import ModelRunner, SpeculativeDecoder

            runner = ModelRunner(cluster, ranks, art, weights=weights, seed=args.seed, job=job,
                                 tag=f"run-{os.getpid()}")
            draft = None
            if draft_art is not None:
                draft = ModelRunner(cluster, draft_ranks, draft_art, weights=weights,
                                    seed=args.seed, job=job, tag=f"draft-{os.getpid()}",
                                    tensors=draft_tensors)
                spec = SpeculativeDecoder(runner, draft, args.spec_tokens,
                                          args.spec_acceptance)
            bar.update(note=f"load {weights} weights on {len(ranks)} sockets")
            runner.load()
            try:
                bar.update(note=f"generate {args.max_new_tokens} tokens")
                if draft is None:
                    res = runner.generate(prompt, args.max_new_tokens)
                else:
                    draft.load()
                    try:
                        res = spec.generate(prompt, args.max_new_tokens)
                    finally:
                        draft.unload()
                bar.update()
            finally:
                runner.unload()
        finally:
            if started:
                cluster.stop()
    extra = {}
    if spec is not None:
        extra = {"draft": draft_art.plan["model"]["name"], "spec_tokens": args.spec_tokens,
                 "draft_placement": spec.placement.value, "draft_sockets": draft_ranks,
                 "draft_weights": ("target's first layers" if draft_tensors is not None
                                   else weights),
                 "drafted": res.drafted, "accepted": res.accepted,
                 "acceptance_source": ("measured" if weights != "phantom" else
                                       f"set (--spec-acceptance {spec.acceptance})")}
    return _report(args, art, model_name, weights, res, ranks, cluster.profile, prompt,
                   tokenizer, extra)


def _profile(art):
    from sn40l.hardware.profile import load_profile

    return load_profile(art.plan["profile"])


def _report(args, art, model_name, weights, res, ranks, profile, prompt, tokenizer,
            spec: dict | None = None) -> int:
    """Print a run's result; ``spec``: the speculative run's draft, placement and counts."""
    from sn40l.hardware.units import format_ns

    hbm_bw = art.plan["estimate"]["hbm_bytes_per_step"]
    tps = res.tokens_per_s_per_user
    passes = len(res.decode_ns) * 1e9 / sum(res.decode_ns) if sum(res.decode_ns) else 0.0
    util = hbm_bw * passes / profile.tier("hbm").bandwidth  # target passes read it
    out = {"model": model_name, "tp": art.tp, "weights": weights, "prompt_ids": prompt,
           "tokens": res.tokens, "seq_len": int(art.plan["config"]["seq_len"]),
           "ttft_ms": res.ttft_ns / 1e6, "tokens_per_s_per_user": tps,
           "hbm_bandwidth_utilisation": util, "wall_s": res.wall_s, "sockets": ranks,
           "acceptance_rate": res.acceptance_rate, "draft_ms": res.draft_ns / 1e6,
           **(spec or {})}
    if tokenizer is not None:
        out["text"] = tokenizer.decode(res.tokens)
    if args.json:
        emit_json(out, indent=2)
        return 0
    print(f"{model_name} TP{art.tp} ({weights} weights) on sockets {ranks}")
    if spec:
        rate = "-" if res.acceptance_rate is None else f"{res.acceptance_rate:.1%}"
        print(f"speculative: draft {out['draft']} (weights: {out['draft_weights']}) on "
              f"{out['draft_placement']} sockets {out['draft_sockets']}, {out['spec_tokens']} "
              f"tokens per step; acceptance {rate} ({out['acceptance_source']}), draft "
              f"{format_ns(res.draft_ns)} modeled")
    print(f"tokens: {','.join(map(str, res.tokens))}")
    if tokenizer is not None:
        print(f"text: {out['text']}")
    print(f"modeled: TTFT {format_ns(res.ttft_ns)}, {tps:.1f} output tokens/s/user, "
          f"HBM bandwidth utilisation {util:.0%}")
    print(f"wall: {res.wall_s:.2f} s")
    return 0


def _sockets(art, args, extra: int = 0):
    """(cluster, ranks, job id, started here): the model's ``art.tp`` sockets, then ``extra``
    more (a draft's own sockets) on the nodes after the model's; the job's sockets inside a
    job, else the running cluster (``--cluster``, ``--address`` or the one ``cluster up``
    started), else a private embedded cluster."""
    from sn40l.cluster import Cluster, ensure_ray
    from sn40l.cluster.attach import announce, attach, place
    from sn40l.errors import ConfigError

    if os.environ.get("SN40L_JOB_ID"):
        ensure_ray(os.environ["SN40L_RAY_ADDRESS"], auth=os.environ.get("SN40L_RAY_AUTH"))
        cluster = Cluster.connect(os.environ["SN40L_CLUSTER"])
        ranks = [int(r) for r in os.environ["SN40L_SOCKETS"].split(",")][: art.tp + extra]
        if len(ranks) < art.tp + extra:
            raise ConfigError(f"the job holds {len(ranks)} sockets; the model needs TP {art.tp}"
                              + (f" and its draft {extra} more" if extra else ""))
        job = os.environ.get("SN40L_LEASE") or int(os.environ["SN40L_JOB_ID"])
        return cluster, ranks, job, False
    nodes = int(art.plan["config"]["nodes"])
    per_node = art.tp // nodes
    more = -(-extra // per_node) if extra else 0
    running = attach(args.cluster, args.address)
    if running is not None:
        ranks = place(running, per_node * (nodes + more), nodes + more, art.plan["profile"])
        announce("run", running)
        return running, ranks[:art.tp + extra], None, False
    ensure_ray(None)
    spn = 8 if per_node <= 8 else 16
    cluster = Cluster.start(nodes=nodes + more, sockets_per_node=spn,
                            profile=art.plan["profile"], name=f"run-{os.getpid()}")
    announce("run", cluster, private=True)
    ranks = [n * spn + s for n in range(nodes + more) for s in range(per_node)]
    return cluster, ranks[:art.tp + extra], None, True
