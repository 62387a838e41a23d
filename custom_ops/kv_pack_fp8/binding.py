"""numpy entry point of kv_pack_fp8 (CPU twin)."""
from __future__ import annotations

import numpy as np

from custom_ops.runtime.runner import call_aot
from custom_ops.sparse_fp8_decode.reference import HEAD_DIM, page_block_size_of

TWIN, FUNC = "kv_pack_fp8", "KvPackFp8Aot"


def kv_pack_fp8(cache, entries, slots) -> np.ndarray:
    """cache uint8 MODEL1 [blocks, P*584], entries [N, 512] f32, slots [N] int (-1 = skip).

    Returns a new cache with entry i packed into slot slots[i] (block s // P, position s % P).
    """
    cache = np.asarray(cache)
    p = page_block_size_of(cache)
    if cache.shape[0] < 1:
        raise ValueError("kv_pack_fp8: the cache must hold at least one page block")
    entries = np.asarray(entries, np.float32)
    if entries.ndim != 2 or entries.shape[1] != HEAD_DIM:
        raise ValueError(f"kv_pack_fp8: entries must be [N, {HEAD_DIM}], got {entries.shape}")
    slots = np.asarray(slots)
    if slots.shape != (entries.shape[0],) or not np.issubdtype(slots.dtype, np.integer):
        raise ValueError(f"kv_pack_fp8: slots must be integer [N={entries.shape[0]}], got {slots.dtype} {slots.shape}")
    capacity = cache.shape[0] * p
    bad = (slots < -1) | (slots >= capacity)
    if bad.any():
        raise ValueError(f"kv_pack_fp8: slots holds {int(slots[bad][0])}, outside -1..{capacity - 1} "
                         f"(the cache has {capacity} token slots)")
    if not np.isfinite(entries).all():
        raise ValueError("kv_pack_fp8: entries must be finite")
    out = np.empty_like(cache)
    call_aot(TWIN, FUNC, [cache, entries, slots.astype(np.int32)], [out])
    return out
