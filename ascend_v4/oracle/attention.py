"""Attention sublayer for all positions at once: window + compressed entries (V4_SPEC section 4).

Query t attends to raw tokens max(0, t - window_size + 1)..t and to compressed entries
j < (t + 1) // ratio (all of them for ratio 128, the indexer's top-k for ratio 4), which is what
the reference computes for the last position of any prefix, prefill or decode alike.
"""
from __future__ import annotations

import numpy as np

from .compressor import compressor_entries, indexer_topk, visible_mask
from .numerics import kv_cache_round, mxfp8_quant_dequant, rms_norm, rope, real
from .weights import get, linear


def block_prefix(cfg, layer_id: int) -> str:
    """'layers.{i}.' for main blocks, 'mtp.{k}.' for MTP block k (layer id n_layers + k)."""
    if layer_id < cfg.n_layers:
        return f"layers.{layer_id}."
    return f"mtp.{layer_id - cfg.n_layers}."


def window_mask(s: int, window: int) -> np.ndarray:
    """[s, s] bool: raw token j visible to query t iff t - window < j <= t."""
    t, j = np.arange(s)[:, None], np.arange(s)[None, :]
    return (j <= t) & (j > t - window)


def sparse_attention(q, keys, mask, sink, scale) -> np.ndarray:
    """q [b, s, h, D], keys (= values) [b, k, D], mask [b, s, k] bool, sink [h] -> o [b, s, h, D].

    o = sum_e exp(z_e - m) v_e / (sum_e exp(z_e - m) + exp(sink - m)), z = (q . k) * scale.
    """
    z = np.einsum("bshd,bkd->bshk", q.astype(np.float64), keys.astype(np.float64)) * scale
    z = np.where(mask[:, :, None, :], z, -np.inf)
    sink = np.asarray(sink, np.float64)[None, None, :]
    m = np.maximum(z.max(-1), sink)                                   # [b, s, h]
    p = np.exp(z - m[..., None])
    den = p.sum(-1) + np.exp(sink - m)
    return (np.einsum("bshk,bkd->bshd", p, keys.astype(np.float64)) / den[..., None]).astype(real())


def attention_layer(cfg, W, layer_id: int, x: np.ndarray) -> np.ndarray:
    """Attention sublayer F: x [b, s, dim] (after attn_norm) -> [b, s, dim]; positions 0..s-1."""
    p = block_prefix(cfg, layer_id) + "attn."
    ratio = cfg.compress_ratios[layer_id]
    b, s, _ = x.shape
    nh, hd, rd, eps = cfg.n_heads, cfg.head_dim, cfg.rope_head_dim, cfg.norm_eps
    pos = np.arange(s)
    comp = ratio > 0
    # q: low-rank path, per-head weightless norm, RoPE
    qr = rms_norm(linear(x, W, p + "wq_a"), get(W, p + "q_norm.weight"), eps)       # [b, s, q_lora]
    q = rms_norm(linear(qr, W, p + "wq_b").reshape(b, s, nh, hd), None, eps)
    q = rope(q, pos, cfg, comp)
    # one shared KV head: norm, RoPE, the KV cache's rounding (release: fp8 of the non-rope dims)
    kv = rms_norm(linear(x, W, p + "wkv"), get(W, p + "kv_norm.weight"), eps)      # [b, s, hd]
    kv = kv_cache_round(rope(kv, pos, cfg, comp), rd, W.get("__kv_cache__", "fp8"))
    keys = kv
    mask = np.broadcast_to(window_mask(s, cfg.window_size), (b, s, s))
    if comp:
        ent = compressor_entries(cfg, W, p + "compressor", x, ratio, hd, rotate=False)
        if ratio == 4:
            sel, _ = indexer_topk(cfg, W, p + "indexer", x, qr)
        else:
            sel = np.broadcast_to(visible_mask(s, ent.shape[1], ratio), (b, s, ent.shape[1]))
        keys = np.concatenate([kv, ent], 1)
        mask = np.concatenate([mask, sel], -1)
    o = sparse_attention(q, keys, mask, get(W, p + "attn_sink"), hd ** -0.5)
    o = rope(o, pos, cfg, comp, inverse=True)
    # grouped low-rank output: wo_a [G*R, H*D/G] viewed as [G, R, H*D/G]; no activation quant
    # (a converted MXFP8 wo_a: each group's input in MXFP8 1x32 blocks)
    g, r = cfg.o_groups, cfg.o_lora_rank
    wo_a = get(W, p + "wo_a.weight").reshape(g, r, -1)
    o = o.reshape(b, s, g, -1)
    if W.get("__formats__", {}).get(p + "wo_a.weight") == "mxfp8":
        o = mxfp8_quant_dequant(o)
    o = np.einsum("bsgd,grd->bsgr", o, wo_a).reshape(b, s, g * r)
    return linear(o.astype(real()), W, p + "wo_b")
