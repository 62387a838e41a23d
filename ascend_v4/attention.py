"""MQA attention with sliding window, compressed entries and attention sink (V4_SPEC section 4).

One 512-wide KV head serves as key and value. A query at position t attends the last
window_size raw tokens plus compressed entries: all visible ones (ratio 128, HCA) or the
indexer's top-k (ratio 4, CSA). The layer's state is declared by `state_spec()` (window ring,
compressor partial block, compressed entries, indexer slots); `extend` appends n tokens per row at
per-row positions: prefill (from 0, in chunks), decode (n = 1) and verification are all extend.
With custom_ops (RuntimeConfig) the window ring and the compressed entries are FP8 MODEL1 page pools shared by
the batch (see ascend_v4/state.py), written by kv_pack_fp8 and attended with sparse_fp8_decode.
"""
from __future__ import annotations

import weakref

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.compressor import Compressor, write_entries
from ascend_v4.config import ModelConfig
from ascend_v4.indexer import Indexer
from ascend_v4.checkpoint.schema import linear_kind
from ascend_v4.linear import Linear, dense, grouped_product, paired_product, weight_pair, zeros_param
from ascend_v4.parallel.comm import GroupGather, GroupSum
from ascend_v4.kernels import FUSED_ATTENTION_MACS, FusedSinkAttention, KVEntryRound, Rope
from ascend_v4.numerics import Normalize, RMSNorm, dot_rows, sum_last
from ascend_v4.precision import ms_dtype, np_dtype
from ascend_v4.rope import rope_frequencies, rope_tables
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.state import DENSE, PAGE_BLOCK, PAGES, TABLE, TIERED, StateSlot, StateSpec, page_pool_shape

NEG_INF = float("-inf")


def sink_attention(q, keys, mask, sink, scale: float):
    """q [b, s, h, d], keys [b, n, d], mask [b, s, n] bool, sink [h] -> o [b, s, h, d].

    o_h = sum_e exp(z_e - m) k_e / (sum_e exp(z_e - m) + exp(sink_h - m)).
    """
    b, s, h, d = q.shape
    # one [s*h, d] x [d, n] product per row: the keys are shared by every query and head (MQA);
    # a broadcast matmul over s would first copy the keys s times ([b, s, d, n])
    z = dot_rows(q.reshape(b, s * h, d), keys).reshape(b, s, h, -1) * scale          # [b, s, h, n]
    mask = mask.expand_dims(2)
    z = mint.where(mask, z, NEG_INF)
    sink = sink.reshape(1, 1, -1, 1)
    m = ops.maximum(z.max(-1, keepdims=True), sink)
    p = mint.where(mask, ops.exp(z - m), 0.0)
    denom = sum_last(p) + ops.exp(sink - m)
    return ops.matmul(p.reshape(b, s * h, -1), keys).reshape(b, s, h, d) / denom


class SinkAttention(nn.Cell):
    """The sparse-attention operator boundary (`sparse_fp8_decode` on Ascend): one named scope
    around sink_attention's primitives (what graph export carries). Small calls (decode) under
    kernels 'fused' do not come here: Attention runs them as one kernel over the key segments."""

    def __init__(self, scale: float, dtype=ms.float32):
        super().__init__()
        # a tensor of the compute dtype: a Python float would enter the graph as float32
        self.scale = Tensor(scale, dtype)

    def construct(self, q, keys, mask, sink):
        return sink_attention(q, keys, mask, sink, self.scale)


def window_geometry(start, count, n: int, W: int):
    """Where a chunk of n tokens per row sits against a sliding window of W: the same for every
    layer of one step, so Transformer.extend computes it once. start / count [b] int32 ->
    pos [b, n] (the tokens' positions), ring_vis [b, n, W] (ring slot j, holding position
    start - 1 - ((start - 1 - j) mod W), is in token k's window), chunk_vis [b, n, n] (causal within
    the window, real tokens only), ring_src [b*W] (the flat chunk row [b*n] ring slot j takes: the
    last real token with (start + k) mod W == j) and ring_hit [b, W, 1] (slot j takes one)."""
    b = start.shape[0]
    k = ops.arange(n, dtype=ms.int32).reshape(1, n)
    st, cnt = start.reshape(b, 1), count.reshape(b, 1)
    pos = st + k                                                               # [b, n]
    j = ops.arange(W, dtype=ms.int32).reshape(1, W)
    held = (st - 1 - (st - 1 - j) % W).expand_dims(1)                          # [b, 1, W]
    ring_vis = ops.logical_and(held >= 0, held > pos.expand_dims(-1) - W)
    i = ops.arange(n, dtype=ms.int32).reshape(n, 1)
    causal = ops.logical_and(k <= i, k > i - W).expand_dims(0)                 # [1, n, n]
    chunk_vis = ops.logical_and(causal, (k < cnt).expand_dims(1))
    last = cnt - 1 - (st + cnt - 1 - j) % W                                    # [b, W]
    ring_src = (ops.clamp(last, 0, n - 1) + (ops.arange(b, dtype=ms.int32) * n).reshape(b, 1)).reshape(-1)
    return pos, ring_vis, chunk_vis, ring_src, (last >= 0).expand_dims(-1)


