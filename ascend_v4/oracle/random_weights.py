"""Random checkpoint tensors in the converted reference format, for oracle self-tests only.

`random_checkpoint(cfg, seed)` returns {name: stored array} with the formats of V4_SPEC
section 10: linears fp8 (cfg.dtype == 'fp8') with ue8m0 128x128 block scales or bf16, routed
experts per cfg.routed_expert_dtype (fp4 packed int8 + [out, in/32] ue8m0 scales, fp8, bf16),
wo_a / weights_proj / embed / head / norms / gate / compressor weights bf16, hc_*, attn_sink,
ape, gate.bias fp32, tid2eid int32. Magnitudes keep activations O(1). This is not the project's
checkpoint writer.
"""
from __future__ import annotations

from typing import Dict

import ml_dtypes
import numpy as np

from .numerics import E2M1_VALUES, e2m1_round, pow2_ceil


def quantize_fp8_weight(w: np.ndarray):
    """float [out, in] -> (e4m3 [out, in], e8m0 scale [ceil(out/128), ceil(in/128)])."""
    out, inp = w.shape
    bo, bi = -(-out // 128), -(-inp // 128)
    wp = np.zeros((bo * 128, bi * 128), np.float32)
    wp[:out, :inp] = w
    blocks = wp.reshape(bo, 128, bi, 128)
    amax = np.maximum(np.abs(blocks).max((1, 3)), np.float32(1e-4))
    s = pow2_ceil((amax * np.float32(1 / 448)).astype(np.float32))                # [bo, bi]
    q = np.clip(blocks / s[:, None, :, None], -448, 448).astype(ml_dtypes.float8_e4m3fn)
    return q.reshape(bo * 128, bi * 128)[:out, :inp], s.astype(ml_dtypes.float8_e8m0fnu)


def quantize_fp4_weight(w: np.ndarray):
    """float [out, in] -> (packed int8 [out, in/2], e8m0 scale [out, in/32]); low nibble first."""
    out, inp = w.shape
    blocks = w.reshape(out, inp // 32, 32).astype(np.float32)
    amax = np.maximum(np.abs(blocks).max(-1), np.float32(6 * 2.0 ** -126))
    s = pow2_ceil((amax * np.float32(1 / 6)).astype(np.float32))
    v = e2m1_round(np.clip(blocks / s[..., None], -6, 6)).reshape(out, inp)
    code = np.abs(v)[..., None] == E2M1_VALUES[:8]
    code = code.argmax(-1).astype(np.uint8) | np.where(np.signbit(v), 8, 0).astype(np.uint8)
    packed = (code[:, 0::2] | (code[:, 1::2] << 4)).astype(np.uint8).view(np.int8)
    return packed, s.astype(ml_dtypes.float8_e8m0fnu)


class _Builder:
    def __init__(self, cfg, seed):
        self.cfg, self.rng, self.t = cfg, np.random.default_rng(seed), {}

    def linear(self, name, out, inp, fmt):
        w = (self.rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)
        if fmt == "fp8":
            self.t[name + ".weight"], self.t[name + ".scale"] = quantize_fp8_weight(w)
        elif fmt == "fp4":
            self.t[name + ".weight"], self.t[name + ".scale"] = quantize_fp4_weight(w)
        else:
            self.t[name + ".weight"] = w.astype(ml_dtypes.bfloat16)

    def norm(self, name, n):
        self.t[name] = (1 + 0.1 * self.rng.standard_normal(n)).astype(ml_dtypes.bfloat16)

    def f32(self, name, shape, std, mean=0.0):
        self.t[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def compressor(self, p, ratio, hd):
        c = 2 if ratio == 4 else 1
        self.f32(p + "ape", (ratio, c * hd), 0.5)
        self.linear(p + "wkv", c * hd, self.cfg.dim, "bf16")
        self.linear(p + "wgate", c * hd, self.cfg.dim, "bf16")
        self.norm(p + "norm.weight", hd)

    def block(self, p, layer_id):
        cfg, L, d = self.cfg, self.cfg.dtype, self.cfg.dim
        n, mix = cfg.hc_mult, cfg.mix_hc
        for s in ("attn", "ffn"):
            self.norm(p + f"{s}_norm.weight", d)
            self.f32(p + f"hc_{s}_fn", (mix, n * d), 1 / np.sqrt(n * d))
            self.f32(p + f"hc_{s}_base", (mix,), 0.5)
            self.f32(p + f"hc_{s}_scale", (3,), 0.25, mean=1.0)
        a, hd, nh = p + "attn.", cfg.head_dim, cfg.n_heads
        self.linear(a + "wq_a", cfg.q_lora_rank, d, L)
        self.norm(a + "q_norm.weight", cfg.q_lora_rank)
        self.linear(a + "wq_b", nh * hd, cfg.q_lora_rank, L)
        self.linear(a + "wkv", hd, d, L)
        self.norm(a + "kv_norm.weight", hd)
        self.linear(a + "wo_a", cfg.o_groups * cfg.o_lora_rank, nh * hd // cfg.o_groups, "bf16")
        self.linear(a + "wo_b", d, cfg.o_groups * cfg.o_lora_rank, L)
        self.f32(a + "attn_sink", (nh,), 1.0)
        ratio = cfg.compress_ratios[layer_id]
        if ratio:
            self.compressor(a + "compressor.", ratio, hd)
        if ratio == 4:
            self.linear(a + "indexer.wq_b", cfg.index_n_heads * cfg.index_head_dim, cfg.q_lora_rank, L)
            self.linear(a + "indexer.weights_proj", cfg.index_n_heads, d, "bf16")
            self.compressor(a + "indexer.compressor.", 4, cfg.index_head_dim)
        f, E, k = p + "ffn.", cfg.n_routed_experts, cfg.n_activated_experts
        self.linear(f + "gate", E, d, "bf16")
        if layer_id < cfg.n_hash_layers:
            self.t[f + "gate.tid2eid"] = np.stack(
                [self.rng.permutation(E)[:k] for _ in range(cfg.vocab_size)]).astype(np.int32)
        else:
            self.f32(f + "gate.bias", (E,), 0.1)
        efmt = cfg.routed_expert_dtype
        for e in range(E):
            self.linear(f + f"experts.{e}.w1", cfg.moe_inter_dim, d, efmt)
            self.linear(f + f"experts.{e}.w3", cfg.moe_inter_dim, d, efmt)
            self.linear(f + f"experts.{e}.w2", d, cfg.moe_inter_dim, efmt)
        for w, (o, i) in (("w1", (cfg.moe_inter_dim, d)), ("w3", (cfg.moe_inter_dim, d)),
                          ("w2", (d, cfg.moe_inter_dim))):
            self.linear(f + f"shared_experts.{w}", o, i, L)

    def hc_head(self, p):
        n, d = self.cfg.hc_mult, self.cfg.dim
        self.f32(p + "hc_head_fn", (n, n * d), 1 / np.sqrt(n * d))
        self.f32(p + "hc_head_base", (n,), 0.5)
        self.f32(p + "hc_head_scale", (1,), 0.25, mean=1.0)


def random_checkpoint(cfg, seed: int = 0) -> Dict[str, np.ndarray]:
    """{name: stored array} for every tensor of cfg's model (main blocks and MTP blocks)."""
    b = _Builder(cfg, seed)
    d = cfg.dim
    b.t["embed.weight"] = b.rng.standard_normal((cfg.vocab_size, d)).astype(ml_dtypes.bfloat16)
    for i in range(cfg.n_layers):
        b.block(f"layers.{i}.", i)
    b.norm("norm.weight", d)
    b.linear("head", cfg.vocab_size, d, "bf16")
    b.hc_head("")
    for k in range(cfg.n_mtp_layers):
        p = f"mtp.{k}."
        b.block(p, cfg.n_layers + k)
        b.linear(p + "e_proj", d, d, cfg.dtype)
        b.linear(p + "h_proj", d, d, cfg.dtype)
        for nm in ("enorm", "hnorm", "norm"):
            b.norm(p + nm + ".weight", d)
        b.hc_head(p)
    return b.t
