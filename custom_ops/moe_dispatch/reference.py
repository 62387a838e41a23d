"""numpy references of moe_dispatch / moe_combine (V4_SPEC 5 and 9) and the official-style expert loop."""
from __future__ import annotations

import numpy as np

from custom_ops.sparse_fp8_decode.reference import quantize_e4m3_tiles


def dispatch_reference(x, topk_idx, topk_weights, num_experts: int, ep_size: int = 1, fp8: bool = False) -> dict:
    """Expert-major rows, stable in (token, slot) order; index -1 = dropped.  Returns the layout as a dict."""
    x = np.asarray(x)
    t, d = x.shape
    k = topk_idx.shape[1]
    flat = np.asarray(topk_idx).reshape(-1)
    key = np.where(flat >= 0, flat, num_experts)
    order = np.argsort(key, kind="stable")
    valid = int((flat >= 0).sum())
    rows = order[:valid]                                         # flat route index of each used row
    slot_of = np.full(t * k, -1, np.int32)
    slot_of[rows] = np.arange(valid, dtype=np.int32)
    counts = np.bincount(flat[flat >= 0], minlength=num_experts).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    per = num_experts // ep_size
    rank_counts = counts.reshape(ep_size, per).sum(axis=1).astype(np.int32)
    ranks = np.where(np.asarray(topk_idx) >= 0, np.asarray(topk_idx) // per, -1)
    rank_tokens = np.array([int((ranks == r).any(axis=1).sum()) for r in range(ep_size)], np.int32)
    n, s = t * k, -(-d // 128)
    src = x[rows // k]
    if fp8:
        codes, exps = quantize_e4m3_tiles(src.astype(np.float32), 128)
        recv_x = np.zeros((n, d), np.uint8)
        recv_x[:valid] = codes
        recv_scale = np.full((n, s), 127, np.uint8)
        recv_scale[:valid] = exps
    else:
        recv_x = np.zeros((n, d), x.dtype)
        recv_x[:valid] = src
        recv_scale = np.full((n, s), 127, np.uint8)
    recv_w = np.zeros(n, np.float32)
    recv_w[:valid] = np.asarray(topk_weights, np.float32).reshape(-1)[rows]
    recv_tok = np.full(n, -1, np.int32)
    recv_tok[:valid] = rows // k
    return dict(x=recv_x, scales=recv_scale, weights=recv_w, token=recv_tok, slot_of=slot_of.reshape(t, k),
                expert_counts=counts, expert_offsets=offsets, rank_counts=rank_counts, rank_token_counts=rank_tokens)


def combine_reference(expert_out, slot_of, topk_weights) -> np.ndarray:
    """y[t] = sum_j w[t, j] expert_out[slot_of[t, j]] (fp32, j in order, slot -1 skipped)."""
    eo = np.asarray(expert_out).astype(np.float32)
    t, k = slot_of.shape
    y = np.zeros((t, eo.shape[1]), np.float32)
    for j in range(k):
        ok = slot_of[:, j] >= 0
        y[ok] += np.asarray(topk_weights, np.float32)[ok, j, None] * eo[slot_of[ok, j]]
    return y


def expert_loop_reference(x, topk_idx, topk_weights, num_experts: int, expert=lambda e, h: h) -> np.ndarray:
    """The official reference's MoE loop shape: for each expert, find its tokens, run it, add weighted."""
    x = np.asarray(x, np.float32)
    y = np.zeros_like(x)
    counts = np.bincount(topk_idx[topk_idx >= 0].reshape(-1), minlength=num_experts)
    for e in range(num_experts):
        if counts[e] == 0:
            continue
        idx, top = np.where(topk_idx == e)
        y[idx] += expert(e, x[idx]) * topk_weights[idx, top, None]
    return y
