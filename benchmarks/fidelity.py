"""The hardware model against the paper's baselines, from the compiler's cost model. Not a test.

1. DGX A100 / H100 against the published NeMo / TensorRT-LLM Llama-2-7B latencies
   (sn40l/hardware/reference/gpu_latency.yaml), modeled with host-issued launches as
   TensorRT-LLM ran in 2023.
2. Fig. 10 / 11 analogue for the Table III models on 8 SN40L sockets: unfused (software
   orchestration), fused-SO and fused-HO step times, speedups and device-kernel counts.

    python benchmarks/fidelity.py
"""

from __future__ import annotations

import time

from sn40l.compiler.baseline import PROFILE_OF, generation_ns, nemo_rows
from sn40l.compiler.models import TABLE_III
from sn40l.compiler.plan import CompileConfig, compile_plan


def _step(model: str, mode: str, seq: int, fusion: str, orch: str) -> tuple[float, int]:
    est = compile_plan(CompileConfig(model, tp=8, mode=mode, seq_len=seq, fusion=fusion,
                                     orchestration=orch))["estimate"]
    return est["step_ns"] / 1e6, est["kernels"]


def main() -> None:
    t0 = time.perf_counter()
    print("DGX model vs published NeMo latency (llama2-7b, 128 in / 20 out, ms)")
    print(f"{'GPU':<5} {'TP':>3} {'BS':>3} {'published':>10} {'modeled':>9} {'ratio':>6}")
    for row in nemo_rows():
        ms = generation_ns(row.model, PROFILE_OF[row.gpu], row.tp, row.batch, row.input_tokens,
                           row.output_tokens) / 1e6
        print(f"{row.gpu:<5} {row.tp:>3} {row.batch:>3} {row.ms:>10.1f} {ms:>9.1f} "
              f"{ms / row.ms:>6.2f}")
    print("\nFig. 10/11 analogue on 8 SN40L sockets (BS 1; step ms; speedup over unfused-SO)")
    print(f"{'model':<11} {'ctx':>5} {'mode':<8} {'unfused':>9} {'fused-SO':>9} {'fused-HO':>9} "
          f"{'x fuse':>7} {'x HO':>6} {'kernels unf/fused':>18}")
    for model, contexts in TABLE_III:
        for ctx in contexts:
            for mode in ("prefill", "decode"):
                un, k_un = _step(model, mode, ctx, "unfused", "software")
                so, k_f = _step(model, mode, ctx, "fused", "software")
                ho, _ = _step(model, mode, ctx, "fused", "hardware")
                print(f"{model:<11} {ctx:>5} {mode:<8} {un:>9.2f} {so:>9.2f} {ho:>9.2f} "
                      f"{un / so:>7.2f} {un / ho:>6.2f} {k_un:>9}/{k_f:<8}")
    print(f"\n(modeled times from the profiles; wall {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
