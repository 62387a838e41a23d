"""The Engram module of a block as a MindSpore cell (V4_SPEC 7; hashing and tables: engram.py).

Input: e_t [b, n, T * head_dim], the token's rows of the block's T tables concatenated, fetched and
dequantised on the host (exactly: e4m3 code x 2^(scale - 127), ascend_v4/engram.py). In the graph:
  k_i   = RMSNorm_i(W_K,i e_t) (key_norm),  q_i = RMSNorm_i(X_i) (query_norm)   per stream i
  a_i   = sigmoid(signed_sqrt(q_i . k_i / sqrt(d))),  signed_sqrt(z) = sign(z) sqrt(max(|z|, 1e-6))
  X_i  += a_i * W_V e_t
W_K is one [hc d, T head_dim] matrix (the hc per-stream keys stacked), W_V [d, T head_dim]; both bf16.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ascend_v4.config import ModelConfig
from ascend_v4.engram import geometry
from ascend_v4.linear import Linear
from ascend_v4.numerics import RMSNorm
from ascend_v4.precision import np_dtype
from ascend_v4.runtime import RuntimeConfig

GATE_EPS = 1e-6


def history_update(history, ids, count):
    """The engram.history slot after a chunk: history [b, N-1] int32, ids [b, n], count [b]
    -> the last N-1 ids of (history, ids[:, :count]) (count 0: unchanged), as engram.next_history."""
    b, k = history.shape
    buf = ops.concat([history, ids.astype(history.dtype)], 1)               # [b, N-1+n]
    take = count.reshape(b, 1) + ops.arange(k, dtype=ms.int32).reshape(1, k)
    return ops.gather_elements(buf, 1, take)


class Engram(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig):
        super().__init__()
        dt = np_dtype(rt)
        self.hc, self.dim = cfg.hc_mult, cfg.dim
        emb = geometry(cfg).emb_dim
        self.key_proj = Linear(emb, cfg.hc_mult * cfg.dim, "bf16", rt)
        self.value_proj = Linear(emb, cfg.dim, "bf16", rt)
        self.key_norm = RMSNorm((cfg.hc_mult, cfg.dim), cfg.norm_eps, dt)
        self.query_norm = RMSNorm((cfg.hc_mult, cfg.dim), cfg.norm_eps, dt)
        self.inv_sqrt_d = Tensor(np.array(cfg.dim ** -0.5, dt))          # compute-dtype constant
        self.eps = Tensor(np.array(GATE_EPS, dt))

    def construct(self, X, e):
        """X [b, n, hc, d], e [b, n, T * head_dim] (the token's rows, dequantised) -> X + a * v."""
        b, n = X.shape[0], X.shape[1]
        k = self.key_norm(self.key_proj(e).reshape(b, n, self.hc, self.dim))
        q = self.query_norm(X)
        z = (q * k).sum(-1) * self.inv_sqrt_d                                # [b, n, hc]
        gate = ops.sigmoid(ops.sign(z) * ops.sqrt(ops.maximum(ops.abs(z), self.eps)))
        v = self.value_proj(e)                                               # [b, n, d]
        return X + gate.expand_dims(-1) * v.expand_dims(2)
