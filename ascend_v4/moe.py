"""Mixture of experts: score or hash routing, clamped SwiGLU experts, shared expert (V4_SPEC 5).

Routed experts are sparse: only the (token, expert) pairs the router chose are computed, as a
grouped GEMM over expert tiles (`expert_tiles`). The routing weight multiplies the activation
before w2, as in the release (it matters because w2's input is FP8-quantised).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from ascend_v4.checkpoint.schema import weight_kinds
from ascend_v4.config import ModelConfig
from ascend_v4.linear import ACT_BLOCK, Linear, batched_dense, storage_kind, zeros_param
from ascend_v4.kernels import QuantDequant
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.precision import np_dtype
from ascend_v4.weights import StoredWeight


def route_scores(logits, score_func: str):
    """Gate logits [T, E] -> scores [T, E]."""
    if score_func == "softmax":
        return mint.softmax(logits, -1)
    if score_func == "sigmoid":
        return ops.sigmoid(logits)
    # softplus written out: MindSpore's Softplus kernel is float32-accurate even in float64
    softplus = ops.relu(logits) + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sqrt(softplus)


def tile_plan(pairs: int, n_experts: int) -> Tuple[int, int]:
    """(rows per tile m, number of tiles) for `pairs` routed (token, expert) pairs.

    Each expert's rows fill whole tiles of m, so the tiles hold at most
    sum_e ceil(c_e / m) <= (pairs + min(E, pairs) (m - 1)) / m of them for any routing (no
    overflow: the bound holds for every routing, it is not a capacity guess). m is the largest
    power of two <= pairs / E (at most 128): decode batches get m = 1 (a gather of the chosen experts), long prefills tiles
    of many rows; either way at most ~2 x pairs rows are computed, whatever E is.
    """
    m = 1
    while m * 2 * n_experts <= pairs and m < 128:
        m *= 2
    busy = min(n_experts, pairs)
    return m, min(pairs, (pairs + busy * (m - 1)) // m) if m > 1 else pairs


def expert_tiles(expert_of_row, rank_of_row, counts, m: int, n_tiles: int):
    """Place P rows into tiles of m rows, each tile owned by one expert.

    expert_of_row [P] / rank_of_row [P] (the row's index among its expert's rows), counts [E]
    -> (slot_of_row [P] in [0, n_tiles m), tile_expert [n_tiles]; tiles past the last used
    one belong to expert E-1 and hold no rows)."""
    E = counts.shape[0]
    tiles = (counts + (m - 1)) // m                                           # [E]
    ends = ops.cumsum(tiles, 0)                                               # [E] exclusive ends
    first = ends - tiles
    slot = ops.gather(first, expert_of_row, 0) * m + rank_of_row
    t = ops.arange(n_tiles).astype(ms.int32).reshape(-1, 1)
    owner = (ends.reshape(1, E) <= t).astype(ms.int32).sum(1)                # tiles before t's expert
    return slot.astype(ms.int32), ops.minimum(owner, E - 1).astype(ms.int32)


class SharedExpert(nn.Cell):
    """w2(silu(w1 x) * w3 x), no clamp."""

    def __init__(self, dim: int, inter: int, ckpt_kind: str, rt: RuntimeConfig):
        super().__init__()
        self.w1 = Linear(dim, inter, ckpt_kind, rt)
        self.w2 = Linear(inter, dim, ckpt_kind, rt)
        self.w3 = Linear(dim, inter, ckpt_kind, rt)

    def construct(self, x):
        return self.w2(ops.silu(self.w1(x)) * self.w3(x))


class RoutedExperts(nn.Cell):
    """The dispatch -> experts -> combine boundary (`moe_dispatch`/`moe_combine` on Ascend).

    Experts are stacked ([E, out, in], in checkpoint format). The T*k routed rows are grouped
    by expert into tiles (`expert_tiles`); each tile gathers and dequantises only its expert's
    weights and runs one GEMM, so expert FLOPs and weight reads follow top-k, not E.
    """

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig):
        super().__init__()
        E, d, inter = cfg.n_routed_experts, cfg.dim, cfg.moe_inter_dim
        self.n_experts, self.limit = E, cfg.swiglu_limit
        kind = weight_kinds(cfg)[1]
        self.act_quant = kind in ("fp4", "fp8")
        if self.act_quant:
            self.quant = QuantDequant(rt, "fp8", ACT_BLOCK)
        held, dt = storage_kind(kind, rt), np_dtype(rt)
        self.w1 = StoredWeight((E, inter, d), held, dt)
        self.w2 = StoredWeight((E, d, inter), held, dt)
        self.w3 = StoredWeight((E, inter, d), held, dt)
        self.use_kernels = rt.custom_ops
        if self.use_kernels:
            from custom_ops import ms_ops
            self.dispatch = ms_ops.moe_dispatch_op(E)
            self.combine = ms_ops.moe_combine_op()

    def _tiles_forward(self, xs, ws, tile_expert, m: int):
        """xs [n_tiles * m, dim] rows, ws [n_tiles * m] routing weights (0 on empty rows),
        tile_expert [n_tiles] -> weighted expert outputs [n_tiles * m, dim]."""
        n_tiles = tile_expert.shape[0]
        x = xs.reshape(n_tiles, m, -1)
        gate = batched_dense(x, self.w1.take(tile_expert))                             # [n_tiles, m, inter]
        up = batched_dense(x, self.w3.take(tile_expert))
        if self.limit > 0:
            gate = ops.minimum(gate, self.limit)
            up = ops.clamp(up, -self.limit, self.limit)
        h = ops.silu(gate) * up * ws.reshape(n_tiles, m, 1)
        if self.act_quant:
            h = self.quant(h)
        return batched_dense(h, self.w2.take(tile_expert)).reshape(n_tiles * m, -1)

    def _pairs_forward(self, rows, row_of_pair, pair_w, expert, rank, counts):
        """Run P (row, expert) pairs through their experts in tiles.

        rows [R, dim] (already activation-quantised), row_of_pair / expert / rank [P] (the pair's
        index among its expert's pairs), pair_w [P], counts [E] -> weighted outputs [P, dim]."""
        P, dtype = expert.shape[0], rows.dtype
        m, n_tiles = tile_plan(P, self.n_experts)
        slot, tile_expert = expert_tiles(expert, rank, counts, m, n_tiles)
        # tile slot -> its pair (P: an empty slot, reading the appended zero row / weight)
        source = ops.tensor_scatter_update(ops.full((n_tiles * m,), P, dtype=ms.int32), slot.reshape(-1, 1),
                                           ops.arange(P).astype(ms.int32))
        row = ops.gather(ops.concat((row_of_pair, ops.full((1,), rows.shape[0], dtype=ms.int32))), source, 0)
        xs = ops.gather(ops.concat((rows, ops.zeros((1, rows.shape[1]), dtype)), 0), row, 0)
        ws = ops.gather(ops.concat((pair_w.astype(dtype), ops.zeros((1,), dtype))), source, 0)
        return ops.gather(self._tiles_forward(xs, ws, tile_expert, m), slot, 0)

    def construct(self, x, weights, indices):
        """x [T, dim], weights/indices [T, k] -> sum_k w_k expert_k(x) [T, dim]."""
        if self.use_kernels:
            return self._with_kernels(x, weights, indices)
        T, k = indices.shape
        P = T * k
        experts = indices.reshape(P).astype(ms.int32)
        hits = (experts.reshape(P, 1) == ops.arange(self.n_experts).astype(ms.int32).reshape(1, -1))
        hits = hits.astype(ms.int32)                                            # [P, E]
        rank = (hits * (ops.cumsum(hits, 0) - 1)).sum(1).astype(ms.int32)       # among its expert's pairs
        xq = self.quant(x) if self.act_quant else x
        token = ops.arange(P).astype(ms.int32) // k
        out = self._pairs_forward(xq, token, weights.reshape(P), experts, rank, hits.sum(0).astype(ms.int32))
        return out.reshape(T, k, -1).sum(1)

    def _with_kernels(self, x, weights, indices):
        """moe_dispatch groups the T*k (token, expert) rows by expert (row r belongs to expert e
        iff offsets[e] <= r < offsets[e+1]); the rows go into expert tiles as above, and
        moe_combine sums the rows back into token order. The routing weight is applied before
        w2, as in the release, so combine gets weights of one."""
        dtype, f32 = x.dtype, ms.float32
        rows, _, row_w, _, slot_of, counts, offsets, _, _ = self.dispatch(
            x.astype(f32), indices.astype(ms.int32), weights.astype(f32))
        r = ops.arange(rows.shape[0]).astype(ms.int32)
        expert = ((offsets[1:].reshape(1, -1) <= r.reshape(-1, 1)).astype(ms.int32).sum(1)).astype(ms.int32)
        expert = ops.minimum(expert, self.n_experts - 1)
        grouped = rows.astype(dtype)
        xq = self.quant(grouped) if self.act_quant else grouped
        out = self._pairs_forward(xq, r, row_w, expert, r - ops.gather(offsets, expert, 0), counts)
        ones = ops.ones(weights.shape, f32)
        return self.combine(out.astype(f32), slot_of, ones).astype(dtype)


class Gate(Linear):
    """The router: logits = x gate.weight^T [T, E] (bf16 weight), plus gate.bias (score routing)
    or gate.tid2eid (hash routing: token id -> its k experts)."""

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, hash_routed: bool):
        super().__init__(cfg.dim, cfg.n_routed_experts, "bf16", rt)
        if hash_routed:
            self.tid2eid = zeros_param((cfg.vocab_size, cfg.n_activated_experts), "tid2eid", np.int32)
        else:
            self.bias = zeros_param((cfg.n_routed_experts,), "bias", np_dtype(rt))


