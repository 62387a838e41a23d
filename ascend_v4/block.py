"""Transformer block with mHC around attention and MoE, and the MTP block (V4_SPEC 3, 6)."""
from __future__ import annotations

from mindspore import nn, ops

from ascend_v4.attention import Attention
from ascend_v4.config import ModelConfig
from ascend_v4.linear import Linear
from ascend_v4.mhc import HcHead, HyperConnection
from ascend_v4.moe import MoE
from ascend_v4.numerics import RMSNorm
from ascend_v4.precision import np_dtype


class Block(nn.Cell):
    """X [b, s, n, d] -> X'. Each sublayer: u = pre(X); f = F(norm(u)); X = post(f, X)."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.attn = Attention(cfg, layer_id)
        self.ffn = MoE(cfg, layer_id)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps, np_dtype(cfg))
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, np_dtype(cfg))
        self.hc_attn = HyperConnection(cfg, "hc_attn")
        self.hc_ffn = HyperConnection(cfg, "hc_ffn")

    def _ffn(self, X, ids):
        u, post, comb = self.hc_ffn.pre(X)
        return self.hc_ffn.post(self.ffn(self.ffn_norm(u), ids), X, post, comb)

    def prefill(self, X, ids):
        u, post, comb = self.hc_attn.pre(X)
        f, state = self.attn.prefill(self.attn_norm(u))
        X = self.hc_attn.post(f, X, post, comb)
        return self._ffn(X, ids), state

    def decode(self, X, ids, pos, state):
        u, post, comb = self.hc_attn.pre(X)
        f, state = self.attn.decode(self.attn_norm(u), pos, state)
        X = self.hc_attn.post(f, X, post, comb)
        return self._ffn(X, ids), state


class MTPBlock(Block):
    """Multi-token prediction: X = e_proj(enorm(embed(ids)))[:, :, None] + h_proj(hnorm(H))."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__(cfg, layer_id)
        fp8, dt = cfg.dtype == "fp8", np_dtype(cfg)
        self.e_proj = Linear(cfg.dim, cfg.dim, fp8, dt)
        self.h_proj = Linear(cfg.dim, cfg.dim, fp8, dt)
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps, dt)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps, dt)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, dt)
        self.hc_head = HcHead(cfg, "hc_head")

    def inputs(self, H, emb):
        """H [b, s, n, d], emb [b, s, d] -> X [b, s, n, d]."""
        return self.e_proj(self.enorm(emb)).expand_dims(2) + self.h_proj(self.hnorm(H))

    def prefill_hidden(self, H, emb, ids):
        """-> normalised final hidden [b, s, d] of the MTP block (before the shared head)."""
        X, _ = self.prefill(self.inputs(H, emb), ids)
        return self.norm(self.hc_head(X))
