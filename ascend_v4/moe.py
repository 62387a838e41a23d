"""Mixture of experts: score or hash routing, clamped SwiGLU experts, shared expert (V4_SPEC 5).

Routed experts are sparse: only the (token, expert) pairs the router chose are computed, as a
grouped GEMM over expert tiles (`expert_tiles`). Under expert parallel each rank holds some of
the experts and `ExpertExchange` dispatches the pairs to their owners and combines the outputs.
The routing weight multiplies the activation before w2, as in the release (it matters because
w2's input is FP8-quantised).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.checkpoint.schema import linear_kind
from ascend_v4.config import ModelConfig
from ascend_v4.kernels import fused_route, fused_swiglu
from ascend_v4.linear import (ACT_QUANT, Linear, act_quant, paired_product, stacked_product, storage_kind,
                              weight_pair, zeros_param)
from ascend_v4.parallel.comm import AllToAll, GroupGather
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


def rank_in_group(group, n_groups: int, valid=None):
    """group [P] int32 in [0, n_groups) (valid [P] bool: others count nowhere) -> (each row's index
    among the earlier rows of its group [P], rows per group [n_groups])."""
    hits = group.reshape(-1, 1) == ops.arange(n_groups, dtype=ms.int32).reshape(1, -1)    # [P, n]
    if valid is not None:
        hits = ops.logical_and(hits, valid.reshape(-1, 1))
    hits = hits.astype(ms.int32)
    return (hits * (ops.cumsum(hits, 0) - 1)).sum(1).astype(ms.int32), hits.sum(0).astype(ms.int32)


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
    t = ops.arange(n_tiles, dtype=ms.int32).reshape(-1, 1)
    owner = (ends.reshape(1, E) <= t).astype(ms.int32).sum(1)                # tiles before t's expert
    return slot.astype(ms.int32), ops.minimum(owner, E - 1).astype(ms.int32)


class SharedExpert(nn.Cell):
    """w2(silu(w1 x) * w3 x), no clamp."""

    def __init__(self, dim: int, inter: int, ckpt_kind: str, rt: RuntimeConfig):
        super().__init__()
        self.w1 = Linear(dim, inter, ckpt_kind, rt)
        self.w2 = Linear(inter, dim, ckpt_kind, rt)
        self.w3 = Linear(dim, inter, ckpt_kind, rt)
        self.swiglu = fused_swiglu(rt.kernels, 0.0)
        self.gate_up = weight_pair(self.w1, self.w3)              # both products in one call (decode)

    def construct(self, x):
        gate, up = paired_product(self.gate_up, x, self.w1, self.w3)
        if self.swiglu is not None:
            return self.w2(self.swiglu(gate, up))
        return self.w2(ops.silu(gate) * up)


class RoutedExperts(nn.Cell):
    """The dispatch -> experts -> combine boundary (`moe_dispatch`/`moe_combine` on Ascend).

    Experts are stacked ([E, out, in], in checkpoint format). The T*k routed rows are grouped
    by expert into tiles (`expert_tiles`); each tile gathers and dequantises only its expert's
    weights and runs one GEMM, so expert FLOPs and weight reads follow top-k, not E.
    """

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig):
        super().__init__()
        par = rt.parallel                     # expert parallel: this rank holds the experts `ids`
        ids = par.expert_ids(cfg.n_routed_experts)
        E = len(ids)
        d, inter = cfg.dim, cfg.moe_inter_dim
        self.n_experts, self.limit = E, cfg.swiglu_limit
        kind = linear_kind(cfg, "expert")
        self.act_quant = kind in ACT_QUANT
        if self.act_quant:
            self.quant = act_quant(kind, rt)
        held, dt = storage_kind(kind, rt), np_dtype(rt)
        self.w1 = StoredWeight((E, inter, d), held, dt, kernels=rt.kernels)
        self.w2 = StoredWeight((E, d, inter), held, dt, kernels=rt.kernels)
        self.w3 = StoredWeight((E, inter, d), held, dt, kernels=rt.kernels)
        for w in (self.w1, self.w2, self.w3):
            w.expert_ids = ids
        self.exchange = ExpertExchange(par, cfg.n_routed_experts) if par.ep > 1 else None
        self.swiglu = fused_swiglu(rt.kernels, self.limit)
        self.gate_up = weight_pair(self.w1, self.w3)              # both products in one call (decode tiles)
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
        gate, up = paired_product(self.gate_up, x, self.w1, self.w3, tile_expert)      # [n_tiles, m, inter] x 2
        if self.swiglu is not None:
            h = self.swiglu(gate, up, ws.reshape(n_tiles, m))
        else:
            h = self._swiglu(gate, up, ws.reshape(n_tiles, m, 1))
        if self.act_quant:
            h = self.quant(h)
        return stacked_product(h, self.w2, tile_expert).reshape(n_tiles * m, -1)

    def _swiglu(self, gate, up, ws):
        """The composite clamped SwiGLU times the routing weights ws (broadcast over the last dim)."""
        if self.limit > 0:
            gate = ops.minimum(gate, self.limit)
            up = ops.clamp(up, -self.limit, self.limit)
        return ops.silu(gate) * up * ws

    def _pairs_forward(self, rows, row_of_pair, pair_w, expert, rank, counts):
        """Run P (row, expert) pairs through their experts in tiles.

        rows [R, dim] (already activation-quantised), row_of_pair / expert / rank [P] (the pair's
        index among its expert's pairs), pair_w [P], counts [E] -> weighted outputs [P, dim]."""
        P, dtype = expert.shape[0], rows.dtype
        m, n_tiles = tile_plan(P, self.n_experts)
        slot, tile_expert = expert_tiles(expert, rank, counts, m, n_tiles)
        # tile slot -> its pair (P: an empty slot, reading the appended zero row / weight)
        source = ops.tensor_scatter_update(ops.full((n_tiles * m,), P, dtype=ms.int32), slot.reshape(-1, 1),
                                           ops.arange(P, dtype=ms.int32))
        row = ops.gather(ops.concat((row_of_pair, ops.full((1,), rows.shape[0], dtype=ms.int32))), source, 0)
        xs = ops.gather(ops.concat((rows, ops.zeros((1, rows.shape[1]), dtype)), 0), row, 0)
        ws = ops.gather(ops.concat((pair_w.astype(dtype), ops.zeros((1,), dtype))), source, 0)
        return ops.gather(self._tiles_forward(xs, ws, tile_expert, m), slot, 0)

    def construct(self, x, weights, indices):
        """x [T, dim], weights/indices [T, k] -> sum_k w_k expert_k(x) [T, dim]."""
        if self.use_kernels:
            return self._with_kernels(x, weights, indices)
        if self.exchange is not None:
            return self._expert_parallel(x, weights, indices)
        T, k = indices.shape
        P = T * k
        experts = indices.reshape(P).astype(ms.int32)
        xq = self.quant(x) if self.act_quant else x
        token = ops.arange(P, dtype=ms.int32) // k
        if tile_plan(P, self.n_experts)[0] == 1:
            # tiles of one row (decode batches): pair p is tile p, in pair order, so no grouping by
            # expert is needed; the same per-row products as the grouped path
            out = self._tiles_forward(ops.gather(xq, token, 0), weights.reshape(P).astype(x.dtype), experts, 1)
        else:
            rank, counts = rank_in_group(experts, self.n_experts)              # among its expert's pairs
            out = self._pairs_forward(xq, token, weights.reshape(P), experts, rank, counts)
        return out.reshape(T, k, -1).sum(1)

    def _expert_parallel(self, x, weights, indices):
        """Expert parallel: dispatch this rank's share of the (token, expert) pairs to the EP ranks
        holding the experts, run the pairs received through the local experts, combine."""
        xq = self.quant(x) if self.act_quant else x
        rows, w, expert, back = self.exchange.dispatch(xq, weights, indices)   # [R, d], [R], [R]
        rank, counts = rank_in_group(expert, self.n_experts)
        out = self._pairs_forward(rows, ops.arange(rows.shape[0], dtype=ms.int32), w, expert, rank,
                                  counts)                                      # [R, d] weighted outputs
        return self.exchange.combine(out, back, indices.shape)

    def _with_kernels(self, x, weights, indices):
        """moe_dispatch groups the T*k (token, expert) rows by expert (row r belongs to expert e
        iff offsets[e] <= r < offsets[e+1]); the rows go into expert tiles as above, and
        moe_combine sums the rows back into token order. The routing weight is applied before
        w2, as in the release, so combine gets weights of one."""
        dtype, f32 = x.dtype, ms.float32
        rows, _, row_w, _, slot_of, counts, offsets, _, _ = self.dispatch(
            x.astype(f32), indices.astype(ms.int32), weights.astype(f32))
        r = ops.arange(rows.shape[0], dtype=ms.int32)
        expert = ((offsets[1:].reshape(1, -1) <= r.reshape(-1, 1)).astype(ms.int32).sum(1)).astype(ms.int32)
        expert = ops.minimum(expert, self.n_experts - 1)
        grouped = rows.astype(dtype)
        xq = self.quant(grouped) if self.act_quant else grouped
        out = self._pairs_forward(xq, r, row_w, expert, r - ops.gather(offsets, expert, 0), counts)
        ones = ops.ones(weights.shape, f32)
        return self.combine(out.astype(f32), slot_of, ones).astype(dtype)


class ExpertExchange(nn.Cell):
    """The MoE all-to-all of one EP group (dispatch, then combine) with uneven per-rank counts.

    Tokens [T] are replicated over the group; member j routes tokens [j Ts, (j+1) Ts) (Ts =
    ceil(T / ep), padding tokens are invalid). Its P = Ts k pairs go into a send buffer
    [ep, P, d + 3] (row, routing weight, the expert's slot on the destination, valid flag), at
    position (destination, rank among the pairs for that destination). An expert with copies on
    several members (the plan's redundant placement) is served by copy (token mod copies). Static
    shapes hold any routing: a member may receive all ep P pairs or none. On Ascend this is HCCL
    AlltoAllV (or MoeDistributeDispatch / Combine) with counts exchanged first; here `AllToAll`.
    """

    def __init__(self, par, n_experts: int):
        super().__init__()
        self.ep, self.index = par.ep, par.ep_index
        members = par.ep_members()
        self.all_to_all = AllToAll(members, par.world, self.index)
        self.gather_group = GroupGather(members, par.world)
        held = [[] for _ in range(n_experts)]             # expert -> [(member, slot)] of its copies
        for j in range(par.ep):
            for slot, e in enumerate(par.expert_ids(n_experts, j)):
                held[e].append((j, slot))
        C = max(len(h) for h in held)
        self.n_copies = C
        self.copies = Tensor(np.array([len(h) for h in held], np.int32))
        self.copy_member = Tensor(np.array([[h[c % len(h)][0] for c in range(C)] for h in held], np.int32).reshape(-1))
        self.copy_slot = Tensor(np.array([[h[c % len(h)][1] for c in range(C)] for h in held], np.int32).reshape(-1))

    def my_pairs(self, xq, weights, indices):
        """-> this member's pairs: rows [P, d], weights [P], experts [P] (global), tokens [P] (index
        in the batch), valid [P] bool."""
        T, k = indices.shape
        Ts = (T + self.ep - 1) // self.ep
        pad = Ts * self.ep - T
        if pad:
            xq = ops.concat((xq, ops.zeros((pad, xq.shape[1]), xq.dtype)), 0)
            weights = ops.concat((weights, ops.zeros((pad, k), weights.dtype)), 0)
            indices = ops.concat((indices, ops.zeros((pad, k), indices.dtype)), 0)
        lo = self.index * Ts
        token_ok = (ops.arange(Ts, dtype=ms.int32) + lo) < T                       # [Ts]
        P = Ts * k
        local_token = ops.arange(P, dtype=ms.int32) // k
        rows = ops.gather(xq[lo:lo + Ts], local_token, 0)
        valid = ops.tile(token_ok.reshape(Ts, 1), (1, k)).reshape(P)
        return rows, weights[lo:lo + Ts].reshape(P), indices[lo:lo + Ts].reshape(P).astype(ms.int32), \
            local_token + lo, valid

    def pack(self, rows, w, expert, token, valid):
        """-> send [ep, P, d + 3], and each pair's slot in the flattened [ep P] return buffer."""
        P, dtype = rows.shape[0], rows.dtype
        copy = token % ops.gather(self.copies, expert, 0)
        held = expert * self.n_copies + copy
        dest = ops.gather(self.copy_member, held, 0)
        local_slot = ops.gather(self.copy_slot, held, 0)
        pos, _ = rank_in_group(dest, self.ep, valid)                            # among the pairs to dest
        slot = dest * P + pos
        target = mint.where(valid, slot, self.ep * P)                           # invalid -> a spill row
        meta = ops.stack((w.astype(dtype), local_slot.astype(dtype), valid.astype(dtype)), 1)
        payload = ops.concat((rows, meta), 1)                                   # [P, d + 3]
        send = ops.zeros((self.ep * P + 1, payload.shape[1]), dtype)
        send = ops.tensor_scatter_update(send, target.reshape(-1, 1), payload)
        return send[:self.ep * P].reshape(self.ep, P, -1), mint.where(valid, slot, 0)

    def dispatch(self, xq, weights, indices):
        """xq [T, d] (replicated over the group), weights / indices [T, k] -> the pairs this member
        received: rows [R = ep P, d], routing weights [R] (0 on empty rows), local expert slots [R]
        (0 on empty rows), and `back` (each own pair's return slot, valid flags) for `combine`."""
        rows, w, expert, token, valid = self.my_pairs(xq, weights, indices)
        send, return_slot = self.pack(rows, w, expert, token, valid)
        r_rows, r_w, r_expert, r_valid = self.unpack(self.all_to_all(send), xq.shape[1])
        return r_rows, r_w, mint.where(r_valid, r_expert, 0), (return_slot, valid)

    def combine(self, out, back, shape):
        """Outputs [R, d] of the received pairs -> back to their senders, each token's k outputs
        summed in the one-process order, tokens gathered -> [T, d] (shape: (T, k))."""
        T, k = shape
        return_slot, valid = back
        d = out.shape[1]
        returned = self.all_to_all(out.reshape(self.ep, -1, d))                 # [ep (expert rank), P, d]
        mine = ops.gather(returned.reshape(-1, d), return_slot, 0) * valid.reshape(-1, 1).astype(out.dtype)
        return self.gather_tokens(mine.reshape(-1, k, d).sum(1), T)

    @staticmethod
    def unpack(got, d: int):
        """[ep, P, d + 3] received -> rows [R, d], weights [R] (0 when invalid), local experts [R], valid [R]."""
        flat = got.reshape(-1, got.shape[2])
        valid = flat[:, d + 2] > 0.5
        return flat[:, :d], flat[:, d] * flat[:, d + 2], flat[:, d + 1].astype(ms.int32), valid

    def gather_tokens(self, mine, T: int):
        """This member's token outputs [Ts, d] -> all tokens [T, d] (replicated again)."""
        every = self.gather_group(mine)                                         # [ep, Ts, d]
        return every.reshape(-1, mine.shape[1])[:T]


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
        self.shared_experts = SharedExpert(cfg.dim, cfg.moe_inter_dim, linear_kind(cfg, "shared"), rt)
        self.fused_route = fused_route(rt.kernels, cfg, self.hash, np_dtype(rt))

    def route(self, x, ids):
        """x [T, dim], ids [T] -> weights [T, k], indices [T, k] int32."""
        if self.fused_route is not None:
            if self.hash:
                return self.fused_route(self.gate(x), experts=ops.gather(self.gate.tid2eid, ids, 0))
            return self.fused_route(self.gate(x), self.gate.bias)
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
