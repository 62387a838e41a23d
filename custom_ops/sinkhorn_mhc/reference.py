"""numpy reference of sinkhorn_mhc, written from V4_SPEC section 3 (fp32 like the kernel)."""
from __future__ import annotations

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-z))


def sinkhorn_mhc_reference(mixes, hc_scale, hc_base, hc_mult: int = 4, iters: int = 20, eps: float = 1e-6):
    """mixes [T, (2+n)n] -> pre [T, n], post [T, n], comb [T, n, n]; ends on a column normalisation."""
    n = hc_mult
    mixes = np.asarray(mixes, np.float32)
    s = np.asarray(hc_scale, np.float32)
    b = np.asarray(hc_base, np.float32)
    e = np.float32(eps)
    pre = _sigmoid(mixes[:, :n] * s[0] + b[:n]) + e
    post = np.float32(2) * _sigmoid(mixes[:, n:2 * n] * s[1] + b[n:2 * n])
    c = (mixes[:, 2 * n:] * s[2] + b[2 * n:]).reshape(-1, n, n)
    c = np.exp(c - c.max(axis=-1, keepdims=True))
    c = c / c.sum(axis=-1, keepdims=True) + e
    c = c / (c.sum(axis=-2, keepdims=True) + e)
    for _ in range(iters - 1):
        c = c / (c.sum(axis=-1, keepdims=True) + e)
        c = c / (c.sum(axis=-2, keepdims=True) + e)
    return pre.astype(np.float32), post.astype(np.float32), c.astype(np.float32)
