"""numpy reference of kv_pack_fp8: write entries into MODEL1 cache slots (V4_SPEC 8, 9).

Each entry is encoded exactly as `pack_kv_fp8` encodes a row (e4m3 + ue8m0 per 64-dim tile, bf16 RoPE
part, zero pad byte); slot s is block s // P, position s % P; -1 skips; a repeated slot keeps the last entry.
"""
from __future__ import annotations

import numpy as np

from custom_ops.sparse_fp8_decode.reference import DATA_BYTES, HEAD_DIM, SCALE_BYTES, pack_kv_fp8, page_block_size_of


def kv_pack_fp8_reference(cache, entries, slots) -> np.ndarray:
    """cache uint8 [blocks, P*584], entries [N, 512], slots [N] -> a new cache with the slots written."""
    cache = np.asarray(cache)
    p = page_block_size_of(cache)
    entries = np.asarray(entries, np.float32).reshape(-1, HEAD_DIM)
    out = cache.copy()
    rows = pack_kv_fp8(entries, page_block_size=max(1, entries.shape[0]))       # one block holding all N
    n = entries.shape[0]
    data = rows[0, :n * DATA_BYTES].reshape(n, DATA_BYTES) if n else None
    scales = rows[0, n * DATA_BYTES:].reshape(n, SCALE_BYTES) if n else None
    for i, s in enumerate(np.asarray(slots).reshape(-1)):
        if s < 0:
            continue
        blk, pos = divmod(int(s), p)
        out[blk, pos * DATA_BYTES:(pos + 1) * DATA_BYTES] = data[i]
        out[blk, p * DATA_BYTES + pos * SCALE_BYTES:p * DATA_BYTES + (pos + 1) * SCALE_BYTES] = scales[i]
    return out

