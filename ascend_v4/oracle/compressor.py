"""KV compressor and lightning indexer, all positions at once (V4_SPEC section 4).

Compressed entry j summarises raw tokens [j*m, (j+1)*m) (plus, with overlap, the previous
block) and is visible to query t iff j < (t + 1) // m: the entries of a prefix of length
t + 1 are exactly the reference's decode-time entries at step t.
"""
from __future__ import annotations

import numpy as np

from .numerics import hadamard, index_round, kv_cache_round, rms_norm, rope, real
from .weights import get, linear


def pool_blocks(kv: np.ndarray, g: np.ndarray, ape: np.ndarray, ratio: int, head_dim: int) -> np.ndarray:
    """Softmax pooling of complete blocks of `ratio` tokens, per channel.

    kv, g: [b, s, c*head_dim] (c = 2 if overlap else 1); ape [ratio, c*head_dim] is added to g by
    position within the block. Overlap (c = 2): entry i pools the first head_dim channels of block
    i-1's tokens and the last head_dim channels of block i's tokens; block 0's predecessor slots
    hold -inf scores. Returns [b, s // ratio, head_dim] float32.
    """
    b, s, width = kv.shape
    c = width // head_dim
    nb = s // ratio
    kv = kv[:, :nb * ratio].reshape(b, nb, ratio, width).astype(np.float64)
    g = g[:, :nb * ratio].reshape(b, nb, ratio, width).astype(np.float64) + ape
    if c == 2:
        d = head_dim
        kv_s = np.zeros((b, nb, 2 * ratio, d))
        g_s = np.full((b, nb, 2 * ratio, d), -np.inf)
        kv_s[:, :, ratio:], g_s[:, :, ratio:] = kv[..., d:], g[..., d:]
        kv_s[:, 1:, :ratio], g_s[:, 1:, :ratio] = kv[:, :-1, :, :d], g[:, :-1, :, :d]
        kv, g = kv_s, g_s
    p = np.exp(g - g.max(2, keepdims=True))
    p /= p.sum(2, keepdims=True)
    return (p * kv).sum(2).astype(real())


def compressor_entries(cfg, W, prefix: str, x: np.ndarray, ratio: int, head_dim: int,
                       rotate: bool) -> np.ndarray:
    """Compressed entries of x [b, s, dim] -> [b, s // ratio, head_dim].

    prefix: e.g. 'layers.1.attn.compressor' or 'layers.1.attn.indexer.compressor'. wkv/wgate are
    applied in fp32 without activation quant. Then RMSNorm (prefix.norm), RoPE of the last
    rope_head_dim dims at position j*ratio (compressed/YaRN frequencies), then either
    rotate=False: the KV cache's rounding (W['__kv_cache__'], release: fp8 q-dq in tiles of 64 of
    the first head_dim - rope_head_dim dims), or rotate=True (indexer): Hadamard rotation of the whole
    vector and the indexer cache's rounding (W['__indexer_cache__'], release: FP4 q-dq per 32).
    """
    x = np.asarray(x, real())
    kv = np.matmul(x, get(W, prefix + ".wkv.weight").T)
    g = np.matmul(x, get(W, prefix + ".wgate.weight").T)
    ent = pool_blocks(kv, g, get(W, prefix + ".ape"), ratio, head_dim)
    ent = rms_norm(ent, get(W, prefix + ".norm.weight"), cfg.norm_eps)
    ent = rope(ent, np.arange(ent.shape[1]) * ratio, cfg, compressed=True)
    rd = cfg.rope_head_dim
    if rotate:
        return index_round(hadamard(ent), W.get("__indexer_cache__", "fp4"))
    return kv_cache_round(ent, rd, W.get("__kv_cache__", "fp8"))


def visible_mask(s: int, n_entries: int, ratio: int) -> np.ndarray:
    """[s, n_entries] bool: entry j visible to query t iff j < (t + 1) // ratio."""
    return np.arange(n_entries)[None, :] < (np.arange(1, s + 1) // ratio)[:, None]


def indexer_topk(cfg, W, prefix, x: np.ndarray, qr: np.ndarray):
    """Lightning indexer of a ratio-4 layer. prefix: 'layers.{i}.attn.indexer' or the layer id.

    x [b, s, dim] (attention input), qr [b, s, q_lora_rank] (normed low-rank query).
    Returns (selected [b, s, n] bool, score [b, s, n] float32 with -inf where not visible),
    n = s // 4. Each query keeps its top min(index_topk, visible) visible entries; ties are
    broken by a stable descending sort (the lower entry index wins).
    """
    if not isinstance(prefix, str):
        i = int(prefix)
        prefix = (f"layers.{i}" if i < cfg.n_layers else f"mtp.{i - cfg.n_layers}") + ".attn.indexer"
    ratio, nh, hd = 4, cfg.index_n_heads, cfg.index_head_dim
    b, s, _ = x.shape
    q = linear(qr, W, prefix + ".wq_b").reshape(b, s, nh, hd)
    q = rope(q, np.arange(s), cfg, compressed=True)
    q = index_round(hadamard(q), W.get("__indexer_cache__", "fp4"))   # per token-head
    k = compressor_entries(cfg, W, prefix + ".compressor", x, ratio, hd, rotate=True)  # [b, n, hd]
    w = linear(x, W, prefix + ".weights_proj") * (hd ** -0.5 * nh ** -0.5)          # [b, s, nh]
    dots = np.maximum(np.einsum("bshd,bnd->bshn", q, k), 0.0)
    score = np.einsum("bsh,bshn->bsn", w, dots).astype(real())
    vis = visible_mask(s, k.shape[1], ratio)
    score = np.where(vis[None], score, -np.inf).astype(real())
    order = np.argsort(-score, axis=-1, kind="stable")
    keep = np.minimum(cfg.index_topk, vis.sum(-1))                                # [s]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k.shape[1])[None, None, :].repeat(s, 1).repeat(b, 0), -1)
    selected = rank < keep[None, :, None]
    return selected, score
