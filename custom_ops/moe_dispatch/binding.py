"""numpy entry point of moe_dispatch (CPU twin) and the DispatchResult layout that moe_combine consumes."""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from custom_ops.runtime.runner import call_aot

TWIN, FUNC = "moe_dispatch", "MoeDispatchAot"


@dataclass
class DispatchResult:
    """Rows grouped by expert (expert-major, stable in token order); N = T * k rows, the first
    expert_offsets[-1] used.  Rank r (experts r*E/ep .. (r+1)*E/ep - 1) owns rows rank_offsets[r]..[r+1]."""
    x: np.ndarray                  # [N, D] payload: x's dtype, or e4m3 codes (uint8) when fp8
    scales: np.ndarray             # [N, ceil(D/128)] uint8 ue8m0 exponents (127 = 1.0 when not fp8)
    weights: np.ndarray            # [N] f32 routing weight of each row
    token: np.ndarray              # [N] i32 source token (-1 = unused row)
    slot_of: np.ndarray            # [T, k] i32 row of route (t, j) (-1 = dropped)
    topk_weights: np.ndarray       # [T, k] f32
    expert_counts: np.ndarray      # [E] i32
    expert_offsets: np.ndarray     # [E + 1] i32
    rank_counts: np.ndarray        # [ep] i32 rows per destination rank
    rank_token_counts: np.ndarray  # [ep] i32 distinct tokens per destination rank (sent once per rank)
    num_experts: int
    ep_size: int
    fp8: bool

    @property
    def rank_offsets(self) -> np.ndarray:
        per = self.num_experts // self.ep_size
        return self.expert_offsets[::per].copy()

    def rank_rows(self, rank: int) -> slice:
        o = self.rank_offsets
        return slice(int(o[rank]), int(o[rank + 1]))

    def dequantized(self) -> np.ndarray:
        """Payload as fp32 [N, D] (decodes FP8 rows with their 1x128 scales)."""
        if not self.fp8:
            return self.x.astype(np.float32)
        d = self.x.shape[1]
        v = self.x.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
        s = np.ldexp(np.float32(1), self.scales.astype(np.int32) - 127).astype(np.float32)
        return v * np.repeat(s, 128, axis=1)[:, :d]


def moe_dispatch(x, topk_idx, topk_weights, num_experts: int, ep_size: int = 1, fp8: bool = False) -> DispatchResult:
    """x [T, D] f32/bf16, topk_idx [T, k] int (-1 = dropped), topk_weights [T, k] -> DispatchResult."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, ml_dtypes.bfloat16):
        x = x.astype(np.float32)
    if x.ndim != 2:
        raise ValueError(f"moe_dispatch: x must be [T, D], got {x.shape}")
    t, d = x.shape
    idx = np.asarray(topk_idx)
    if idx.ndim != 2 or idx.shape[0] != t or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"moe_dispatch: topk_idx must be integer [T={t}, k], got {idx.dtype} {idx.shape}")
    k = idx.shape[1]
    w = np.asarray(topk_weights, np.float32)
    if w.shape != (t, k):
        raise ValueError(f"moe_dispatch: topk_weights must be [{t}, {k}], got {w.shape}")
    if num_experts < 1 or ep_size < 1 or num_experts % ep_size:
        raise ValueError(f"moe_dispatch: num_experts ({num_experts}) must be a positive multiple of ep_size ({ep_size})")
    bad = (idx < -1) | (idx >= num_experts)
    if bad.any():
        raise ValueError(f"moe_dispatch: topk_idx holds {int(idx[bad][0])}, outside -1..{num_experts - 1}")
    n, s = t * k, -(-d // 128)
    out = [np.empty((n, d), np.uint8 if fp8 else x.dtype), np.empty((n, s), np.uint8), np.empty(n, np.float32),
           np.empty(n, np.int32), np.empty((t, k), np.int32), np.empty(num_experts, np.int32),
           np.empty(num_experts + 1, np.int32), np.empty(ep_size, np.int32), np.empty(ep_size, np.int32)]
    attrs = np.array([num_experts, ep_size, int(fp8)], np.int32)
    call_aot(TWIN, FUNC, [x, idx.astype(np.int32), w, attrs], out)
    return DispatchResult(*out[:5], w, *out[5:], num_experts=num_experts, ep_size=ep_size, fp8=fp8)
