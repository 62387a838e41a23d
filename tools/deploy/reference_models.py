"""Planner-side description of DeepSeek-R1 / V3 (MLA attention), used only to validate the planner
against CloudMatrix-Infer's published figures. Not an ascend_v4 preset.

Shapes from the public DeepSeek-V3 `config.json` / `inference/model.py`: dim 7168, 61 layers
(first 3 dense, inter 18432), 128 heads, q_lora 1536, kv_lora 512, qk_nope 128, qk_rope 64,
v_head 128, 256 routed experts top-8 + 1 shared (inter 2048), vocab 129280, one MTP layer.
Published size: 671B total, 37B activated (DeepSeek-V3 technical report, arXiv 2412.19437).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

from .model_stats import ModelStats, WeightGroup

R1 = dict(dim=7168, n_layers=61, n_dense=3, inter=18432, n_heads=128, q_lora=1536, kv_lora=512,
          nope=128, rope=64, v_head=128, n_routed=256, top_k=8, moe_inter=2048, vocab=129280,
          n_mtp=1)


@dataclass
class MLAAttention:
    """Absorbed-MLA decode (latent cache of kv_lora + rope per token) and naive-MLA prefill."""
    n_heads: int
    kv_lora: int
    rope: int
    nope: int
    v_head: int

    def kv_bytes(self, ctx: int, cache: str) -> Dict[str, int]:
        per = (self.kv_lora + self.rope) * (2 if cache == "bf16" else 1)   # int8/fp8 latent
        return {"window": 0, "compressed": ctx * per, "indexer": 0, "state": 0}

    def kv_read_bytes(self, ctx: int, t: int, cache: str) -> int:
        return self.kv_bytes(ctx, cache)["compressed"]

    def index_read_bytes(self, ctx: int, cache: str) -> int:
        return 0

    def read_bytes(self, ctx: int, t: int, cache: str) -> int:
        return self.kv_read_bytes(ctx, t, cache)

    def core_flops(self, ctx: int) -> float:
        # scores over (kv_lora + rope), values over kv_lora, per head
        return 2.0 * self.n_heads * (2 * self.kv_lora + self.rope) * ctx

    def index_flops(self, ctx: int) -> float:
        return 0.0

    def flops(self, ctx: int) -> float:
        return self.core_flops(ctx)

    def prefill_flops(self, length: int) -> float:
        # naive MLA: q.k over (nope + rope), p.v over v_head, mean causal length L/2
        return 2.0 * self.n_heads * (self.nope + self.rope + self.v_head) * length / 2


def r1_stats() -> ModelStats:
    c = R1
    d, H = c["dim"], c["n_heads"]
    groups: List[WeightGroup] = [WeightGroup("embed", "embed", c["vocab"], d),
                                 WeightGroup("head", "head", c["vocab"], d),
                                 WeightGroup("norm", "small", 1, d)]
    attn = []
    for i in range(c["n_layers"] + c["n_mtp"]):
        mtp = i >= c["n_layers"]
        G = lambda name, role, rows, cols, count=1: WeightGroup(f"{i}.{name}", role, rows, cols, count,
                                                                mtp, i)
        groups += [G("q_a", "attn", c["q_lora"], d),
                   G("q_b", "attn", H * (c["nope"] + c["rope"]), c["q_lora"]),
                   G("kv_a", "attn", c["kv_lora"] + c["rope"], d),
                   G("kv_b", "attn", H * (c["nope"] + c["v_head"]), c["kv_lora"]),
                   G("o", "attn", d, H * c["v_head"]),
                   G("norms", "small", 1, c["q_lora"] + c["kv_lora"] + 2 * d)]
        if i < c["n_dense"]:
            groups += [G("mlp.w1+w3", "dense_ffn", c["inter"], d, 2),
                       G("mlp.w2", "dense_ffn", d, c["inter"])]
        else:
            E, m = c["n_routed"], c["moe_inter"]
            groups += [G("gate", "gate", E, d), G("gate.bias", "small", 1, E),
                       G("experts.w1+w3", "expert", m, d, 2 * E), G("experts.w2", "expert", d, m, E),
                       G("shared.w1+w3", "shared", m, d, 2), G("shared.w2", "shared", d, m)]
        if mtp:
            groups += [G("eh_proj", "attn", d, 2 * d), G("enorm+hnorm", "small", 1, 2 * d)]
        attn.append(MLAAttention(H, c["kv_lora"], c["rope"], c["nope"], c["v_head"]))
    return ModelStats(name="deepseek-r1", dim=d, vocab=c["vocab"], n_layers=c["n_layers"],
                      n_moe_layers=c["n_layers"] - c["n_dense"], n_mtp_layers=c["n_mtp"],
                      n_routed=c["n_routed"], top_k=c["top_k"], moe_inter=c["moe_inter"],
                      hc_mult=1, n_heads=H, groups=groups, attn=attn)
