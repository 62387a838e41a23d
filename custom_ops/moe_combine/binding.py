"""numpy entry point of moe_combine (CPU twin)."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from custom_ops.runtime.runner import call_aot

TWIN, FUNC = "moe_combine", "MoeCombineAot"


def moe_combine(expert_out, result) -> np.ndarray:
    """expert_out [N, D] f32/bf16 in `result`'s row layout -> y [T, D] f32 = sum_j w[t,j] expert_out[row(t,j)]."""
    eo = np.asarray(expert_out)
    if eo.dtype not in (np.float32, ml_dtypes.bfloat16):
        eo = eo.astype(np.float32)
    t, k = result.slot_of.shape
    if eo.ndim != 2 or eo.shape[0] != result.x.shape[0]:
        raise ValueError(f"moe_combine: expert_out must be [{result.x.shape[0]}, D] (one row per dispatched row), got {eo.shape}")
    y = np.empty((t, eo.shape[1]), np.float32)
    call_aot(TWIN, FUNC, [eo, result.slot_of, result.topk_weights], [y])
    return y