class MoE(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, layer_id: int):
        super().__init__()
        self.n_experts, self.topk, self.dim = cfg.n_routed_experts, cfg.n_activated_experts, cfg.dim
        self.score_func, self.route_scale = cfg.score_func, cfg.route_scale
        self.hash = layer_id < cfg.n_hash_layers
        self.gate = Gate(cfg, rt, self.hash)
        self.experts = RoutedExperts(cfg, rt)
        self.shared_experts = SharedExpert(cfg.dim, cfg.moe_inter_dim, weight_kinds(cfg)[0], rt)

    def route(self, x, ids):
        """x [T, dim], ids [T] -> weights [T, k], indices [T, k] int32."""
        scores = route_scores(self.gate(x), self.score_func)
        if self.hash:
            idx = ops.gather(self.gate.tid2eid, ids, 0)
        else:
            _, idx = ops.topk(scores + self.gate.bias, self.topk)
        w = ops.gather_elements(scores, 1, idx)
        if self.score_func != "softmax":
            w = w / w.sum(-1, keepdims=True)
        return w * self.route_scale, idx

    def construct(self, x, ids):
        """x [b, s, dim], ids [b, s] -> [b, s, dim]."""
        shape = x.shape
        xf = x.reshape(-1, self.dim)
        w, idx = self.route(xf, ids.reshape(-1))
        return (self.experts(xf, w, idx) + self.shared_experts(xf)).reshape(shape)
