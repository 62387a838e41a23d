"""MoE sublayer: gate (score or hash routing), clamped SwiGLU routed experts, shared expert (V4_SPEC 5)."""
from __future__ import annotations

import numpy as np

from .attention import block_prefix
from .numerics import sigmoid, silu, softmax, real
from .weights import get, linear


def gate(cfg, W, layer_id: int, x: np.ndarray, ids: np.ndarray):
    """x [T, dim] (fp32 math, no activation quant), ids [T] -> weights [T, k], indices [T, k].

    Hash layers (layer_id < n_hash_layers) take indices from gate.tid2eid[ids]; others take the
    top-k of score + bias (stable descending order: the lower expert index wins a tie). Weights
    are the unbiased scores, renormalised (not for softmax) and times route_scale.
    """
    p = block_prefix(cfg, layer_id) + "ffn.gate."
    z = np.matmul(x.astype(real()), get(W, p + "weight").T).astype(np.float64)
    if cfg.score_func == "softmax":
        scores = softmax(z, -1).astype(np.float64)
    elif cfg.score_func == "sigmoid":
        scores = sigmoid(z).astype(np.float64)
    else:  # sqrtsoftplus
        scores = np.sqrt(np.logaddexp(0.0, z))
    if layer_id < cfg.n_hash_layers:
        idx = np.asarray(get(W, p + "tid2eid"))[ids]
    else:
        sel = scores + np.asarray(get(W, p + "bias"), np.float64)
        idx = np.argsort(-sel, axis=-1, kind="stable")[:, :cfg.n_activated_experts]
    w = np.take_along_axis(scores, idx, -1)
    if cfg.score_func != "softmax":
        w = w / w.sum(-1, keepdims=True)
    return (w * cfg.route_scale).astype(real()), idx.astype(np.int64)


def expert(x: np.ndarray, W, prefix: str, limit: float, weight=None) -> np.ndarray:
    """w2(weight * silu(min(x@w1, L)) * clamp(x@w3, -L, L)); limit 0 = no clamp. x [T, dim].

    The routing weight multiplies the hidden activation BEFORE w2 (as the reference does),
    which matters because w2's input is fp8 quant-dequantised when w2 is a quantised weight.
    """
    h = linear(x, W, prefix + ".w1")
    u = linear(x, W, prefix + ".w3")
    if limit > 0:
        u = np.clip(u, -limit, limit)
        h = np.minimum(h, limit)
    a = silu(h) * u
    if weight is not None:
        a = weight * a
    return linear(a.astype(real()), W, prefix + ".w2")


def moe_layer(cfg, W, layer_id: int, x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """MoE sublayer F: x [b, s, dim] (after ffn_norm), ids [b, s] -> [b, s, dim] (fp32 sum)."""
    p = block_prefix(cfg, layer_id) + "ffn."
    shape = x.shape
    xf = x.reshape(-1, shape[-1]).astype(real())
    weights, idx = gate(cfg, W, layer_id, xf, np.asarray(ids).reshape(-1))
    y = np.zeros_like(xf)
    for e in np.unique(idx):
        rows, slot = np.nonzero(idx == e)
        y[rows] += expert(xf[rows], W, f"{p}experts.{e}", cfg.swiglu_limit, weights[rows, slot, None])
    y += expert(xf, W, p + "shared_experts", 0.0)
    return y.reshape(shape)
