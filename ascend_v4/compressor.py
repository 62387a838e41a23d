"""KV compressor: gated softmax pooling of `ratio` tokens into one entry (V4_SPEC section 4).

With ratio 4 the windows overlap (c = 2): an entry pools the first head_dim channels of the
previous block's 4 tokens and the last head_dim channels of its own 4 tokens.
Decode keeps the partial block as state: kv_state / score_state [b, c*ratio, c*head_dim]
(with overlap: slots [:ratio] = previous block, [ratio:] = current block).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from ascend_v4.config import ModelConfig
from ascend_v4.linear import dense, zeros_param
from ascend_v4.numerics import RMSNorm, fp4_quant_dequant, fp8_quant_dequant, hadamard_matrix
from ascend_v4.precision import ms_dtype, np_dtype
from ascend_v4.rope import apply_rope

NEG_INF = float("-inf")


class Compressor(nn.Cell):
    """Builds compressed entries [b, n, head_dim] in prefill, one per full block in decode."""

    def __init__(self, cfg: ModelConfig, ratio: int, head_dim: int, rotate: bool):
        super().__init__()
        self.ratio, self.head_dim, self.rotate = ratio, head_dim, rotate
        self.overlap = ratio == 4
        self.coff = 2 if self.overlap else 1
        self.rd = cfg.rope_head_dim
        width = self.coff * head_dim
        self.dt, self.mdt = np_dtype(cfg), ms_dtype(cfg)
        self.ape = zeros_param((ratio, width), "ape", self.dt)
        self.wkv = zeros_param((width, cfg.dim), "wkv", self.dt)
        self.wgate = zeros_param((width, cfg.dim), "wgate", self.dt)
        self.norm = RMSNorm(head_dim, cfg.norm_eps, self.dt)
        if rotate:
            self.hadamard = Tensor(hadamard_matrix(head_dim, self.dt))

    def state_shapes(self, batch: int):
        """Shapes of (kv_state, score_state)."""
        shape = (batch, self.coff * self.ratio, self.coff * self.head_dim)
        return shape, shape

    def initial_state(self, batch: int):
        kv_shape, score_shape = self.state_shapes(batch)
        return (np.zeros(kv_shape, self.dt), np.full(score_shape, -np.inf, self.dt))

    def finish(self, entry, cos, sin):
        """entry [..., head_dim]: RMSNorm, RoPE on the last rd dims, then the QAT simulation."""
        entry = self.norm(entry)
        rd = self.rd
        entry = ops.concat((entry[..., :-rd], apply_rope(entry[..., -rd:], cos, sin)), -1)
        if self.rotate:  # indexer keys: Hadamard rotation then FP4 simulation
            return fp4_quant_dequant(ops.matmul(entry, self.hadamard), 32)
        return ops.concat((fp8_quant_dequant(entry[..., :-rd], 64), entry[..., -rd:]), -1)

    def _pool(self, kv, score, axis: int):
        return (kv * mint.softmax(score, axis)).sum(axis)

    def prefill(self, x, cos, sin):
        """x [b, s, dim]; cos/sin [max_seq_len, rd/2] -> entries [b, s//ratio, head_dim] or None,
        kv_state, score_state."""
        b, s, _ = x.shape
        m, d, c = self.ratio, self.head_dim, self.coff
        kv = dense(x, self.wkv)
        score = dense(x, self.wgate)
        cutoff = s - s % m
        n_blocks = cutoff // m
        entries = None
        if n_blocks > 0:
            kvb = kv[:, :cutoff].reshape(b, n_blocks, m, c * d)
            sb = score[:, :cutoff].reshape(b, n_blocks, m, c * d) + self.ape
            if self.overlap:
                prev_kv = ops.concat((ops.zeros((b, 1, m, d), self.mdt), kvb[:, :-1, :, :d]), 1)
                prev_s = ops.concat((ops.full((b, 1, m, d), NEG_INF, dtype=self.mdt), sb[:, :-1, :, :d]), 1)
                kvb = ops.concat((prev_kv, kvb[:, :, :, d:]), 2)
                sb = ops.concat((prev_s, sb[:, :, :, d:]), 2)
            pooled = self._pool(kvb, sb, 2)                       # [b, n_blocks, d]
            entries = self.finish(pooled, cos[:cutoff:m], sin[:cutoff:m])
        # decode state: previous full block (overlap) and the partial block
        kv_state = ops.zeros((b, c * m, c * d), self.mdt)
        score_state = ops.full((b, c * m, c * d), NEG_INF, dtype=self.mdt)
        parts_kv, parts_s = [], []
        if self.overlap:
            if n_blocks > 0:
                parts_kv.append(kv[:, cutoff - m:cutoff])
                parts_s.append(score[:, cutoff - m:cutoff] + self.ape)
            else:
                parts_kv.append(kv_state[:, :m])
                parts_s.append(score_state[:, :m])
        rem = s - cutoff
        if rem > 0:
            parts_kv.append(kv[:, cutoff:])
            parts_s.append(score[:, cutoff:] + self.ape[:rem])
        used = sum(p.shape[1] for p in parts_kv)
        if used < c * m:
            parts_kv.append(kv_state[:, used:])
            parts_s.append(score_state[:, used:])
        return entries, ops.concat(parts_kv, 1), ops.concat(parts_s, 1)

    def step(self, x, pos, kv_state, score_state, cos, sin):
        """One token x [b, 1, dim] at position `pos` (int32 scalar tensor) -> (entry [b, head_dim],
        emit (bool scalar: (pos + 1) % ratio == 0, the entry is valid), kv_state, score_state)."""
        m, d, c = self.ratio, self.head_dim, self.coff
        kv = dense(x, self.wkv)[:, 0]                               # [b, c*d]
        in_block = pos % m
        score = dense(x, self.wgate)[:, 0] + ops.gather(self.ape, in_block, 0)
        slot = (m if self.overlap else 0) + in_block
        hit = (ops.arange(c * m) == slot).reshape(1, c * m, 1)
        kv_state = mint.where(hit, kv.expand_dims(1).broadcast_to(kv_state.shape), kv_state)
        score_state = mint.where(hit, score.expand_dims(1).broadcast_to(score_state.shape), score_state)
        emit = (pos + 1) % m == 0
        if self.overlap:
            kv_win = ops.concat((kv_state[:, :m, :d], kv_state[:, m:, d:]), 1)
            s_win = ops.concat((score_state[:, :m, :d], score_state[:, m:, d:]), 1)
            entry = self._pool(kv_win, s_win, 1)
            kv_state = mint.where(emit, ops.concat((kv_state[:, m:], kv_state[:, m:]), 1), kv_state)
            score_state = mint.where(emit, ops.concat((score_state[:, m:], score_state[:, m:]), 1),
                                     score_state)
        else:
            entry = self._pool(kv_state, score_state, 1)
        entry_pos = ops.maximum(pos + 1 - m, 0)
        entry = self.finish(entry, ops.gather(cos, entry_pos, 0), ops.gather(sin, entry_pos, 0))
        return entry, emit, kv_state, score_state

    def decode(self, x, pos, kv_state, score_state, cache, cos, sin):
        """step(), then write an emitted entry to cache [b, n_max, head_dim] at index pos // ratio.
        Returns (cache, kv_state, score_state)."""
        entry, emit, kv_state, score_state = self.step(x, pos, kv_state, score_state, cos, sin)
        write = ops.logical_and(ops.arange(cache.shape[1]) == pos // self.ratio, emit).reshape(1, -1, 1)
        cache = mint.where(write, entry.expand_dims(1).broadcast_to(cache.shape), cache)
        return cache, kv_state, score_state
