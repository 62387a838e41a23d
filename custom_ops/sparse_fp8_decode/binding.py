"""numpy entry points of sparse_fp8_decode (CPU twin) and the MODEL1 cache packer."""
from __future__ import annotations

import numpy as np

from custom_ops.runtime.runner import call_aot
from custom_ops.sparse_fp8_decode.reference import HEAD_DIM, TOKEN_BYTES, page_block_size_of

TWIN, FUNC = "sparse_fp8_decode", "SparseFp8DecodeAot"
DEQUANT_FUNC = "SparseFp8DecodeDequantAot"
NO_EXTRA_CACHE = np.zeros((1, TOKEN_BYTES), np.uint8)   # one block of one empty slot


def _check_indices(name: str, idx: np.ndarray, batch: int, cache: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[0] != batch or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"sparse_fp8_decode: {name} must be integer [B={batch}, K], got {idx.dtype} {idx.shape}")
    capacity = cache.shape[0] * page_block_size_of(cache)
    bad = (idx < -1) | (idx >= capacity)
    if bad.any():
        raise ValueError(f"sparse_fp8_decode: {name} holds {int(idx[bad][0])}, outside -1..{capacity - 1} "
                         f"(the cache has {capacity} token slots)")
    return idx.astype(np.int32)


def sparse_fp8_decode(q, cache, indices, attn_sink, softmax_scale: float, extra_cache=None, extra_indices=None):
    """q [B, H, 512]; cache uint8 MODEL1 [blocks, P*584]; indices [B, K] (-1 = skip); attn_sink [H].

    Returns (out [B, H, 512] fp32, lse [B, H] fp32); lse = log(sum_e exp(score_e) + exp(sink_h)).
    extra_cache / extra_indices: a second (compressed) cache attended together with the first.
    """
    q = np.asarray(q, np.float32)
    if q.ndim != 3 or q.shape[2] != HEAD_DIM:
        raise ValueError(f"sparse_fp8_decode: q must be [B, H, {HEAD_DIM}], got {q.shape}")
    b, h, _ = q.shape
    cache = np.asarray(cache)
    page_block_size_of(cache)
    indices = _check_indices("indices", indices, b, cache)
    if (extra_cache is None) != (extra_indices is None):
        raise ValueError("sparse_fp8_decode: pass extra_cache and extra_indices together")
    if extra_cache is None:
        extra_cache, extra_indices = NO_EXTRA_CACHE, np.full((b, 1), -1, np.int32)
    extra_cache = np.asarray(extra_cache)
    page_block_size_of(extra_cache)
    extra_indices = _check_indices("extra_indices", extra_indices, b, extra_cache)
    sink = np.asarray(attn_sink, np.float32)
    if sink.shape != (h,):
        raise ValueError(f"sparse_fp8_decode: attn_sink must be [H={h}], got {sink.shape}")
    out = np.empty((b, h, HEAD_DIM), np.float32)
    lse = np.empty((b, h), np.float32)
    call_aot(TWIN, FUNC, [q, cache, indices, extra_cache, extra_indices, sink,
                          np.array([softmax_scale], np.float32)], [out, lse])
    return out, lse


def dequantize_kv_fp8(cache) -> np.ndarray:
    """MODEL1 cache uint8 [blocks, P*584] -> fp32 [blocks * P, 512] through the kernel's own dequantisation
    routine (a test kernel of the twin): the vector fp8 Cast on SoCs that have it, else the software
    e4m3 decode. Bit-identical to `reference.unpack_kv_fp8`."""
    cache = np.ascontiguousarray(cache)
    page = page_block_size_of(cache)
    out = np.empty((cache.shape[0] * page, HEAD_DIM), np.float32)
    call_aot(TWIN, DEQUANT_FUNC, [cache], [out])
    return out
