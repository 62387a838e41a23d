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
    # End-to-end software efficiency: published throughput / roofline throughput of the
    # closest published deployment (kernel launch gaps, vector-unit work, imbalance...).
    # tests/test_planner.py recomputes both from tools/deploy/validation.py.
    "decode_software": (0.27, "fitted once: CANN recipe V4-Flash on Atlas A3 (4,388 "
                              "tokens/chip/s published / 16,182 roofline); held-out check: "
                              "950DT case"),
    "prefill_software": (0.63, "fitted once: CloudMatrix-Infer R1 prefill (6,688 tokens/s/NPU "
                               "published / 10,609 roofline)"),
}

FIXED = {
    "a2a_latency_us": (20.0, "assumed: one MoE dispatch or combine costs ~20 us beyond its bytes "
                             "(kernel launch + handshake; ~16x the 1.2 us UB link latency)"),
    "layer_overhead_us": (40.0, "assumed: ~20 fused kernels per block at ~2 us launch/sync gap "
                                "each under graph mode (CANN recipe lists SuperKernel as future "
                                "work to remove these gaps)"),
    "runtime_reserved_gib": (3.0, "assumed: CANN runtime, graph workspace and allocator "
                                  "fragmentation per rank"),
    "hccl_default_buffer_mb": (200, "CANN docs, HCCL_BUFFSIZE: default 200 MB; each communicator "
                                    "holds 2 x HCCL_BUFFSIZE (send + receive)"),
}

# Communication and compute overlap: both published deployments pipeline two micro-batches
# (CloudMatrix-Infer 'microbatch-based pipelining'; CANN recipe multi-stream MoE), so a layer
# costs max(local, communication) rather than their sum.
OVERLAP_COMM = True


def eff(name: str) -> float:
    return EFFICIENCY[name][0]


def fixed(name: str) -> float:
    return FIXED[name][0]


def table() -> dict:
    """The whole table with sources, for `--json` output and the README."""
    return {"efficiency": {k: {"value": v, "source": s} for k, (v, s) in EFFICIENCY.items()},
            "fixed": {k: {"value": v, "source": s} for k, (v, s) in FIXED.items()},
            "overlap_comm": OVERLAP_COMM}
