"""Transformer block with mHC around attention and MoE, and the MTP block (V4_SPEC 3, 6)."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from ascend_v4.attention import Attention
from ascend_v4.checkpoint.schema import linear_kind
from ascend_v4.config import ModelConfig
from ascend_v4.engram_layer import Engram
from ascend_v4.linear import Linear
from ascend_v4.mhc import HcHead, HyperConnection
from ascend_v4.moe import MoE
from ascend_v4.numerics import RMSNorm
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.precision import dtype_of, np_dtype
from ascend_v4.state import PAGE_BLOCK, PAGES, TOKEN_BYTES


class Block(nn.Cell):
    """X [b, s, n, d] -> X'. Each sublayer: u = pre(X); f = F(norm(u)); X = post(f, X)."""

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, layer_id: int):
        super().__init__()
        self.attn = Attention(cfg, rt, layer_id)
        self.ffn = MoE(cfg, rt, layer_id)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps, np_dtype(rt), rt.kernels)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, np_dtype(rt), rt.kernels)
        self.hc_attn = HyperConnection(cfg, rt, "hc_attn")
        self.hc_ffn = HyperConnection(cfg, rt, "hc_ffn")
        # Engram (V4_SPEC 7) adds to the streams before the attention sublayer, as the Engram demo
        self.has_engram = layer_id in cfg.engram_layer_ids
        if self.has_engram:
            self.engram = Engram(cfg, rt)

    def _ffn(self, X, ids):
        u, post, comb = self.hc_ffn.pre(X)
        return self.hc_ffn.post(self.ffn(self.ffn_norm(u), ids), X, post, comb)

    def extend(self, X, ids, rows, start, count, state, engram_rows=None, geometry=None):
        """X [b, n, hc, d] of new tokens ids [b, n] (see Attention.extend) -> (X', new state).
        engram_rows [b, n, T * head_dim]: this block's e_t (Engram blocks only); geometry: the
        step's attention.window_geometry (None: the attention computes it)."""
        if self.has_engram:
            X = self.engram(X, engram_rows)
        u, post, comb = self.hc_attn.pre(X)
        f, state = self.attn.extend(self.attn_norm(u), rows, start, count, state, geometry)
        X = self.hc_attn.post(f, X, post, comb)
        return self._ffn(X, ids), state


class MTPBlock(Block):
    """Multi-token prediction: X = e_proj(enorm(embed(ids)))[:, :, None] + h_proj(hnorm(H))."""

    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig, layer_id: int):
        super().__init__(cfg, rt, layer_id)
        lin, dt = linear_kind(cfg, "attn"), np_dtype(rt)
        self.e_proj = Linear(cfg.dim, cfg.dim, lin, rt)
        self.h_proj = Linear(cfg.dim, cfg.dim, lin, rt)
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps, dt, rt.kernels)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps, dt, rt.kernels)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, dt, rt.kernels)
        self.hc_head = HcHead(cfg, rt, "hc_head")
        # the MTP block runs on a fresh window state each call: (paged, shape, fill, dtype) per slot
        self.fresh_slots = tuple((slot.layout == PAGES, tuple(slot.shape), slot.fill, dtype_of(slot))
                                 for slot in self.attn.state_spec())

    def inputs(self, H, emb):
        """H [b, s, n, d], emb [b, s, d] -> X [b, s, n, d]."""
        return self.e_proj(self.enorm(emb)).expand_dims(2) + self.h_proj(self.hnorm(H))

    def prefill_hidden(self, H, emb, ids):
        """-> normalised final hidden [b, s, d] of the MTP block (before the shared head)."""
        b, s = ids.shape
        zero = ops.zeros((b,), ms.int32)
        fresh = ()
        for paged, shape, fill, dtype in self.fresh_slots:
            full = ((b * shape[0] + PAGE_BLOCK - 1) // PAGE_BLOCK, PAGE_BLOCK * TOKEN_BYTES) if paged \
                else (b,) + shape
            fresh = fresh + (ops.full(full, fill, dtype=dtype),)
        X, _ = self.extend(self.inputs(H, emb), ids, ops.arange(b, dtype=ms.int32), zero,
                           ops.full((b,), s, dtype=ms.int32), fresh)
        return self.norm(self.hc_head(X))
