"""Per-rank HBM budget of a decode or prefill instance: weights by format, KV cache,
activations, HCCL buffers sized like the CANN MoE dispatch/combine operators require."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

from . import calibration as cal

MB = 1024 * 1024


@dataclass
class Layout:
    """How one instance is laid out over `ranks` HCCL ranks (dies)."""
    ranks: int               # = expert-parallel degree
    tp: int = 1              # attention tensor parallel (DP = ranks / tp)
    scheme: str = "native"   # weight storage scheme (model_stats.SCHEMES)
    cache: str = "fp8"       # KV cache layout (model_stats.CACHE_FORMATS)
    draft: int = 1           # MTP draft tokens per step (0 = no MTP)
    accept: float = 0.7      # mean accepted drafts per step
    redundant: int = 0       # redundant expert copies across the instance
    head_tp: int = 8         # vocab-parallel degree of embed / head

    @property
    def dp(self) -> int:
        return self.ranks // self.tp

    def slots_per_rank(self, n_routed: int) -> int:
        return math.ceil((n_routed + self.redundant) / self.ranks)


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def moe_hccl_buffer_bytes(dim: int, top_k: int, local_experts: int, tokens_per_rank: int,
                          ep: int) -> int:
    """HCCL_BUFFSIZE of the EP communicator, as the CANN MoeDistributeDispatch/Combine pair needs.

    dispatch window: local_experts * tokens * ep * Align512(Align32(2h) + 44)
    combine window:  top_k * tokens * Align512(2h); both doubled (send + receive), +1 MB,
    at least the 200 MB default (cann-recipes-infer executor/utils/hccl_utils.py). The
    communicator then holds 2 x HCCL_BUFFSIZE (CANN HCCL_BUFFSIZE docs).
    """
    dispatch = local_experts * tokens_per_rank * ep * _align(_align(2 * dim, 32) + 44, 512)
    combine = top_k * tokens_per_rank * _align(2 * dim, 512)
    mb = max(math.ceil((dispatch + combine) * 2 / MB) + 1, int(cal.fixed("hccl_default_buffer_mb")))
    return 2 * mb * MB


def weight_bytes_per_rank(stats, lay: Layout) -> Dict[str, int]:
    """Weights one rank holds, by role; routed experts as `slots_per_rank` per MoE layer."""
    out: Dict[str, int] = {}
    for g in stats.groups:
        if g.role == "expert":
            continue
        div = lay.tp if g.tp_split else lay.head_tp if g.role in ("embed", "head") else 1
        out[g.role] = out.get(g.role, 0) + g.nbytes(lay.scheme) // div
    layers = stats.n_moe_layers + stats.n_mtp_layers
    out["expert"] = lay.slots_per_rank(stats.n_routed) * stats.expert_bytes(lay.scheme) * layers
    return out


def activation_bytes(stats, tokens: int, lay: Layout) -> int:
    """Live activations of one step: fp32 mHC streams (x4 buffers), attention heads in bf16,
    and fp32 logits of the rank's vocab shard."""
    per_token = (4 * stats.hc_mult * stats.dim * 4 + 2 * stats.n_heads * 512 // lay.tp
                 + 4 * stats.vocab // lay.head_tp)
    return tokens * per_token


def rank_budget(stats, npu, lay: Layout, seqs: int, ctx: int, tokens: int,
                dispatch_tokens: int = 0) -> Dict[str, int]:
    """Bytes per rank for `seqs` sequences of `ctx` tokens and `tokens` tokens in flight.

    `dispatch_tokens` = 0: decode, the whole step goes through the windowed MoE dispatch/combine
    pair; > 0 caps the tokens of one call; < 0: prefill's AllToAllV ("normal" mode), which
    works through the default-size HCCL buffer."""
    w = weight_bytes_per_rank(stats, lay)
    kv = stats.kv_bytes_per_seq(ctx, lay.cache)["total"] * seqs
    moe_tokens = max(1, math.ceil(tokens / lay.tp))
    if dispatch_tokens:
        moe_tokens = min(moe_tokens, dispatch_tokens)
    ep_buffer = moe_hccl_buffer_bytes(stats.dim, stats.top_k, lay.slots_per_rank(stats.n_routed),
                                      moe_tokens, lay.ranks) if dispatch_tokens >= 0 else \
        2 * int(cal.fixed("hccl_default_buffer_mb")) * MB
    comm = ep_buffer + (2 if lay.tp > 1 else 1) * 2 * int(cal.fixed("hccl_default_buffer_mb")) * MB
    out = {"weights": sum(w.values()), "kv_cache": kv,
           "activations": activation_bytes(stats, tokens, lay),
           "comm_buffers": comm,
           "runtime_reserved": int(cal.fixed("runtime_reserved_gib") * 2 ** 30)}
    out["total"] = sum(out.values())
    out["capacity"] = npu.hbm_bytes_per_rank
    out["free"] = out["capacity"] - out["total"]
    out["weights_by_role"] = w
    out["hccl_buffsize_mb"] = ep_buffer // (2 * MB)     # HCCL_BUFFSIZE of the EP communicator
    return out
