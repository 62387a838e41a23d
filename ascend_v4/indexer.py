"""Lightning indexer of ratio-4 layers: picks the top-k compressed entries per query.

I[t, s] = sum_h w[t, h] * ReLU(q_I[t, h] . k_I[s]), causal (s < (t + 1) // 4), keep the top
min(index_topk, visible). Keys come from the indexer's own compressor (Hadamard + FP4, or per-token
INT8 with rt.indexer_cache 'int8'; the queries likewise per token-head).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.compressor import Compressor, write_entries
from ascend_v4.config import ModelConfig
from ascend_v4.linear import Linear
from ascend_v4.kernels import Rope, fused_topk_mask, index_quant
from ascend_v4.numerics import dot_rows, hadamard_matrix, rotate_last, weighted_sum
from ascend_v4.parallel.comm import GroupSum
from ascend_v4.precision import np_dtype
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.state import StateSlot, StateSpec

NEG_INF = float("-inf")


def selected_mask(scores, visible, k: int):
    """scores [..., n] with `visible` [..., n] -> bool mask of the top-k visible entries; ties at
    the k-th value go to the lower entry index.

    ReLU makes exact ties (score 0) common and TopK orders ties arbitrarily, so the selection is
    made from values only: every entry above the k-th largest value, then the lowest-index
    entries equal to it. (TopK's values are exact in float64; the CPU Sort kernel rounds float64
    to float32, measured, which mis-ranks near-equal scores.)"""
    scores = mint.where(visible, scores, NEG_INF)
    values, _ = ops.topk(scores, k)
    kth = values[..., k - 1:k]                                       # [..., 1]
    above = scores > kth
    tie = scores == kth
    room = k - above.astype(ms.int32).sum(-1, keepdims=True)
    tie_rank = ops.cumsum(tie.astype(ms.int32), -1)                  # 1-based rank among the ties
    chosen = ops.logical_or(above, ops.logical_and(tie, tie_rank <= room))
    return ops.logical_and(chosen, visible)


class Indexer(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, linear_kind: str):
        super().__init__()
        par = rt.parallel                      # tensor parallel: this rank's indexer heads
        self.n_heads, self.head_dim, self.topk = cfg.index_n_heads // par.tp, cfg.index_head_dim, cfg.index_topk
        self.rd = cfg.rope_head_dim
        self.rope = Rope(rt, self.rd)
        self.ratio = 4
        self.cfg, self.rt = cfg, rt
        dt = self.dt = np_dtype(rt)
        self.wq_b = Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, linear_kind, rt)
        self.weights_proj = Linear(cfg.dim, self.n_heads, "bf16", rt)
        self.compressor = Compressor(cfg, rt, 4, self.head_dim, rotate=True)
        self.hadamard = Tensor(hadamard_matrix(self.head_dim, dt))
        self.quant = index_quant(rt, self.head_dim)           # per token-head for int8
        self.weight_scale = self.head_dim ** -0.5 * cfg.index_n_heads ** -0.5
        self.tp_sum = GroupSum(par.tp_members(), par.world) if par.tp > 1 else None
        self.k = min(self.topk, rt.max_seq_len // self.ratio)    # entries kept per query
        self.fused_select = fused_topk_mask(rt.kernels, self.k)

    def queries(self, qr, cos, sin):
        """qr [b, s, q_lora_rank] -> rotated queries [b, s, heads, head_dim], rounded (FP4 or INT8)."""
        b, s, _ = qr.shape
        q = self.wq_b(qr).reshape(b, s, self.n_heads, self.head_dim)
        q = self.rope(q, cos, sin)
        return self.quant(rotate_last(q, self.hadamard))

    def scores(self, x, q, keys):
        """x [b, s, dim], q [b, s, h, d] (this rank's heads), keys [b, n, d] -> index scores [b, s, n]
        (summed over every head of the TP group)."""
        w = self.weights_proj(x) * self.weight_scale                 # [b, s, h]
        b, s, h, d = q.shape                                          # keys shared by every query and head
        dots = ops.relu(dot_rows(q.reshape(b, s * h, d), keys).reshape(b, s, h, -1))   # [b, s, h, n]
        partial = weighted_sum(w, dots)                               # [b, s, n]
        return self.tp_sum(partial) if self.tp_sum is not None else partial   # sum over all heads

    @staticmethod
    def spec_for(cfg: ModelConfig, rt: RuntimeConfig) -> StateSpec:
        """Its compressor's partial block, then the key cache [max_seq_len / 4, index_head_dim]."""
        spec = StateSpec()
        spec.include("compressor.", Compressor.spec_for(4, cfg.index_head_dim, np_dtype(rt)))
        spec.add(StateSlot("keys", (rt.max_seq_len // 4, cfg.index_head_dim), np_dtype(rt), per_tokens=4))
        return spec

    def state_spec(self) -> StateSpec:
        return Indexer.spec_for(self.cfg, self.rt)

    def extend(self, x, qr, start, count, pos, cos_q, sin_q, kv_state, score_state, cache, cos, sin):
        """New tokens x [b, n, dim] (queries qr, positions pos [b, n], their rope cos_q/sin_q)
        -> selected [b, n, N] bool (top-k of the visible entries), kv_state, score_state, cache."""
        keys, complete, kv_state, score_state = self.compressor.extend(x, start, count, kv_state,
                                                                       score_state, cos, sin)
        cache = write_entries(cache, keys, complete, start // self.ratio)
        n_max = cache.shape[1]
        q = self.queries(qr, cos_q, sin_q)
        visible = ops.arange(n_max, dtype=ms.int32).reshape(1, 1, n_max) < ((pos + 1) // self.ratio).expand_dims(-1)
        scores = self.scores(x, q, cache)                                                   # [b, n, N]
        if self.fused_select is not None:
            return self.fused_select(scores, visible), kv_state, score_state, cache
        sel = selected_mask(scores, visible, self.k)
        return sel, kv_state, score_state, cache
