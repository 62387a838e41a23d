"""Achievable fractions of peak and fixed costs used by the roofline model.

One table for every prediction (never tuned per validation case). Each value states where it
comes from; 'assumed' marks an engineering estimate without a public measurement behind it.
"""
from __future__ import annotations

EFFICIENCY = {
    "hbm": (0.84, "CloudMatrix-Infer (arXiv 2506.12708): 84.1% of peak HBM bandwidth reached by "
                  "its memory-bound decode operators"),
    "compute": (0.65, "CloudMatrix-Infer (arXiv 2506.12708): 65.4% of peak reached by its "
                      "compute-bound operators"),
    "dispatch": (0.52, "sgl-kernel-npu README (DeepEP-style dispatch on Ascend A3, EP8): 102 GB/s "
                       "bottleneck bandwidth of a 196 GB/s die link"),
    "combine": (0.78, "sgl-kernel-npu README (combine, EP8): 152 GB/s of a 196 GB/s die link"),
    "scale_out": (0.80, "assumed: RoCE achieves ~80% of line rate for large messages"),
}

FIXED = {
    "a2a_latency_us": (20.0, "assumed: one MoE dispatch or combine costs ~20 us beyond its bytes "
                             "(kernel launch + handshake; ~16x the 1.2 us UB link latency)"),
    "runtime_reserved_gib": (3.0, "assumed: CANN runtime, graph workspace and allocator "
                                  "fragmentation per rank"),
    "hccl_default_buffer_mb": (200, "CANN docs, HCCL_BUFFSIZE: default 200 MB; each communicator "
                                    "holds 2 x HCCL_BUFFSIZE (send + receive)"),
}

# Software factors, the only values fitted on published figures (tools/deploy/validation.py
# marks the rows; tests/test_plan_accuracy.py re-fits them and checks they match):
#   block_gap_us:      fixed time per block pass (kernel launches, syncs, scheduling gaps; the
#                      CANN recipe lists SuperKernel as future work to remove these gaps);
#   activation_passes: how many times the activations a block writes and reads back
#                      (components.activation_bytes) cross HBM, for unfused vector work
#                      (norms, RoPE, quantisation, mHC, softmax, top-k, SwiGLU).
FITTED = {
    "block_gap_us": (226.9, "fitted on validation.FITTED_ROWS: 950DT V4-Flash B16 MTP3 8K (TPOT "
                            "6.55 ms) and Atlas A3 V4-Flash B8192 MTP1 8K (TPOT 29.17 ms), "
                            "cann-recipes-infer DeepSeek-V4 guide"),
    "activation_passes": (5.94, "fitted on the same two rows (decode only; prefill counts one "
                                "pass)"),
}

# Communication and compute overlap: both published deployments pipeline two micro-batches
# (CloudMatrix-Infer 'microbatch-based pipelining'; CANN recipe multi-stream MoE), so a layer
# costs max(local, communication) rather than their sum.
OVERLAP_COMM = True


def eff(name: str) -> float:
    return EFFICIENCY[name][0]


def fitted(name: str) -> float:
    return FITTED[name][0]


def fixed(name: str) -> float:
    return FIXED[name][0]


def table() -> dict:
    """The whole table with sources, for `--json` output and the README."""
    return {"efficiency": {k: {"value": v, "source": s} for k, (v, s) in EFFICIENCY.items()},
            "fixed": {k: {"value": v, "source": s} for k, (v, s) in FIXED.items()},
            "fitted": {k: {"value": v, "source": s} for k, (v, s) in FITTED.items()},
            "overlap_comm": OVERLAP_COMM}
