"""mHC: Sinkhorn split, hc_pre / hc_post around each sublayer, and HcHead (V4_SPEC section 3).

Follows the release (kernel.py hc_split_sinkhorn, model.py Block.hc_pre/hc_post,
ParallelHead.hc_head): the Sinkhorn loop ends on a column normalisation, and the residual mix
uses C transposed: X'_j = post_j f + sum_i C[i, j] X_i.
"""
from __future__ import annotations

import numpy as np

from .numerics import sigmoid, real


def sinkhorn(mixes: np.ndarray, scale, base, n: int, iters: int, eps: float):
    """mixes [..., (2+n)n], scale [3], base [(2+n)n] -> pre [..., n], post [..., n], comb [..., n, n]."""
    m = np.asarray(mixes, np.float64)
    scale = np.asarray(scale, np.float64)
    base = np.asarray(base, np.float64)
    pre = sigmoid(m[..., :n] * scale[0] + base[:n]) + eps
    post = 2 * sigmoid(m[..., n:2 * n] * scale[1] + base[n:2 * n])
    c = (m[..., 2 * n:] * scale[2] + base[2 * n:]).reshape(*m.shape[:-1], n, n)
    c = np.exp(c - c.max(-1, keepdims=True))
    c = c / c.sum(-1, keepdims=True) + eps                 # row softmax + eps
    c = c / (c.sum(-2, keepdims=True) + eps)               # columns
    for _ in range(iters - 1):
        c = c / (c.sum(-1, keepdims=True) + eps)           # rows
        c = c / (c.sum(-2, keepdims=True) + eps)           # columns (last)
    return pre.astype(real()), post.astype(real()), c.astype(real())


def _mixes(X: np.ndarray, fn, eps: float) -> np.ndarray:
    """X [b, s, n, d] -> (flatten(X) @ fn^T) * rsqrt(mean(x^2) + eps)   [b, s, rows of fn]."""
    x = X.reshape(*X.shape[:-2], -1).astype(real())
    rs = 1.0 / np.sqrt(np.mean(np.square(x, dtype=np.float64), -1, keepdims=True) + eps)
    return (np.matmul(x, np.asarray(fn, real()).T) * rs).astype(real())


def hc_pre(X: np.ndarray, fn, scale, base, cfg):
    """X [b, s, n, d] -> u [b, s, d] = sum_i pre_i X_i, post [b, s, n], comb [b, s, n, n]."""
    mixes = _mixes(X, fn, cfg.norm_eps)
    pre, post, comb = sinkhorn(mixes, scale, base, cfg.hc_mult, cfg.hc_sinkhorn_iters, cfg.hc_eps)
    u = np.einsum("bsn,bsnd->bsd", pre, X.astype(real()))
    return u.astype(real()), post, comb


def hc_post(f: np.ndarray, X: np.ndarray, post, comb) -> np.ndarray:
    """f [b, s, d], X [b, s, n, d] -> X' [b, s, n, d], X'_j = post_j f + sum_i comb[i, j] X_i."""
    y = post[..., :, None] * f[:, :, None, :] + np.einsum("bsij,bsid->bsjd", comb, X)
    return y.astype(real())


def hc_head(X: np.ndarray, fn, scale, base, cfg) -> np.ndarray:
    """X [b, s, n, d] -> y [b, s, d] = sum_i (sigmoid(mix_i scale + base_i) + hc_eps) X_i."""
    mixes = _mixes(X, fn, cfg.norm_eps)
    w = sigmoid(mixes * np.asarray(scale, real())[0] + np.asarray(base, real())) + cfg.hc_eps
    return np.einsum("bsn,bsnd->bsd", w.astype(real()), X.astype(real())).astype(real())
