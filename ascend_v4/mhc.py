"""Manifold-constrained hyper-connections (V4_SPEC section 3)."""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, nn, ops

from ascend_v4.config import ModelConfig
from ascend_v4.kernels import FUSED_MAX_ROWS, FusedHcPost, FusedHcPre, FusedSinkhorn, sinkhorn_kind
from ascend_v4.linear import dense, zeros_param
from ascend_v4.numerics import sum_last, weighted_sum
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.precision import np_dtype


def hc_mixes(X, fn, eps: float):
    """X [b, s, n, d] -> mixes [b, s, rows] = (fn @ flatten(X)) * rsqrt(mean(x^2) + eps)."""
    b, s, n, d = X.shape
    x = X.reshape(b, s, n * d)
    return dense(x, fn) * ops.rsqrt(sum_last(x * x) / (n * d) + eps)


def sinkhorn_split(mixes, scale, base, n: int, iters: int, eps: float):
    """mixes [..., (2+n)n] -> pre [..., n], post [..., n], comb [..., n, n] (ends on columns)."""
    pre = ops.sigmoid(mixes[..., :n] * scale[0] + base[:n]) + eps
    post = 2.0 * ops.sigmoid(mixes[..., n:2 * n] * scale[1] + base[n:2 * n])
    logits = mixes[..., 2 * n:] * scale[2] + base[2 * n:]
    comb = mint.softmax(logits.reshape(logits.shape[:-1] + (n, n)), -1) + eps
    comb = comb / (comb.sum(-2, keepdims=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdims=True) + eps)
        comb = comb / (comb.sum(-2, keepdims=True) + eps)
    return pre, post, comb


class SinkhornSplit(nn.Cell):
    """The `sinkhorn_mhc` operator boundary: mixes [T.., 24] -> (pre, post, comb).

    A cell of its own so that exported graphs keep it as one named scope (the ONNX function
    `ascend_v4.sinkhorn_mhc`, the AscendC kernel on Ascend).
    """

    def __init__(self, n: int, iters: int, eps: float, kind: str = "composite"):
        super().__init__()
        self.n, self.iters, self.eps = n, iters, eps
        self.kind = kind                       # kernels.sinkhorn_kind: ascendc | fused | composite
        if kind == "ascendc":
            from custom_ops import ms_ops
            self.kernel = ms_ops.sinkhorn_mhc_op(n, iters, eps)
        elif kind == "fused":
            self.kernel = FusedSinkhorn(n, iters, eps)

    def construct(self, mixes, scale, base):
        if self.kind == "composite":
            return sinkhorn_split(mixes, scale, base, self.n, self.iters, self.eps)
        if self.kind == "fused":
            return self.kernel(mixes, scale, base)
        n, shape, dtype = self.n, mixes.shape[:-1], mixes.dtype
        f32 = ms.float32
        pre, post, comb = self.kernel(mixes.reshape(-1, mixes.shape[-1]).astype(f32), scale.astype(f32),
                                      base.astype(f32))
        return (pre.reshape(shape + (n,)).astype(dtype), post.reshape(shape + (n,)).astype(dtype),
                comb.reshape(shape + (n, n)).astype(dtype))


class HyperConnection(nn.Cell):
    """One sublayer's mHC: `pre` reduces the n streams to one input, `post` writes back."""

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, prefix: str):
        super().__init__()
        n = cfg.hc_mult
        self.n, self.norm_eps = n, cfg.norm_eps
        dt = np_dtype(rt)
        self.fn = zeros_param((cfg.mix_hc, n * cfg.dim), f"{prefix}_fn", dt)
        self.base = zeros_param((cfg.mix_hc,), f"{prefix}_base", dt)
        self.scale = zeros_param((3,), f"{prefix}_scale", dt)
        kind = sinkhorn_kind(rt)
        self.sinkhorn = SinkhornSplit(n, cfg.hc_sinkhorn_iters, cfg.hc_eps, kind)
        # kernels 'fused': pre and post as one kernel each for few tokens (decode)
        self.fused = kind == "fused"
        if self.fused:
            self.fused_pre = FusedHcPre(n, cfg.hc_sinkhorn_iters, cfg.hc_eps, cfg.norm_eps)
            self.fused_post = FusedHcPost()

    def _few(self, X) -> bool:
        return self.fused and X.shape[0] * X.shape[1] <= FUSED_MAX_ROWS

    def pre(self, X):
        """X [b, s, n, d] -> u [b, s, d], post [b, s, n], comb [b, s, n, n]."""
        if self._few(X):
            return self.fused_pre(X, self.fn, self.scale, self.base)
        mixes = hc_mixes(X, self.fn, self.norm_eps)
        pre, post, comb = self.sinkhorn(mixes, self.scale, self.base)
        return weighted_sum(pre, X), post, comb

    def post(self, f, X, post, comb):
        """X'_j = post_j f + sum_i comb[i, j] X_i  ->  [b, s, n, d]."""
        if self._few(X):
            return self.fused_post(f, X, post, comb)
        return post.expand_dims(-1) * f.expand_dims(2) + ops.matmul(comb.swapaxes(-1, -2), X)


class HcHead(nn.Cell):
    """Final stream reduction: y = sum_i (sigmoid(mix_i * scale + base_i) + eps) X_i."""

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, prefix: str):
        super().__init__()
        n = cfg.hc_mult
        self.hc_eps, self.norm_eps = cfg.hc_eps, cfg.norm_eps
        dt = np_dtype(rt)
        self.fn = zeros_param((n, n * cfg.dim), f"{prefix}_fn", dt)
        self.base = zeros_param((n,), f"{prefix}_base", dt)
        self.scale = zeros_param((1,), f"{prefix}_scale", dt)

    def construct(self, X):
        w = ops.sigmoid(hc_mixes(X, self.fn, self.norm_eps) * self.scale + self.base) + self.hc_eps
        return weighted_sum(w, X)
