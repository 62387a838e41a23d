"""MQA attention with sliding window, compressed entries and attention sink (V4_SPEC section 4).

One 512-wide KV head serves as key and value. A query at position t attends the last
window_size raw tokens plus compressed entries: all visible ones (ratio 128, HCA) or the
indexer's top-k (ratio 4, CSA). Decode state per layer, in order:
  window ring [b, W, hd]; if ratio: kv_state, score_state, compressed cache [b, max_seq/ratio, hd];
  if ratio 4: indexer kv_state, score_state, indexer key cache [b, max_seq/4, index_head_dim].
With cfg.custom_ops the window ring and the compressed cache are instead FP8 MODEL1 page pools
uint8 [ceil(b*n / PAGE_BLOCK), PAGE_BLOCK*584] shared by the batch (row r's slot j is token r*n + j),
written by the kv_pack_fp8 kernel; decode attends them with sparse_fp8_decode (prefill stays dense).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.compressor import Compressor
from ascend_v4.config import ModelConfig
from ascend_v4.indexer import Indexer
from ascend_v4.linear import Linear, zeros_param
from ascend_v4.numerics import RMSNorm, fp8_quant_dequant, rms_normalize
from ascend_v4.precision import ms_dtype, np_dtype
from ascend_v4.rope import apply_rope, rope_tables

NEG_INF = float("-inf")
PAGE_BLOCK = 64        # tokens per page block of the kernel-path caches (FlashMLA's block size)
TOKEN_BYTES = 584      # MODEL1: 448 e4m3 + 64 bf16 + 7 ue8m0 + 1 pad


def page_pool_shape(batch: int, per_row: int):
    """Shape of a MODEL1 pool holding per_row tokens for each of batch rows."""
    return (max(1, -(-batch * per_row // PAGE_BLOCK)), PAGE_BLOCK * TOKEN_BYTES)


def sink_attention(q, keys, mask, sink, scale: float):
    """q [b, s, h, d], keys [b, n, d], mask [b, s, n] bool, sink [h] -> o [b, s, h, d].

    o_h = sum_e exp(z_e - m) k_e / (sum_e exp(z_e - m) + exp(sink_h - m)).
    """
    z = ops.matmul(q, keys.expand_dims(1).swapaxes(-1, -2)) * scale     # [b, s, h, n]
    mask = mask.expand_dims(2)
    z = mint.where(mask, z, NEG_INF)
    sink = sink.reshape(1, 1, -1, 1)
    m = ops.maximum(z.max(-1, keepdims=True), sink)
    p = mint.where(mask, ops.exp(z - m), 0.0)
    denom = p.sum(-1, keepdims=True) + ops.exp(sink - m)
    return ops.matmul(p, keys.expand_dims(1)) / denom


class SinkAttention(nn.Cell):
    """The sparse-attention operator boundary (`sparse_fp8_decode` on Ascend): one named scope."""

    def __init__(self, scale: float, dtype=ms.float32):
        super().__init__()
        # a tensor of the compute dtype: a Python float would enter the graph as float32
        self.scale = Tensor(scale, dtype)

    def construct(self, q, keys, mask, sink):
        return sink_attention(q, keys, mask, sink, self.scale)


class Attention(nn.Cell):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.cfg = cfg
        self.ratio = cfg.compress_ratios[layer_id]
        self.n_heads, self.head_dim, self.rd = cfg.n_heads, cfg.head_dim, cfg.rope_head_dim
        self.window, self.eps = cfg.window_size, cfg.norm_eps
        self.groups, self.o_rank = cfg.o_groups, cfg.o_lora_rank
        self.scale = cfg.head_dim ** -0.5
        fp8 = cfg.dtype == "fp8"
        self.dt, self.mdt = np_dtype(cfg), ms_dtype(cfg)
        dt = self.dt
        self.wq_a = Linear(cfg.dim, cfg.q_lora_rank, fp8, dt)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps, dt)
        self.wq_b = Linear(cfg.q_lora_rank, cfg.n_heads * cfg.head_dim, fp8, dt)
        self.wkv = Linear(cfg.dim, cfg.head_dim, fp8, dt)
        self.kv_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, dt)
        self.wo_a = Linear(cfg.n_heads * cfg.head_dim // cfg.o_groups, cfg.o_groups * cfg.o_lora_rank, False, dt)
        self.wo_b = Linear(cfg.o_groups * cfg.o_lora_rank, cfg.dim, fp8, dt)
        self.attn_sink = zeros_param((cfg.n_heads,), "attn_sink", dt)
        cos, sin = rope_tables(cfg, compressed=self.ratio > 0)
        self.cos, self.sin = Tensor(cos.astype(dt)), Tensor(sin.astype(dt))
        self.compressor = Compressor(cfg, self.ratio, cfg.head_dim, rotate=False) if self.ratio else None
        self.indexer = Indexer(cfg, fp8) if self.ratio == 4 else None
        self.core = SinkAttention(self.scale, self.mdt)
        self.use_kernels = cfg.custom_ops
        self.n_comp = cfg.max_seq_len // self.ratio if self.ratio else 0
        if self.use_kernels:
            from custom_ops import ms_ops
            from custom_ops.sparse_fp8_decode.binding import NO_EXTRA_CACHE
            self.kv_pack = ms_ops.kv_pack_fp8_op()
            self.sparse_attn = ms_ops.sparse_fp8_decode_op(self.scale)
            self.no_extra = Tensor(NO_EXTRA_CACHE)

    # ---- state -------------------------------------------------------------------------
    def initial_state(self, batch: int):
        """Numpy arrays of the decode state (see module docstring)."""
        cfg = self.cfg
        if self.use_kernels:
            state = [np.zeros(page_pool_shape(batch, self.window), np.uint8)]
        else:
            state = [np.zeros((batch, self.window, self.head_dim), self.dt)]
        if self.ratio:
            state += list(self.compressor.initial_state(batch))
            if self.use_kernels:
                state.append(np.zeros(page_pool_shape(batch, self.n_comp), np.uint8))
            else:
                state.append(np.zeros((batch, self.n_comp, self.head_dim), self.dt))
        if self.indexer is not None:
            state += list(self.indexer.compressor.initial_state(batch))
            state.append(np.zeros((batch, cfg.max_seq_len // 4, cfg.index_head_dim), self.dt))
        return state

    @property
    def n_state(self) -> int:
        return 1 + (3 if self.ratio else 0) + (3 if self.indexer is not None else 0)

    # ---- shared pieces -----------------------------------------------------------------
    def _qkv(self, x, cos, sin):
        """x [b, s, dim] -> q [b, s, h, hd], qr [b, s, q_lora], kv [b, s, hd] (rope'd, fp8-simulated)."""
        b, s, _ = x.shape
        rd = self.rd
        qr = self.q_norm(self.wq_a(x))
        q = rms_normalize(self.wq_b(qr).reshape(b, s, self.n_heads, self.head_dim), self.eps)
        q = ops.concat((q[..., :-rd], apply_rope(q[..., -rd:], cos.expand_dims(-2), sin.expand_dims(-2))), -1)
        kv = self.kv_norm(self.wkv(x))
        kv = ops.concat((fp8_quant_dequant(kv[..., :-rd], 64), apply_rope(kv[..., -rd:], cos, sin)), -1)
        return q, qr, kv

    def _output(self, o, cos, sin):
        """o [b, s, h, hd]: inverse RoPE, grouped wo_a, then wo_b -> [b, s, dim]."""
        b, s = o.shape[0], o.shape[1]
        rd = self.rd
        o = ops.concat((o[..., :-rd], apply_rope(o[..., -rd:], cos.expand_dims(-2), sin.expand_dims(-2), True)), -1)
        o = o.reshape(b, s, self.groups, -1).swapaxes(1, 2)              # [b, g, s, h*hd/g]
        wo_a = self.wo_a.weight.reshape(self.groups, self.o_rank, -1)    # [g, r, h*hd/g]
        o = ops.matmul(o, wo_a.swapaxes(-1, -2).expand_dims(0))          # [b, g, s, r]
        return self.wo_b(o.swapaxes(1, 2).reshape(b, s, self.groups * self.o_rank))

    # ---- prefill -----------------------------------------------------------------------
    def prefill(self, x):
        """x [b, s, dim] (start_pos 0) -> (out [b, s, dim], decode state tuple)."""
        b, s, _ = x.shape
        W = self.window
        cos, sin = self.cos[:s], self.sin[:s]
        q, qr, kv = self._qkv(x, cos, sin)
        t = ops.arange(s).reshape(s, 1)
        j = ops.arange(s).reshape(1, s)
        mask = ops.logical_and(j <= t, j > t - W).expand_dims(0).broadcast_to((b, s, s))
        keys = kv
        state = []
        if self.ratio:
            entries, kv_state, score_state = self.compressor.prefill(x, self.cos, self.sin)
            cache = ops.zeros((b, self.cfg.max_seq_len // self.ratio, self.head_dim), self.mdt)
            if entries is not None:
                keys = ops.concat((kv, entries), 1)
                cache = ops.concat((entries, cache[:, entries.shape[1]:]), 1)
            state = [kv_state, score_state, cache]
            if self.indexer is not None:
                sel, ikv, iscore, ikeys = self.indexer.prefill(x, qr, self.cos, self.sin)
                icache = ops.zeros((b, self.cfg.max_seq_len // 4, self.cfg.index_head_dim), self.mdt)
                if ikeys is not None:
                    icache = ops.concat((ikeys, icache[:, ikeys.shape[1]:]), 1)
                state += [ikv, iscore, icache]
            if entries is not None:
                if self.indexer is None:
                    n = entries.shape[1]
                    visible = ops.arange(n).reshape(1, n) < (t + 1) // self.ratio
                    sel = visible.expand_dims(0).broadcast_to((b, s, n))
                mask = ops.concat((mask, sel), -1)
        o = self.core(q, keys, mask, self.attn_sink)
        ring = self._prefill_ring(kv)
        if self.use_kernels:
            ring = self._pack_rows(ring)
            if self.ratio:
                state[2] = self._pack_rows(state[2])
        return self._output(o, cos, sin), tuple([ring] + state)

    def _pack_rows(self, x):
        """x [b, n, hd] -> a fresh MODEL1 pool with row r's token j in slot r*n + j (kv_pack_fp8)."""
        b, n, d = x.shape
        pool = ops.zeros(page_pool_shape(b, n), ms.uint8)
        slots = ops.arange(b * n).astype(ms.int32)
        return self.kv_pack(pool, x.reshape(b * n, d).astype(ms.float32), slots)

    def _prefill_ring(self, kv):
        """Place the last W tokens of kv [b, s, hd] at ring slots t % W."""
        b, s, d = kv.shape
        W = self.window
        if s <= W:
            if s == W:
                return kv
            return ops.concat((kv, ops.zeros((b, W - s, d), self.mdt)), 1)
        last = kv[:, s - W:]
        c = s % W
        if c == 0:
            return last
        return ops.concat((last[:, W - c:], last[:, :W - c]), 1)

    # ---- decode ------------------------------------------------------------------------
    def decode(self, x, pos, state):
        """One token x [b, 1, dim] at position pos (int32 scalar) -> (out, new state tuple)."""
        b = x.shape[0]
        W = self.window
        cos = ops.gather(self.cos, pos, 0).reshape(1, -1)
        sin = ops.gather(self.sin, pos, 0).reshape(1, -1)
        q, qr, kv = self._qkv(x, cos, sin)
        if self.use_kernels:
            return self._decode_paged(x, pos, state, q, qr, kv, cos, sin)
        ring = state[0]
        slot = (ops.arange(W) == pos % W).reshape(1, W, 1)
        ring = mint.where(slot, kv.broadcast_to(ring.shape), ring)
        keys = ring
        mask = (ops.arange(W) <= pos).reshape(1, W).broadcast_to((b, W))
        new_state = [ring]
        if self.ratio:
            cache, kv_state, score_state = self.compressor.decode(x, pos, state[1], state[2], state[3],
                                                                  self.cos, self.sin)
            n = cache.shape[1]
            if self.indexer is not None:
                sel, icache, ikv, iscore = self.indexer.decode(x, qr, pos, state[4], state[5], state[6],
                                                              self.cos, self.sin)
            else:
                sel = (ops.arange(n) < (pos + 1) // self.ratio).reshape(1, n).broadcast_to((b, n))
            keys = ops.concat((ring, cache), 1)
            mask = ops.concat((mask, sel), -1)
            new_state += [kv_state, score_state, cache]
            if self.indexer is not None:
                new_state += [ikv, iscore, icache]
        o = self.core(q, keys, mask.expand_dims(1), self.attn_sink)
        return self._output(o, cos, sin), tuple(new_state)

    def _decode_paged(self, x, pos, state, q, qr, kv, cos, sin):
        """decode() on the FP8 page pools: kv_pack_fp8 writes the new token (and entry), then
        sparse_fp8_decode attends the visible window slots and the visible / selected entries."""
        b, W, hd = x.shape[0], self.window, self.head_dim
        f32, i32 = ms.float32, ms.int32
        none = Tensor(-1, i32)
        rows = ops.arange(b).astype(i32).reshape(b, 1)                               # [b, 1]
        ring = self.kv_pack(state[0], kv.reshape(b, hd).astype(f32), (rows * W + pos % W).reshape(b))
        j = ops.arange(W).astype(i32).reshape(1, W)
        ring_idx = mint.where(j <= pos, rows * W + j, none)                         # [b, W]
        new_state = [ring]
        extra, extra_idx = self.no_extra, ops.full((b, 1), -1, dtype=i32)
        if self.ratio:
            m, n = self.ratio, self.n_comp
            entry, emit, kv_state, score_state = self.compressor.step(x, pos, state[1], state[2],
                                                                      self.cos, self.sin)  # [b, hd]
            cslot = mint.where(emit, rows * n + pos // m, none).reshape(b)
            extra = self.kv_pack(state[3], entry.astype(f32), cslot)
            if self.indexer is not None:
                sel, icache, ikv, iscore = self.indexer.decode(x, qr, pos, state[4], state[5], state[6],
                                                               self.cos, self.sin)
            else:
                sel = (ops.arange(n) < (pos + 1) // m).reshape(1, n).broadcast_to((b, n))
            jn = ops.arange(n).astype(i32).reshape(1, n)
            extra_idx = mint.where(sel, rows * n + jn, none)                           # [b, n]
            new_state += [kv_state, score_state, extra]
            if self.indexer is not None:
                new_state += [ikv, iscore, icache]
        out, _ = self.sparse_attn(q.reshape(b, self.n_heads, hd).astype(f32), ring, ring_idx, extra, extra_idx,
                                  self.attn_sink.astype(f32))
        o = out.reshape(b, 1, self.n_heads, hd).astype(self.mdt)
        return self._output(o, cos, sin), tuple(new_state)
