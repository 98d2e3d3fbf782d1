"""Modeled Llama performance from the compiler's cost model: TTFT (prefill of the prompt) and
decode tokens/s/user, fused/unfused x hardware/software orchestration. Not a test.

These are the compiler's estimates from the profile (`sn40l inspect` shows the same); running
the kernels on socket actors (the tile engine) is not built yet.

    python benchmarks/llama.py [--seq-len 8192] [--prompt 1024]
"""

from __future__ import annotations

import argparse
import time

from sn40l.compiler import CompileConfig, compile_model

CASES = [("llama3.1-8b", 16, 2), ("llama3.1-70b", 16, 2), ("llama3.1-405b", 16, 2),
         ("llama2-7b", 8, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seq-len", type=int, default=8192, help="context of the decode step")
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens for TTFT")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"{'model':<14} {'TP':>3} {'nodes':>5} {'fusion':<8} {'orch':<9} {'TTFT ms':>9} "
          f"{'tok/s/user':>10} {'HBM GiB/skt':>11} {'DDR GiB/skt':>11}")
    for model, tp, nodes in CASES:
        seq = min(args.seq_len, 4096) if model.startswith("llama2") else args.seq_len
        for fusion in ("fused", "unfused"):
            for orch in ("hardware", "software"):
                dec = compile_model(CompileConfig(model, tp, nodes, "decode", 1, seq, fusion,
                                                  orch))
                pre = compile_model(CompileConfig(model, tp, nodes, "prefill", 1,
                                                  min(args.prompt, seq), fusion, orch))
                print(f"{model:<14} {tp:>3} {nodes:>5} {fusion:<8} {orch:<9} "
                      f"{pre.plan['estimate']['step_ns'] / 1e6:>9.2f} "
                      f"{1e9 / dec.plan['estimate']['step_ns']:>10.1f} "
                      f"{dec.hbm_bytes_per_socket / 2**30:>11.2f} "
                      f"{dec.ddr_bytes_per_socket / 2**30:>11.2f}")
    print(f"\nmodeled from the sn40l profile (cost model); SN40L paper reference: Llama 3.1 8B on "
          f"16 sockets, 8K sequence: 1042 tok/s/user. Wall {time.perf_counter() - t0:.2f} s.")


if __name__ == "__main__":
    main()