# (frequencies, length, dtype) -> the (cos, sin) Tensors every layer of that kind holds
_ROPE_TABLES: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def shared_rope_tables(cfg: ModelConfig, compressed: bool, max_seq_len: int, dtype):
    """rope.rope_tables as Tensors of `dtype` [max_seq_len, rd/2], one pair per process for equal
    frequencies, length and dtype -> a pair with .cos / .sin. The layers of a kind then hold the
    same constants, so a model keeps two pairs instead of one per layer (each layer still gathers
    its own rows: MindSpore does not merge the gathers, measured). Cached while a layer holds it."""
    key = (rope_frequencies(cfg, compressed).tobytes(), max_seq_len, np.dtype(dtype).str)
    pair = _ROPE_TABLES.get(key)
    if pair is None:
        cos, sin = rope_tables(cfg, compressed, max_seq_len)
        pair = _TablePair(Tensor(cos.astype(dtype)), Tensor(sin.astype(dtype)))
        _ROPE_TABLES[key] = pair
    return pair


class _TablePair:
    """A weakly cached (cos, sin) pair (a tuple cannot be weakly referenced)."""

    def __init__(self, cos, sin):
        self.cos, self.sin = cos, sin


class Attention(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, layer_id: int):
        super().__init__()
        self.cfg, self.rt, self.layer_id = cfg, rt, layer_id
        self.ratio = cfg.compress_ratios[layer_id]
        par = rt.parallel                     # tensor parallel: this rank's heads and output groups
        self.n_heads, self.head_dim, self.rd = cfg.n_heads // par.tp, cfg.head_dim, cfg.rope_head_dim
        self.window, self.eps = cfg.window_size, cfg.norm_eps
        self.groups, self.o_rank = cfg.o_groups // par.tp, cfg.o_lora_rank
        self.scale = cfg.head_dim ** -0.5
        lin_a, lin = linear_kind(cfg, "attn_a"), linear_kind(cfg, "attn")
        self.dt, self.mdt = np_dtype(rt), ms_dtype(rt)
        dt = self.dt
        self.wq_a = Linear(cfg.dim, cfg.q_lora_rank, lin_a, rt)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps, dt, rt.kernels)
        self.wq_b = Linear(cfg.q_lora_rank, self.n_heads * cfg.head_dim, lin, rt)
        self.wkv = Linear(cfg.dim, cfg.head_dim, lin_a, rt)
        self.kv_norm = RMSNorm(cfg.head_dim, cfg.norm_eps, dt, rt.kernels)
        self.q_kv = weight_pair(self.wq_a, self.wkv)              # both products of x in one call (decode)
        self.q_head_norm = Normalize(cfg.norm_eps, dt, rt.kernels)                # per head, no weight
        self.rope, self.inverse_rope = Rope(rt, cfg.rope_head_dim), Rope(rt, cfg.rope_head_dim, inverse=True)
        # wo_a: BF16 in the release (no activation quantisation), MXFP8 in the 950's mxfp8 scheme
        self.wo_a = Linear(cfg.n_heads * cfg.head_dim // cfg.o_groups, self.groups * cfg.o_lora_rank,
                           cfg.quantization.get("attn_o", "bf16"), rt)
        self.wo_b = Linear(self.groups * cfg.o_lora_rank, cfg.dim, lin, rt)
        self.attn_sink = zeros_param((self.n_heads,), "attn_sink", dt)
        self.tp_out = TensorParallelOutput(self.wo_b, par) if par.tp > 1 else None
        self.kv_round = KVEntryRound(rt, cfg.rope_head_dim, cfg.head_dim)   # the KV cache's format (rt.kv_cache)
        self.rope_pair = shared_rope_tables(cfg, self.ratio > 0, rt.max_seq_len, dt)   # held: keeps it shared
        self.cos, self.sin = self.rope_pair.cos, self.rope_pair.sin
        self.compressor = Compressor(cfg, rt, self.ratio, cfg.head_dim, rotate=False) if self.ratio else None
        self.indexer = Indexer(cfg, rt, lin) if self.ratio == 4 else None
        self.core = SinkAttention(self.scale, self.mdt)
        self.fused_core = FusedSinkAttention(self.scale) if rt.kernels == "fused" else None
        self.use_kernels = rt.custom_ops
        self.n_comp = rt.max_seq_len // self.ratio if self.ratio else 0
        self.tiered = self.ratio == 4 and rt.kv_budget is not None   # entries in the tiered cache
        if self.use_kernels:
            from custom_ops import ms_ops
            from custom_ops.sparse_fp8_decode.binding import NO_EXTRA_CACHE
            self.kv_pack = ms_ops.kv_pack_fp8_op()
            self.sparse_attn = ms_ops.sparse_fp8_decode_op(self.scale)
            self.no_extra = Tensor(NO_EXTRA_CACHE)
        spec = self.state_spec()
        self.slot = spec.positions()                 # slot name -> position in this layer's state
        self.n_state = len(spec)
        self.state_names = tuple(spec.names)

    # ---- state -------------------------------------------------------------------------
    @staticmethod
    def spec_for(cfg: ModelConfig, rt: RuntimeConfig, layer_id: int) -> StateSpec:
        """window ring [W, hd]; if ratio: compressor partial block, compressed entries
        [max_seq/ratio, hd]; if ratio 4: the indexer's slots. With custom_ops the window and the
        entries are MODEL1 FP8 page pools (layout model1_pages). With a kv_budget the ratio-4 entries
        are the device tier (model1_tiered) with their page table and the pages the last call
        selected (`entries_used` [pages] int32, read by the tier manager)."""
        ratio, hd, paged = cfg.compress_ratios[layer_id], cfg.head_dim, rt.custom_ops
        spec = StateSpec()
        layout, dt = (PAGES, np.uint8) if paged else (DENSE, np_dtype(rt))
        spec.add(StateSlot("window", (cfg.window_size,) if paged else (cfg.window_size, hd), dt, 0.0, layout))
        if ratio:
            n = rt.max_seq_len // ratio
            spec.include("compressor.", Compressor.spec_for(ratio, hd, np_dtype(rt)))
            if ratio == 4 and rt.kv_budget is not None:
                from ascend_v4.kv_tiers.budget import tier_plan
                plan = tier_plan(cfg, rt)
                spec.add(StateSlot("entries", (n,), np.uint8, 0.0, TIERED, blocks=plan.device_pages))
                spec.add(StateSlot("entries_table", (plan.max_pages,), np.int32, -1.0, TABLE))
                spec.add(StateSlot("entries_used", (plan.max_pages,), np.int32, 0.0))
            else:
                spec.add(StateSlot("entries", (n,) if paged else (n, hd), dt, 0.0, layout, per_tokens=ratio))
        if ratio == 4:
            spec.include("indexer.", Indexer.spec_for(cfg, rt))
        return spec

    def state_spec(self) -> StateSpec:
        return Attention.spec_for(self.cfg, self.rt, self.layer_id)

    # ---- shared pieces -----------------------------------------------------------------
    def _qkv(self, x, cos, sin):
        """x [b, s, dim] -> q [b, s, h, hd], qr [b, s, q_lora], kv [b, s, hd] (rope'd, rounded as the
        KV cache stores it)."""
        b, s, _ = x.shape
        q_low, kv = paired_product(self.q_kv, x, self.wq_a, self.wkv)
        qr = self.q_norm(q_low)
        q = self.rope(self.q_head_norm(self.wq_b(qr).reshape(b, s, self.n_heads, self.head_dim)), cos, sin)
        kv = self.kv_round(self.rope(self.kv_norm(kv), cos, sin))
        return q, qr, kv

    def _output(self, o, cos, sin):
        """o [b, s, h, hd]: inverse RoPE, grouped wo_a, then wo_b -> [b, s, dim]."""
        b, s = o.shape[0], o.shape[1]
        o = self.inverse_rope(o, cos, sin)
        o = o.reshape(b * s, self.groups, -1)                                    # [b*s, g, h*hd/g]
        if self.wo_a.act_quant:                                                  # MXFP8 wo_a: per group
            o = self.wo_a.quant(o)
        o = grouped_product(o, self.wo_a)                                        # [b*s, g, r]
        o = o.reshape(b, s, self.groups * self.o_rank)
        return self.tp_out(o) if self.tp_out is not None else self.wo_b(o)

    # ---- extend ------------------------------------------------------------------------
    def extend(self, x, rows, start, count, state, geometry=None):
        """Append tokens x [b, n, dim] to b sequences: row i's token k sits at position
        start[i] + k and is real iff k < count[i] (count 0: the row is idle, its state unchanged).
        rows [b]: the batch rows of the sequences (addresses in the shared page pools).
        state: this layer's slots in state_spec() order. geometry: window_geometry(start, count,
        n, window), computed once per step for all layers (None: here). -> (out [b, n, dim], new state)."""
        b, n, _ = x.shape
        if geometry is None:
            geometry = window_geometry(start, count, n, self.window)
        pos, ring_vis, chunk_vis, ring_src, ring_hit = geometry
        pc = ops.clamp(pos, 0, self.cos.shape[0] - 1)
        cos, sin = ops.gather(self.cos, pc, 0), ops.gather(self.sin, pc, 0)   # [b, n, rd/2]
        q, qr, kv = self._qkv(x, cos, sin)
        if self.ratio:
            sel, entries, complete, comp = self._compress(x, qr, start, count, pos, cos, sin, state)
            if self.use_kernels:
                return self._extend_paged(rows, start, count, pos, q, kv, cos, sin, ring_vis, chunk_vis,
                                          sel, entries, complete, state, comp)
            return self._extend_dense(start, q, kv, cos, sin, ring_vis, chunk_vis, ring_src, ring_hit, sel,
                                      entries, complete, state, comp)
        if self.use_kernels:
            return self._extend_paged(rows, start, count, pos, q, kv, cos, sin, ring_vis, chunk_vis,
                                      None, None, None, state, ())
        return self._extend_dense(start, q, kv, cos, sin, ring_vis, chunk_vis, ring_src, ring_hit, None, None,
                                  None, state, ())

    def _compress(self, x, qr, start, count, pos, cos, sin, state):
        """Advance the compressor (and indexer) -> (selected entries [b, n, N] bool, candidate
        entries [b, nb, hd], complete [b, nb], (slot name, new value) pairs)."""
        c0 = self.slot["compressor.kv"]
        entries, complete, kv_s, sc_s = self.compressor.extend(x, start, count, state[c0], state[c0 + 1],
                                                               self.cos, self.sin)
        comp = (("compressor.kv", kv_s), ("compressor.score", sc_s))
        if self.indexer is not None:
            i0 = self.slot["indexer.compressor.kv"]
            sel, ikv, isc, ikeys = self.indexer.extend(x, qr, start, count, pos, cos, sin, state[i0],
                                                       state[i0 + 1], state[i0 + 2], self.cos, self.sin)
            comp = comp + (("indexer.compressor.kv", ikv), ("indexer.compressor.score", isc),
                           ("indexer.keys", ikeys))
            return sel, entries, complete, comp
        sel = ops.arange(self.n_comp, dtype=ms.int32).reshape(1, 1, -1) < ((pos + 1) // self.ratio).expand_dims(-1)
        return sel, entries, complete, comp

    def _assemble(self, updates):
        """(slot name, value) pairs -> the layer's state tuple in state_spec() order."""
        values = {}
        for name, value in updates:
            values[name] = value
        out = ()
        for name in self.state_names:
            out = out + (values[name],)
        return out

    def _attend(self, q, keys, masks):
        """q [b, n, h, hd] over the key segments keys [b, n_g, hd] / masks [b, n, n_g] (ring, chunk,
        entries) -> o [b, n, h, hd]: up to FUSED_ATTENTION_MACS multiply-adds one kernel reads the
        segments in place (kernels 'fused'), else the boundary cell on their concatenation."""
        b, s, h, d = q.shape
        n = 0
        for k in keys:
            n += k.shape[1]
        if self.fused_core is not None and b * s * h * d * n <= FUSED_ATTENTION_MACS:
            return self.fused_core(q, keys, masks, self.attn_sink)
        return self.core(q, ops.concat(keys, 1), ops.concat(masks, -1), self.attn_sink)

    def _extend_dense(self, start, q, kv, cos, sin, ring_vis, chunk_vis, ring_src, ring_hit, sel, entries,
                      complete, state, comp):
        """extend() on dense slots: attend [ring, chunk, entries] under the visibility mask, then
        write the chunk's last W tokens into the ring."""
        b, n = kv.shape[0], kv.shape[1]
        W, st = self.window, self.slot
        ring = state[st["window"]]
        keys, mask = (ring, kv), (ring_vis, chunk_vis)
        if self.ratio:
            cache = write_entries(state[st["entries"]], entries, complete, start // self.ratio)
            comp = comp + (("entries", cache),)
            keys, mask = keys + (cache,), mask + (sel,)
        o = self._attend(q, keys, mask)
        # ring slot j takes the last real chunk token with (start + k) % W == j, if any (geometry)
        written = ops.gather(kv.reshape(b * n, -1), ring_src, 0).reshape(b, W, -1)
        ring = mint.where(ring_hit, written, ring)
        return self._output(o, cos, sin), self._assemble(comp + (("window", ring),))

    def _extend_paged(self, rows, start, count, pos, q, kv, cos, sin, ring_vis, chunk_vis, sel, entries,
                      complete, state, comp):
        """extend() on the FP8 page pools: kv_pack_fp8 writes the chunk's last W tokens (and the
        completed entries), sparse_fp8_decode attends. For n > 1 the queries read the old ring and
        the chunk from one temporary pool (old pool + the packed chunk) so that no query sees a
        ring slot the chunk has overwritten."""
        b, n = pos.shape
        W, hd, st = self.window, self.head_dim, self.slot
        f32, i32 = ms.float32, ms.int32
        none = Tensor(-1, i32)
        r = rows.astype(i32).reshape(b, 1)
        cnt = count.astype(i32).reshape(b, 1)
        k = ops.arange(n, dtype=ms.int32).reshape(1, n)
        ring = state[st["window"]]
        # the last W real tokens of the chunk go to ring slots (start + k) % W
        keep = ops.logical_and(k < cnt, k >= cnt - W)
        ring_slots = mint.where(keep, r * W + (start.astype(i32).reshape(b, 1) + k) % W, none)
        j = ops.arange(W, dtype=ms.int32).reshape(1, 1, W)
        if n == 1:
            new_ring = self.kv_pack(ring, kv.reshape(b, hd).astype(f32), ring_slots.reshape(b))
            vis = ops.logical_or(ring_vis, ops.logical_and(
                (j == (start.astype(i32).reshape(b, 1, 1) % W)), (cnt > 0).reshape(b, 1, 1)))
            read_pool, idx = new_ring, mint.where(vis, r.reshape(b, 1, 1) * W + j, none)      # [b, 1, W]
        else:
            chunk = self.kv_pack(ops.zeros(page_pool_shape(b, n), ms.uint8), kv.reshape(b * n, hd).astype(f32),
                                 ops.arange(b * n, dtype=ms.int32))
            read_pool = ops.concat((ring, chunk), 0)
            offset = ring.shape[0] * PAGE_BLOCK
            ring_idx = mint.where(ring_vis, r.reshape(b, 1, 1) * W + j, none)                    # [b, n, W]
            local = ops.arange(b, dtype=ms.int32).reshape(b, 1, 1) * n + k.reshape(1, 1, n)   # chunk pool slots
            chunk_idx = mint.where(chunk_vis, offset + local, none)                             # [b, n, n]
            idx = ops.concat((ring_idx, chunk_idx), -1)
            new_ring = self.kv_pack(ring, kv.reshape(b * n, hd).astype(f32), ring_slots.reshape(b * n))
        comp = comp + (("window", new_ring),)
        extra, extra_idx = self.no_extra, ops.full((b, n, 1), -1, dtype=i32)
        if self.ratio:
            m, n_comp = self.ratio, self.n_comp
            nb = entries.shape[1]
            jb = ops.arange(nb, dtype=ms.int32).reshape(1, nb)
            block = (start.astype(i32) // m).reshape(b, 1) + jb
            if self.tiered:
                extra, extra_idx, tier = self._tiered_entries(r, k < cnt, block, sel, entries, complete, state)
                comp = comp + tier
            else:
                cslots = mint.where(complete, r * n_comp + block, none)
                extra = self.kv_pack(state[st["entries"]], entries.reshape(b * nb, hd).astype(f32),
                                     cslots.reshape(b * nb))
                comp = comp + (("entries", extra),)
                e = ops.arange(n_comp, dtype=ms.int32).reshape(1, 1, n_comp)
                extra_idx = mint.where(sel, r.reshape(b, 1, 1) * n_comp + e, none)             # [b, n, N]
        out, _ = self.sparse_attn(q.reshape(b * n, self.n_heads, hd).astype(f32), read_pool,
                                  idx.reshape(b * n, -1), extra, extra_idx.reshape(b * n, -1),
                                  self.attn_sink.astype(f32))
        o = out.reshape(b, n, self.n_heads, hd).astype(self.mdt)
        return self._output(o, cos, sin), self._assemble(comp)

    def _tiered_entries(self, r, valid, block, sel, entries, complete, state):
        """The compressed entries in the device tier: entry e of row r sits at pool slot
        table[r, e // 64] * 64 + e % 64 (-1: the page is not resident, nothing is written or read).
        r [b, 1] rows, valid [b, n] real queries, block [b, nb] entry index of each candidate,
        sel [b, n, N] the indexer's top-k -> (pool, compact indices [b, n, K] ascending as the
        mask order, so the kernel folds the same entries in the same order, (name, value) pairs:
        the pool, the table passed through, `entries_used` [b, pages] = pages the queries selected)."""
        b, n, N = sel.shape
        nb, hd = entries.shape[1], self.head_dim
        i32, none, st = ms.int32, Tensor(-1, ms.int32), self.slot
        table = state[st["entries_table"]]                                        # [B, pages]
        pages = table.shape[1]
        flat = table.reshape(-1)

        def device_slot(row, e):
            """row, e (entry, >= 0) broadcastable int32 -> pool slot or -1 (page not resident)."""
            page = ops.clamp(e // PAGE_BLOCK, 0, pages - 1)
            blk = ops.gather(flat, row * pages + page, 0)
            return mint.where(blk >= 0, blk * PAGE_BLOCK + e % PAGE_BLOCK, none)

        cslots = mint.where(complete, device_slot(r, block), none)                 # [b, nb]
        pool = self.kv_pack(state[st["entries"]], entries.reshape(b * nb, hd).astype(ms.float32),
                            cslots.reshape(b * nb))
        # top-k mask -> compact ascending entry indices: N - e is largest for the lowest e
        K = min(self.cfg.index_topk, N)
        e = ops.arange(N, dtype=ms.int32).reshape(1, 1, N)
        key = mint.where(ops.logical_and(sel, valid.expand_dims(-1)), (N - e).astype(ms.float32), 0.0)
        top, _ = ops.topk(key, K)                                                  # [b, n, K] descending
        chosen = top > 0
        idx_e = mint.where(chosen, N - top.astype(i32), none)                      # entry ids, -1 = none
        slots = mint.where(chosen, device_slot(r.reshape(b, 1, 1), ops.maximum(idx_e, 0)), none)
        page_of = mint.where(chosen, idx_e // PAGE_BLOCK, none)
        hit = page_of.reshape(b, n * K, 1) == ops.arange(pages, dtype=ms.int32).reshape(1, 1, pages)
        used = hit.astype(i32).max(1)                                              # [b, pages]
        return pool, slots, (("entries", pool), ("entries_table", table), ("entries_used", used))


class TensorParallelOutput(nn.Cell):
    """wo_b split along its input dim over the TP group: each rank multiplies its slice of the
    grouped output [b, s, w] and the partial products are summed over the group.

    The release quantises wo_b's input in tiles of 128 along that dim; when a rank's slice is not
    whole tiles (w % 128), the slices are gathered and the full row is quantised first, so every
    rank quantises exactly as one process does."""

    def __init__(self, wo_b: Linear, par):
        super().__init__()
        self.wo_b = wo_b
        self.tp, self.index = par.tp, par.tp_index
        self.sum = GroupSum(par.tp_members(), par.world)
        self.gather = GroupGather(par.tp_members(), par.world) \
            if wo_b.act_quant and wo_b.shape[1] % wo_b.act_block else None

    def construct(self, o):
        if self.gather is None:
            return self.sum(self.wo_b(o))
        w = o.shape[-1]
        parts = self.gather(o)                                                  # [tp, b, s, w]
        full = self.wo_b.quant(ops.concat([parts[i] for i in range(self.tp)], -1))
        mine = full[..., self.index * w:(self.index + 1) * w]
        return self.sum(dense(mine, self.wo_b.dequantized(after=mine)))
