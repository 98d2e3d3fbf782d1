"""Published GPU figures and the modeled latency of the same generation, side by side.

:func:`nemo_rows` reads the reference table ``sn40l/hardware/reference/gpu_latency.yaml``
(NVIDIA NeMo / TensorRT-LLM Llama-2 latencies, the page the SN40L paper cites for its DGX
estimates; nccl-tests AllReduce latencies). :func:`generation_ns` models one such request from
the profiles: a prefill of the prompt, then one decode step per further output token, each priced
by the compiler's cost model (:func:`sn40l.compiler.plan.estimate`). Pure: no Ray.

Known error (see the test that checks it): the published figures are end-to-end latencies of a
2023 serving stack; at TP 8 they hold about 4-5 ms per generated token that neither the kernels'
HBM time, their launches nor NCCL AllReduce latency explain, so the model is optimistic for the
GPUs there (about 0.45x of the published latency), as the paper's own estimates are.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import yaml

from sn40l.compiler.plan import CompileConfig, compile_plan


@dataclass(frozen=True)
class PublishedLatency:
    """One row of the NeMo table: ``model`` at TP ``tp`` and ``batch`` on a GPU."""

    model: str
    gpu: str          # "a100" or "h100"
    tp: int
    batch: int
    input_tokens: int
    output_tokens: int
    ms: float


PROFILE_OF = {"a100": "dgx-a100", "h100": "dgx-h100"}


def reference() -> dict:
    """The reference table as plain data (with its sources)."""
    text = resources.files("sn40l.hardware").joinpath("reference/gpu_latency.yaml").read_text()
    return yaml.safe_load(text)


def nemo_rows() -> list[PublishedLatency]:
    ref = reference()["nemo_llama2"]
    out = []
    for tp, batch, a100, h100 in ref["rows"]:
        for gpu, ms in (("a100", a100), ("h100", h100)):
            out.append(PublishedLatency(ref["model"], gpu, tp, batch, ref["input_tokens"],
                                        ref["output_tokens"], float(ms)))
    return out


def generation_ns(model: str, profile: str, tp: int, batch: int, input_tokens: int,
                  output_tokens: int, orchestration: str = "software",
                  fusion: str = "fused") -> int:
    """Modeled latency of one batch: prefill of ``input_tokens``, then ``output_tokens - 1``
    decode steps priced at the full context (input + output)."""
    def step(mode: str, seq: int) -> int:
        cfg = CompileConfig(model, tp=tp, mode=mode, batch=batch, seq_len=seq, fusion=fusion,
                            orchestration=orchestration, profile=profile)
        return int(compile_plan(cfg)["estimate"]["step_ns"])
    return (step("prefill", input_tokens)
            + (output_tokens - 1) * step("decode", input_tokens + output_tokens))
