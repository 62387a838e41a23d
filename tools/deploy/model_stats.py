"""Parameter counts, weight bytes by format, KV cache and FLOPs of a DeepSeek-V4 ModelConfig.

Self-contained on purpose (the planner must not import the MindSpore model). Shapes follow the
release's `inference/model.py` ([out, in] matrices; V4_SPEC sections 3-10):
  attention  wq_a [q, d] wq_b [H*hd, q] wkv [hd, d] wo_a [g*o, H*hd/g] (bf16) wo_b [d, g*o]
  compressor wkv/wgate [c*hd, d] (bf16, c = 2 for ratio 4), ape [r, c*hd] (fp32)
  indexer    wq_b [iH*ihd, q], weights_proj [iH, d] (bf16), own ratio-4 compressor (head 128)
  MoE        gate [E, d] (bf16), experts w1/w3 [inter, d], w2 [d, inter], one shared expert
  mHC        per sublayer fn [(2+n)n, n*d], base, scale (fp32); heads with fn [n, n*d]
`v4_param_counts(cfg)` is the function the tests check against the published 284B/13B (Flash)
and 1.6T/49B (Pro); `ascend_v4/params.py` (for `inspect`) is a separate, later module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

# ---- weight formats --------------------------------------------------------------------------
# Storage schemes: which format each weight role uses. Attention roles: `attn_a` = wq_a and wkv,
# `attn` = wq_b, wo_b, indexer wq_b (and R1's MLA projections), `attn_o` = wo_a, `attn_bf16` =
# compressor and indexer weights_proj (BF16 in every published recipe).
#   native: the V4 release (FP8 e4m3 + ue8m0 128x128 block scales, FP4 e2m1 routed experts
#           with ue8m0 scales per 1x32, BF16 embed/head/wo_a/compressor/gate, FP32 mHC/norms).
#   w8a8:   Huawei's Atlas A3 recipe (W8A8C16): INT8 + one fp32 scale per output channel for
#           wq_b, wo_b, indexer wq_b, routed and shared experts; BF16 wq_a, wkv, wo_a and the
#           rest (cann-recipes-infer DeepSeek-V4 guide, 'Int8 quantisation'). CloudMatrix-Infer's
#           R1 also quantises every MLA projection (R1's groups use role `attn` only).
#   mxfp8:  the 950 recipe's Hybrid MXFP8-MXFP4: MXFP8 (e4m3 + one e8m0 per 1x32) for every
#           attention projection incl. wo_a and the shared expert, MXFP4 routed experts
#           (bytes as the release's FP4), BF16 compressor / weights_proj / head.
#   w4a8:   W4A8 dynamic for 910B/910C (omni-infer's DeepSeek quantiser, default qtype
#           sszs50g0a0b4sym1): routed experts INT4 symmetric per output channel (q in [-7, 7],
#           packed two per byte, one fp32 scale per channel), the rest as w8a8; activations
#           per-token INT8 (npu_grouped_matmul per-token formula).
#   bf16:   everything BF16 (FP32 where the release keeps FP32).
_COMMON = {"attn_bf16": "bf16", "gate": "bf16", "embed": "bf16", "head": "bf16",
           "small": "fp32", "table": "int32"}
SCHEMES = {
    "native": dict(_COMMON, expert="fp4", shared="fp8", dense_ffn="fp8", attn="fp8",
                   attn_a="fp8", attn_o="bf16"),
    "w8a8": dict(_COMMON, expert="int8", shared="int8", dense_ffn="int8", attn="int8",
                 attn_a="bf16", attn_o="bf16"),
    "w4a8": dict(_COMMON, expert="int4", shared="int8", dense_ffn="int8", attn="int8",
                 attn_a="bf16", attn_o="bf16"),
    "mxfp8": dict(_COMMON, expert="fp4", shared="mxfp8", dense_ffn="mxfp8", attn="mxfp8",
                  attn_a="mxfp8", attn_o="mxfp8"),
    "bf16": dict(_COMMON, expert="bf16", shared="bf16", dense_ffn="bf16", attn="bf16",
                 attn_a="bf16", attn_o="bf16"),
}
ATTN_ROLES = ("attn", "attn_a", "attn_o", "attn_bf16")   # attention weights (`tp_split`: which TP splits)

# KV cache layouts (bytes per 512-dim entry, per indexer key of index_head_dim=128).
#   fp8:  FlashMLA MODEL1 layout (V4_SPEC 8): 448 e4m3 + 64 bf16 RoPE + 7 ue8m0 scales + 1 pad
#         = 584 B. Indexer keys are FP4-simulated in the release; WE ASSUME they are stored
#         packed e2m1 (128 / 2 = 64 B) plus one ue8m0 scale per 32 values (4 B) = 68 B.
#   bf16: Huawei's A3 recipe (W8A8C16): bf16 entries (1024 B) and an INT8 indexer cache
#         (128 B + one fp32 per-token scale = 132 B).
#   int8: C8 (W8A8C8 on 910B/910C), as the model rounds it (docs/DESIGN.md 'Cache formats'): 448 INT8
#         + 64 bf16 RoPE dims + one fp32 scale per 64-dim tile (7) = 604 B (the V3.2 recipe's
#         MlaProlog per-tile row layout with V4's widths; the tile of 64 is assumed), and the INT8
#         indexer cache of the bf16 row.
CACHE_FORMATS = {"fp8": {"entry": 584, "index_key": 68},
                 "bf16": {"entry": 1024, "index_key": 132},
                 "int8": {"entry": 448 + 64 * 2 + 7 * 4, "index_key": 132}}


def matrix_bytes(rows: int, cols: int, fmt: str) -> int:
    """Bytes of one [rows, cols] weight stored as `fmt`, scales included."""
    n = rows * cols
    if fmt == "fp8":        # e4m3 + one ue8m0 byte per 128x128 block
        return n + math.ceil(rows / 128) * math.ceil(cols / 128)
    if fmt == "fp4":        # two e2m1 per byte + one ue8m0 byte per 1x32 block
        return n // 2 + rows * math.ceil(cols / 32)
    if fmt == "mxfp8":      # e4m3 + one e8m0 byte per 1x32 block
        return n + rows * math.ceil(cols / 32)
    if fmt == "int8":       # int8 + one fp32 scale per output channel
        return n + 4 * rows
    if fmt == "int4":       # two int4 per byte + one fp32 scale per output channel
        return rows * math.ceil(cols / 2) + 4 * rows
    if fmt == "bf16":
        return 2 * n
    if fmt in ("fp32", "int32"):
        return 4 * n
    raise ValueError(f"unknown weight format {fmt!r}")


@dataclass
class WeightGroup:
    """`count` copies of a [rows, cols] matrix with one role (see SCHEMES)."""
    name: str
    role: str
    rows: int
    cols: int
    count: int = 1
    mtp: bool = False
    layer: int = -1          # block index (MTP blocks follow the main ones); -1 = global

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count

    def nbytes(self, scheme: str) -> int:
        return matrix_bytes(self.rows, self.cols, SCHEMES[scheme][self.role]) * self.count

    @property
    def tp_split(self) -> bool:
        """Whether attention TP splits this weight: the release's mp rules, as the runtime's
        sharded loader applies them (`checkpoint.schema.split_dim`: wq_b, wo_a, wo_b, the
        indexer's wq_b / weights_proj; wq_a, wkv, the compressors, e_proj / h_proj are replicated)."""
        from ascend_v4.checkpoint.schema import split_dim
        return self.role in ATTN_ROLES and split_dim(self.name) is not None


@dataclass
class V4Attention:
    """KV cache and attention cost of one V4 block (ratio 0 window-only, 4 CSA, >4 HCA)."""
    ratio: int
    n_heads: int
    head_dim: int
    window: int
    index_heads: int
    index_dim: int
    topk: int

    def kv_bytes(self, ctx: int, cache: str) -> Dict[str, int]:
        """Cache of one sequence at `ctx` tokens: window ring + compressed + indexer + state."""
        f = CACHE_FORMATS[cache]
        out = {"window": self.window * f["entry"], "compressed": 0, "indexer": 0, "state": 0}
        if self.ratio:
            c = 2 if self.ratio == 4 else 1
            out["compressed"] = (ctx // self.ratio) * f["entry"]
            out["state"] = 2 * (c * self.ratio) * (c * self.head_dim) * 4   # kv + score, fp32
        if self.ratio == 4:
            out["indexer"] = (ctx // 4) * f["index_key"]
            out["state"] += 2 * 8 * (2 * self.index_dim) * 4
        return out

    def entries(self, ctx: int) -> int:
        """Compressed/window entries one query at position ctx attends to."""
        n = min(ctx, self.window)
        if self.ratio == 4:
            n += min(self.topk, ctx // 4)
        elif self.ratio:
            n += ctx // self.ratio
        return n

    def kv_read_bytes(self, ctx: int, t: int, cache: str) -> int:
        """HBM bytes of KV entries one decode step reads for one sequence verifying t tokens:
        the window once, top-k entries once per verified token (CSA), all entries once (HCA)."""
        f = CACHE_FORMATS[cache]
        n = min(ctx, self.window) * f["entry"]
        if self.ratio == 4:
            n += t * min(self.topk, ctx // 4) * f["entry"]
        elif self.ratio:
            n += (ctx // self.ratio) * f["entry"]
        return n

    def index_read_bytes(self, ctx: int, cache: str) -> int:
        """Indexer keys one decode step reads for one sequence (CSA layers only)."""
        return (ctx // 4) * CACHE_FORMATS[cache]["index_key"] if self.ratio == 4 else 0

    def read_bytes(self, ctx: int, t: int, cache: str) -> int:
        return self.kv_read_bytes(ctx, t, cache) + self.index_read_bytes(ctx, cache)

    def core_flops(self, ctx: int) -> float:
        """Attention-core FLOPs of one query at position ctx (QK and PV over the entries)."""
        return 4.0 * self.n_heads * self.head_dim * self.entries(ctx)

    def index_flops(self, ctx: int) -> float:
        """Lightning-indexer score FLOPs of one query (ratio-4 blocks)."""
        return 2.0 * self.index_heads * self.index_dim * (ctx // 4) if self.ratio == 4 else 0.0

    def flops(self, ctx: int) -> float:
        return self.core_flops(ctx) + self.index_flops(ctx)

    def prefill_flops(self, length: int) -> float:
        """Mean attention-core FLOPs per token over a prompt of `length` (continuous sums)."""
        L, W = float(length), float(self.window)
        win = W - W * W / (2 * L) if L > W else (L + 1) / 2
        ent = win
        idx = 0.0
        if self.ratio == 4:
            cross = 4.0 * self.topk          # position where top-k saturates
            ent += (L / 8 if L <= cross else self.topk - self.topk * cross / (2 * L))
            idx = 2.0 * self.index_heads * self.index_dim * L / 8
        elif self.ratio:
            ent += L / (2 * self.ratio)
        return 4.0 * self.n_heads * self.head_dim * ent + idx


@dataclass
class ModelStats:
    """What the planner needs to know about a model, independent of where it came from."""
    name: str
    dim: int
    vocab: int
    n_layers: int
    n_moe_layers: int          # main-model MoE layers
    n_mtp_layers: int
    n_routed: int
    top_k: int
    moe_inter: int
    hc_mult: int
    n_heads: int
    groups: List[WeightGroup]
    attn: List[object]         # one attention description per block, MTP blocks last
    engram_bytes: int = 0
    notes: List[str] = field(default_factory=list)

    # ---- parameters ----------------------------------------------------------------------
    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert in one layer (w1, w2, w3)."""
        return 3 * self.dim * self.moe_inter

    def params(self) -> Dict[str, int]:
        main = [g for g in self.groups if not g.mtp]
        total = sum(g.params for g in main)
        routed = sum(g.params for g in main if g.role == "expert")
        embed = sum(g.params for g in main if g.role == "embed")
        inactive = (self.n_routed - self.top_k) * self.expert_params * self.n_moe_layers
        return {"total": total, "routed_experts": routed, "embed": embed,
                "active": total - inactive - embed,
                "mtp": sum(g.params for g in self.groups if g.mtp)}

    def weight_bytes(self, scheme: str) -> Dict[str, int]:
        """Bytes per role for the whole model (MTP included; see `mtp_bytes`)."""
        out: Dict[str, int] = {}
        for g in self.groups:
            out[g.role] = out.get(g.role, 0) + g.nbytes(scheme)
        return out

    def expert_bytes(self, scheme: str) -> int:
        """Bytes of one routed expert in one layer."""
        fmt = SCHEMES[scheme]["expert"]
        return (2 * matrix_bytes(self.moe_inter, self.dim, fmt)
                + matrix_bytes(self.dim, self.moe_inter, fmt))

    def linear_params_per_token(self) -> Dict[str, int]:
        """Matmul parameters one token touches, by role (routed: top_k experts per layer)."""
        out: Dict[str, int] = {}
        for g in self.groups:
            if g.role in ("small", "table", "embed") or g.mtp:
                continue
            if g.role == "expert":
                continue
            out[g.role] = out.get(g.role, 0) + g.params
        out["expert"] = self.top_k * self.expert_params * self.n_moe_layers
        return out

    def mtp_linear_params_per_token(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for g in self.groups:
            if g.mtp and g.role not in ("small", "table", "embed", "expert"):
                out[g.role] = out.get(g.role, 0) + g.params
        out["expert"] = self.top_k * self.expert_params * self.n_mtp_layers
        out["head"] = self.vocab * self.dim * self.n_mtp_layers   # shared head, run again
        return out

    # ---- KV cache ------------------------------------------------------------------------
    def kv_bytes_per_seq(self, ctx: int, cache: str) -> Dict[str, int]:
        out = {"window": 0, "compressed": 0, "indexer": 0, "state": 0}
        for a in self.attn:
            for k, v in a.kv_bytes(ctx, cache).items():
                out[k] = out.get(k, 0) + v
        out["total"] = sum(out.values())
        return out

    def kv_bytes_per_token_per_layer(self, ctx: int, cache: str) -> float:
        return self.kv_bytes_per_seq(ctx, cache)["total"] / ctx / len(self.attn)

    def decode_read_bytes_per_seq(self, ctx: int, t: int, cache: str) -> int:
        return sum(a.read_bytes(ctx, t, cache) for a in self.attn)

    def decode_attn_flops(self, ctx: int) -> float:
        return sum(a.flops(ctx) for a in self.attn[:self.n_layers])

    def prefill_attn_flops(self, length: int) -> float:
        return sum(a.prefill_flops(length) for a in self.attn[:self.n_layers])


def _v4_block(cfg, i: int, mtp: bool) -> (List[WeightGroup], V4Attention):
    d, q, H, hd, g, o = cfg.dim, cfg.q_lora_rank, cfg.n_heads, cfg.head_dim, cfg.o_groups, cfg.o_lora_rank
    E, inter, r = cfg.n_routed_experts, cfg.moe_inter_dim, cfg.compress_ratios[i]
    p = f"layers.{i}" if not mtp else f"mtp.{i - cfg.n_layers}"
    G = lambda name, role, rows, cols, count=1: WeightGroup(f"{p}.{name}", role, rows, cols, count,
                                                            mtp, i)
    out = [G("attn.wq_a", "attn_a", q, d), G("attn.wq_b", "attn", H * hd, q),
           G("attn.wkv", "attn_a", hd, d), G("attn.wo_a", "attn_o", g * o, H * hd // g),
           G("attn.wo_b", "attn", d, g * o),
           G("norms+sink", "small", 1, H + q + hd + 2 * d),
           G("hc_attn+hc_ffn", "small", 1, 2 * (cfg.mix_hc * cfg.hc_mult * d + cfg.mix_hc + 3))]
    if r:
        c = 2 if r == 4 else 1
        out += [G("attn.compressor.wkv+wgate", "attn_bf16", c * hd, d, 2),
                G("attn.compressor.ape+norm", "small", 1, r * c * hd + hd)]
    if r == 4:
        ih, idim = cfg.index_n_heads, cfg.index_head_dim
        out += [G("attn.indexer.wq_b", "attn", ih * idim, q),
                G("attn.indexer.weights_proj", "attn_bf16", ih, d),
                G("attn.indexer.compressor.wkv+wgate", "attn_bf16", 2 * idim, d, 2),
                G("attn.indexer.compressor.ape+norm", "small", 1, 4 * 2 * idim + idim)]
    out.append(G("ffn.gate.weight", "gate", E, d))
    if not mtp and i < cfg.n_hash_layers:
        out.append(G("ffn.gate.tid2eid", "table", cfg.vocab_size, cfg.n_activated_experts))
    else:
        out.append(G("ffn.gate.bias", "small", 1, E))
    out += [G("ffn.experts.w1+w3", "expert", inter, d, 2 * E),
            G("ffn.experts.w2", "expert", d, inter, E),
            G("ffn.shared_experts.w1+w3", "shared", inter, d, 2),
            G("ffn.shared_experts.w2", "shared", d, inter)]
    if mtp:
        n = cfg.hc_mult
        out += [G("e_proj+h_proj", "attn", d, d, 2),
                G("enorm+hnorm+norm+hc_head", "small", 1, 3 * d + n * n * d + n + 1)]
    attn = V4Attention(r, H, hd, cfg.window_size, cfg.index_n_heads, cfg.index_head_dim,
                       cfg.index_topk)
    return out, attn


def v4_stats(cfg) -> ModelStats:
    """ModelStats of an `ascend_v4.config.ModelConfig` (any preset or config file)."""
    groups: List[WeightGroup] = [
        WeightGroup("embed.weight", "embed", cfg.vocab_size, cfg.dim),
        WeightGroup("head.weight", "head", cfg.vocab_size, cfg.dim),
        WeightGroup("norm+hc_head", "small", 1,
                    cfg.dim + cfg.hc_mult * cfg.hc_mult * cfg.dim + cfg.hc_mult + 1)]
    attn = []
    for i in range(cfg.n_layers + cfg.n_mtp_layers):
        g, a = _v4_block(cfg, i, mtp=i >= cfg.n_layers)
        groups += g
        attn.append(a)
    from ascend_v4.engram import geometry      # FP8 rows + one ue8m0 scale per 128 values (V4_SPEC 7)
    geo = geometry(cfg)
    engram = len(geo.layer_ids) * geo.table_bytes if geo else 0
    return ModelStats(name=cfg.name, dim=cfg.dim, vocab=cfg.vocab_size, n_layers=cfg.n_layers,
                      n_moe_layers=cfg.n_layers, n_mtp_layers=cfg.n_mtp_layers,
                      n_routed=cfg.n_routed_experts, top_k=cfg.n_activated_experts,
                      moe_inter=cfg.moe_inter_dim, hc_mult=cfg.hc_mult, n_heads=cfg.n_heads,
                      groups=groups, attn=attn, engram_bytes=engram)


def v4_param_counts(cfg) -> Dict[str, int]:
    """Total (main model, MTP excluded), active per token (embedding lookup excluded), MTP."""
    return v4_stats(cfg).params()
