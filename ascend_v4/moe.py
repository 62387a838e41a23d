"""Mixture of experts: score or hash routing, clamped SwiGLU experts, shared expert (V4_SPEC 5).

The routing weight multiplies the activation before w2, as in the release (it matters because
w2's input is FP8-quantised).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.config import ModelConfig
from ascend_v4.linear import ACT_BLOCK, Linear, dense, zeros_param
from ascend_v4.numerics import fp8_quant_dequant
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.precision import np_dtype


def route_scores(logits, score_func: str):
    """Gate logits [T, E] -> scores [T, E]."""
    if score_func == "softmax":
        return mint.softmax(logits, -1)
    if score_func == "sigmoid":
        return ops.sigmoid(logits)
    # softplus written out: MindSpore's Softplus kernel is float32-accurate even in float64
    softplus = ops.relu(logits) + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sqrt(softplus)


class SharedExpert(nn.Cell):
    """w2(silu(w1 x) * w3 x), no clamp."""

    def __init__(self, dim: int, inter: int, act_quant: bool, dtype):
        super().__init__()
        self.w1 = Linear(dim, inter, act_quant, dtype)
        self.w2 = Linear(inter, dim, act_quant, dtype)
        self.w3 = Linear(dim, inter, act_quant, dtype)

    def construct(self, x):
        return self.w2(ops.silu(self.w1(x)) * self.w3(x))


class RoutedExperts(nn.Cell):
    """The dispatch -> experts -> combine boundary (`moe_dispatch`/`moe_combine` on Ascend).

    Experts are stacked ([E, out, in]) and evaluated densely with a [T, E] combine matrix that is
    zero for unselected pairs: exact for any routing and static-shaped for GRAPH_MODE.
    """

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, dtype):
        super().__init__()
        E, d, inter = cfg.n_routed_experts, cfg.dim, cfg.moe_inter_dim
        self.n_experts, self.limit = E, cfg.swiglu_limit
        self.act_quant = cfg.routed_expert_dtype in ("fp4", "fp8")
        self.w1 = zeros_param((E, inter, d), "w1", dtype)
        self.w2 = zeros_param((E, d, inter), "w2", dtype)
        self.w3 = zeros_param((E, inter, d), "w3", dtype)
        self.use_kernels = rt.custom_ops
        if self.use_kernels:
            from custom_ops import ms_ops
            self.dispatch = ms_ops.moe_dispatch_op(E)
            self.combine = ms_ops.moe_combine_op()

    def _swiglu(self, xq):
        """xq [N, dim] -> clamped SwiGLU of every expert [E, N, inter]."""
        gate = ops.matmul(xq.expand_dims(0), self.w1.swapaxes(-1, -2))
        up = ops.matmul(xq.expand_dims(0), self.w3.swapaxes(-1, -2))
        if self.limit > 0:
            gate = ops.minimum(gate, self.limit)
            up = ops.clamp(up, -self.limit, self.limit)
        return ops.silu(gate) * up

    def _down(self, h):
        """h [E, N, inter] (already weighted, zero off the routing) -> [N, dim]."""
        if self.act_quant:
            h = fp8_quant_dequant(h, ACT_BLOCK)
        return ops.matmul(h, self.w2.swapaxes(-1, -2)).sum(0)

    def construct(self, x, weights, indices):
        """x [T, dim], weights/indices [T, k] -> sum_k w_k expert_k(x) [T, dim] (fp32 sum)."""
        if self.use_kernels:
            return self._with_kernels(x, weights, indices)
        one = Tensor(1.0, ms.float32)
        zero = Tensor(0.0, ms.float32)
        hits = ops.one_hot(indices, self.n_experts, one, zero).astype(weights.dtype)
        routing = (hits * weights.expand_dims(-1)).sum(1)                    # [T, E]
        xq = fp8_quant_dequant(x, ACT_BLOCK) if self.act_quant else x
        return self._down(self._swiglu(xq) * routing.T.expand_dims(-1))

    def _with_kernels(self, x, weights, indices):
        """moe_dispatch groups the T*k (token, expert) rows by expert, the experts run on the
        grouped rows (row r belongs to expert e iff offsets[e] <= r < offsets[e+1]), and
        moe_combine sums the rows back into token order. The routing weight is applied before
        w2, as in the release, so combine gets weights of one."""
        dtype, f32 = x.dtype, ms.float32
        rows, _, row_w, _, slot_of, _, offsets, _, _ = self.dispatch(
            x.astype(f32), indices.astype(ms.int32), weights.astype(f32))
        n = rows.shape[0]
        r = ops.arange(n).reshape(1, n)
        owner = ops.logical_and(r >= offsets[:-1].reshape(-1, 1), r < offsets[1:].reshape(-1, 1))
        rows = rows.astype(dtype)
        xq = fp8_quant_dequant(rows, ACT_BLOCK) if self.act_quant else rows
        scale = mint.where(owner, row_w.astype(dtype).reshape(1, n), 0.0)       # [E, N]
        out = self._down(self._swiglu(xq) * scale.expand_dims(-1))             # [N, dim]
        ones = ops.ones(weights.shape, f32)
        return self.combine(out.astype(f32), slot_of, ones).astype(dtype)


class MoE(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, layer_id: int):
        super().__init__()
        E, d = cfg.n_routed_experts, cfg.dim
        self.n_experts, self.topk, self.dim = E, cfg.n_activated_experts, d
        self.score_func, self.route_scale = cfg.score_func, cfg.route_scale
        self.hash = layer_id < cfg.n_hash_layers
        dt = np_dtype(rt)
        self.gate_weight = zeros_param((E, d), "gate_weight", dt)
        if self.hash:
            self.tid2eid = zeros_param((cfg.vocab_size, self.topk), "tid2eid", np.int32)
        else:
            self.gate_bias = zeros_param((E,), "gate_bias", dt)
        self.experts = RoutedExperts(cfg, rt, dt)
        self.shared = SharedExpert(d, cfg.moe_inter_dim, cfg.dtype == "fp8", dt)

    def route(self, x, ids):
        """x [T, dim], ids [T] -> weights [T, k], indices [T, k] int32."""
        scores = route_scores(dense(x, self.gate_weight), self.score_func)
        if self.hash:
            idx = ops.gather(self.tid2eid, ids, 0)
        else:
            _, idx = ops.topk(scores + self.gate_bias, self.topk)
        w = ops.gather_elements(scores, 1, idx)
        if self.score_func != "softmax":
            w = w / w.sum(-1, keepdims=True)
        return w * self.route_scale, idx

    def construct(self, x, ids):
        """x [b, s, dim], ids [b, s] -> [b, s, dim]."""
        shape = x.shape
        xf = x.reshape(-1, self.dim)
        w, idx = self.route(xf, ids.reshape(-1))
        return (self.experts(xf, w, idx) + self.shared(xf)).reshape(shape)
