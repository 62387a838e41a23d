"""numpy reference of sparse_fp8_decode and the MODEL1 FP8 KV-cache packing (V4_SPEC sections 4, 8, 9).

Cache layout (FlashMLA MODEL1): per token 448 e4m3 bytes (dims 0..447), 64 bf16 RoPE values (dims 448..511,
128 bytes), 7 ue8m0 scale bytes (one per 64-dim tile of the e4m3 part) and 1 pad byte = 584 bytes.  In a
page block of P tokens all P data rows (576 bytes) come first, then all P scale groups (8 bytes).
The cache array is uint8 [num_blocks, P * 584]; token index i lives in block i // P, slot i % P.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

HEAD_DIM, NOPE, ROPE, TILE = 512, 448, 64, 64
DATA_BYTES, SCALE_BYTES = NOPE + 2 * ROPE, 8          # 576, 8
TOKEN_BYTES = DATA_BYTES + SCALE_BYTES                 # 584
BF16_TOKEN_BYTES = 2 * HEAD_DIM                        # 1024


def ceil_log2(x: np.ndarray) -> np.ndarray:
    """Exact ceil(log2(x)) for positive normal floats (from the exponent and mantissa, no rounding)."""
    m, e = np.frexp(np.asarray(x, np.float32))            # x = m 2^e, m in [0.5, 1)
    return np.where(m == 0.5, e - 1, e).astype(np.int32)


def quantize_e4m3_tiles(x: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """x [N, D] -> (e4m3 codes uint8 [N, D], ue8m0 exponents uint8 [N, ceil(D / tile)]); V4_SPEC 9.

    amax = max(|x|, 1e-4) per tile, s = 2^ceil(log2(amax / 448)), q = clip(x / s, +-448) in e4m3 (RNE).
    """
    n, d = x.shape
    pad = -d % tile
    t = np.pad(x.astype(np.float32), ((0, 0), (0, pad))).reshape(n, (d + pad) // tile, tile)
    amax = np.maximum(np.abs(t).max(axis=-1), np.float32(1e-4))
    exp = ceil_log2(amax / np.float32(448))
    scale = np.ldexp(np.float32(1), exp).astype(np.float32)
    q = np.clip(t / scale[..., None], -448, 448).astype(ml_dtypes.float8_e4m3fn)
    return q.view(np.uint8).reshape(n, d + pad)[:, :d].copy(), (exp + 127).astype(np.uint8)


def pack_kv_fp8(kv, page_block_size: int = 64) -> np.ndarray:
    """kv [N, 512] fp32/bf16 -> MODEL1 cache uint8 [ceil(N / P), P * 584] (missing slots are zero)."""
    kv = np.asarray(kv)
    if kv.ndim != 2 or kv.shape[1] != HEAD_DIM:
        raise ValueError(f"pack_kv_fp8: kv must be [N, {HEAD_DIM}], got {kv.shape}")
    if page_block_size < 1:
        raise ValueError(f"pack_kv_fp8: page_block_size must be >= 1, got {page_block_size}")
    kv = kv.astype(np.float32)
    n, p = kv.shape[0], page_block_size
    blocks = max(1, -(-n // p))
    codes, exps = quantize_e4m3_tiles(kv[:, :NOPE], TILE)
    data = np.zeros((blocks * p, DATA_BYTES), np.uint8)
    scales = np.zeros((blocks * p, SCALE_BYTES), np.uint8)
    data[:n, :NOPE] = codes
    data[:n, NOPE:] = kv[:, NOPE:].astype(ml_dtypes.bfloat16).view(np.uint8).reshape(n, 2 * ROPE)
    scales[:n, :NOPE // TILE] = exps
    cache = np.concatenate([data.reshape(blocks, p * DATA_BYTES), scales.reshape(blocks, p * SCALE_BYTES)], axis=1)
    return np.ascontiguousarray(cache)


def ue8m0_to_float(codes) -> np.ndarray:
    """ue8m0 scale bytes -> fp32 2^(code - 127); 0 is 2^-127 (an fp32 subnormal), 255 is NaN (e8m0's NaN)."""
    codes = np.asarray(codes)
    with np.errstate(over="ignore"):                     # 255 -> inf here, NaN below
        s = np.ldexp(np.float32(1), codes.astype(np.int32) - 127).astype(np.float32)
    return np.where(codes == 255, np.float32(np.nan), s).astype(np.float32)


def decode_e4m3(codes) -> np.ndarray:
    """e4m3fn bytes -> fp32 (ml_dtypes: 0x7f / 0xff are NaN, sign kept; subnormals m * 2^-9)."""
    return np.ascontiguousarray(codes, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)


def page_block_size_of(cache: np.ndarray) -> int:
    if cache.ndim != 2 or cache.dtype != np.uint8 or cache.shape[1] % TOKEN_BYTES:
        raise ValueError(f"cache must be uint8 [num_blocks, P * {TOKEN_BYTES}], got {cache.dtype} {cache.shape}")
    return cache.shape[1] // TOKEN_BYTES


def unpack_kv_fp8(cache: np.ndarray) -> np.ndarray:
    """MODEL1 cache -> dequantised entries fp32 [num_blocks * P, 512]."""
    p = page_block_size_of(cache)
    blocks = cache.shape[0]
    data = cache[:, :p * DATA_BYTES].reshape(blocks * p, DATA_BYTES)
    scales = cache[:, p * DATA_BYTES:].reshape(blocks * p, SCALE_BYTES)
    nope = decode_e4m3(data[:, :NOPE])
    s = ue8m0_to_float(scales[:, :NOPE // TILE])
    with np.errstate(over="ignore"):                     # +-inf past fp32 (not for the encoder's codes, see DESIGN)
        nope = (nope.reshape(-1, NOPE // TILE, TILE) * s[..., None]).reshape(-1, NOPE)
    rope = data[:, NOPE:].copy().view(ml_dtypes.bfloat16).astype(np.float32)
    return np.concatenate([nope, rope], axis=1)


def sparse_fp8_decode_reference(q, cache, indices, attn_sink, softmax_scale, extra_cache=None, extra_indices=None):
    """out [B, H, 512] fp32 and lse [B, H]; float64 math.

    score_e = (q_h . k_e) * softmax_scale over the selected entries (index -1 = skip) of both caches;
    out_h = sum_e exp(score_e) k_e / (sum_e exp(score_e) + exp(sink_h)); lse_h = log(that denominator).
    """
    q = np.asarray(q, np.float64)
    b_, h_, _ = q.shape
    sources = [(unpack_kv_fp8(cache).astype(np.float64), np.asarray(indices))]
    if extra_cache is not None:
        sources.append((unpack_kv_fp8(extra_cache).astype(np.float64), np.asarray(extra_indices)))
    sink = np.asarray(attn_sink, np.float64)
    out = np.zeros((b_, h_, HEAD_DIM), np.float64)
    lse = np.zeros((b_, h_), np.float64)
    for b in range(b_):
        k = np.concatenate([kv[idx[b][idx[b] >= 0]] for kv, idx in sources], axis=0)    # [E, 512]
        s = q[b] @ k.T * softmax_scale                                                  # [H, E]
        m = np.maximum(s.max(axis=1), sink) if k.shape[0] else sink
        p = np.exp(s - m[:, None])
        denom = p.sum(axis=1) + np.exp(sink - m)
        out[b] = (p @ k) / denom[:, None]
        lse[b] = m + np.log(denom)
    return out.astype(np.float32), lse.astype(np.float32)


def dense_attention_reference(q, kv, attn_sink, softmax_scale):
    """Dense fp32 attention over every entry kv [N, 512] (the benchmark's baseline): out [B, H, 512]."""
    q = np.asarray(q, np.float32)
    s = np.matmul(q, kv.T) * np.float32(softmax_scale)                 # [B, H, N] (BLAS)
    m = np.maximum(s.max(axis=-1), attn_sink[None, :])
    p = np.exp(s - m[..., None])
    denom = p.sum(axis=-1) + np.exp(attn_sink[None, :] - m)
    return np.matmul(p, kv) / denom[..., None]
