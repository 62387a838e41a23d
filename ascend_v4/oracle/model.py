"""Whole model: embed -> widen -> blocks with mHC -> HcHead -> norm -> head; and the MTP block.

Logits are returned for EVERY position (the reference returns the last one only); position t
depends on tokens <= t only, so logits[:, t] equal the reference's decode logits at step t.
MTP (reference MTPBlock): e = enorm(embed(ids)), x = hnorm(H) per stream,
X = e_proj(e)[:, :, None] + h_proj(x), one block (layer id n_layers), its own hc_head_* and its
OWN `mtp.0.norm` (the reference passes MTPBlock.norm to the shared head; V4_SPEC 6 says "shared
final norm" - the reference wins), then the shared `head`.
"""
from __future__ import annotations

import numpy as np

from .attention import attention_layer, block_prefix
from .engram import engram_layer
from .hc import hc_head, hc_post, hc_pre
from .moe import moe_layer
from .numerics import rms_norm, real
from .weights import get, linear


def block_forward(cfg, W, layer_id: int, X: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One block with its two mHC-wrapped sublayers: X [b, s, n, dim] -> [b, s, n, dim]."""
    p = block_prefix(cfg, layer_id)
    if layer_id in cfg.engram_layer_ids and layer_id < cfg.n_layers:   # before attention (V4_SPEC 7)
        X = engram_layer(cfg, W, layer_id, X, ids)
    u, post, comb = hc_pre(X, get(W, p + "hc_attn_fn"), get(W, p + "hc_attn_scale"),
                           get(W, p + "hc_attn_base"), cfg)
    u = rms_norm(u, get(W, p + "attn_norm.weight"), cfg.norm_eps)
    X = hc_post(attention_layer(cfg, W, layer_id, u), X, post, comb)
    u, post, comb = hc_pre(X, get(W, p + "hc_ffn_fn"), get(W, p + "hc_ffn_scale"),
                           get(W, p + "hc_ffn_base"), cfg)
    u = rms_norm(u, get(W, p + "ffn_norm.weight"), cfg.norm_eps)
    return hc_post(moe_layer(cfg, W, layer_id, u, ids), X, post, comb)


def _check_ids(cfg, ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be an integer array [batch, seq], got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError(f"ids must lie in [0, vocab_size={cfg.vocab_size})")
    return ids.astype(np.int64)


def _logits(cfg, W, X, prefix: str, norm_name: str) -> np.ndarray:
    y = hc_head(X, get(W, prefix + "hc_head_fn"), get(W, prefix + "hc_head_scale"),
                get(W, prefix + "hc_head_base"), cfg)
    y = rms_norm(y, get(W, norm_name), cfg.norm_eps)
    return np.matmul(y, get(W, "head.weight").T).astype(real())          # fp32, no act quant


def forward_all(cfg, W, ids):
    """ids int [b, s] -> (logits [b, s, vocab] float32, H [b, s, hc_mult, dim] float32).

    H is the widened residual stream after the last block (the input of HcHead and of MTP).
    """
    logits, streams = forward_layers(cfg, W, ids)
    return logits, streams[-1]


def forward_layers(cfg, W, ids):
    """ids [b, s] -> (logits [b, s, vocab], [X_k [b, s, hc_mult, dim] after block k for every k])."""
    ids = _check_ids(cfg, ids)
    h = get(W, "embed.weight")[ids]
    X = np.repeat(h[:, :, None, :], cfg.hc_mult, axis=2).astype(real())
    streams = []
    for layer_id in range(cfg.n_layers):
        X = block_forward(cfg, W, layer_id, X, ids)
        streams.append(X)
    return _logits(cfg, W, X, "", "norm.weight"), streams


def mtp_forward_all(cfg, W, H, ids, k: int = 0) -> np.ndarray:
    """MTP block k on H [b, s, hc_mult, dim] and ids [b, s] -> logits [b, s, vocab] float32."""
    ids = _check_ids(cfg, ids)
    H = np.asarray(H, real())
    if H.shape != ids.shape + (cfg.hc_mult, cfg.dim):
        raise ValueError(f"H must have shape {ids.shape + (cfg.hc_mult, cfg.dim)}, got {H.shape}")
    p = f"mtp.{k}."
    e = rms_norm(get(W, "embed.weight")[ids], get(W, p + "enorm.weight"), cfg.norm_eps)
    x = rms_norm(H, get(W, p + "hnorm.weight"), cfg.norm_eps)
    X = linear(e, W, p + "e_proj")[:, :, None, :] + linear(x, W, p + "h_proj")
    X = block_forward(cfg, W, cfg.n_layers + k, X.astype(real()), ids)
    return _logits(cfg, W, X, p, p + "norm.weight")
