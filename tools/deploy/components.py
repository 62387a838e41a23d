"""What one rank does in one decode step, split by component (the rows of `plan --explain`).

A `Work` holds one component's cost on one rank for one step: HBM bytes it must read (weights,
KV entries, indexer keys), matmul FLOPs by compute format, activation bytes (tensors written to
HBM by one kernel and read back by the next), and interconnect seconds (bandwidth and fixed
latency of the MoE all-to-all and TP collectives). `roofline.py` turns them into seconds.

Components: attention by block type (SWA = window only, CSA = ratio 4, HCA = ratio 128, MLA for
DeepSeek-R1), indexer, compressor, mHC, MoE experts (routed + shared + gate), dispatch/combine,
attention TP collectives, head, MTP (the draft passes, everything inside them).
Routing is balanced (the published benchmarks force EPLB): a rank receiving P (token, expert)
pairs reads min(P, slots) of its expert slots per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

from . import calibration as cal
from .memory import Layout
from .model_stats import ATTN_ROLES, SCHEMES

# Matmul compute format of a weight format. FP4 experts take FP8 activations (V4_SPEC 9: W4A8),
# so they run on the FP8 unit; FP32 mHC mixes run on the BF16/FP32 path.
# INT4 weights (W4A8) multiply INT8 activations: the INT8 rate (assumed; the A8W4 grouped matmul
# widens the weight on the way to the cube).
COMPUTE_FMT = {"fp4": "fp8", "fp8": "fp8", "mxfp8": "mxfp8", "int8": "int8", "int4": "int8", "bf16": "bf16",
               "fp32": "bf16", "int32": "bf16"}
# Lightning-indexer score format per scheme (A3 recipe: INT8 A8C8; 950 recipe: FP8).
INDEX_FMT = {"native": "fp8", "mxfp8": "fp8", "w8a8": "int8", "w4a8": "int8", "bf16": "bf16"}


@dataclass
class Work:
    hbm_bytes: float = 0.0
    flops: Dict[str, float] = field(default_factory=dict)
    act_bytes: float = 0.0
    comm_s: float = 0.0           # interconnect seconds (bytes / achievable link bandwidth)
    comm_latency_s: float = 0.0   # fixed per-operator cost of the collectives

    def add_flops(self, fmt: str, flops: float) -> None:
        self.flops[fmt] = self.flops.get(fmt, 0.0) + flops


def block_kind(a) -> str:
    """'SWA' | 'CSA' | 'HCA' for V4 blocks, 'MLA' for the R1 reference."""
    ratio = getattr(a, "ratio", None)
    if ratio is None:
        return "MLA"
    return "SWA" if ratio == 0 else ("CSA" if ratio == 4 else "HCA")


def component_of(stats, g) -> str:
    """The component a weight group belongs to (by its checkpoint name and role)."""
    if g.mtp:
        return "MTP"
    if g.layer < 0:
        return "head"
    name = g.name
    if "indexer" in name:
        return "indexer"
    if "compressor" in name:
        return "compressor"
    if "hc_" in name:
        return "mHC"
    if g.role in ("expert", "shared", "gate", "dense_ffn", "table") or "ffn." in name:
        return "MoE experts"
    return f"attention {block_kind(stats.attn[g.layer])}"


def activation_bytes(stats, a, ctx: int, tp: int) -> Dict[str, float]:
    """Bytes of activations one token writes and reads back in one block, by component.

    mHC: the n residual streams (bf16 between operators, as in the release's reference) read by
    hc_pre and hc_post and written by hc_post, the bf16 sublayer input and output; attention: q and o (heads x head_dim, bf16, split by TP), input, output and
    the KV row; indexer: FP8 queries, head weights, one fp32 score per compressed entry and the
    top-k indices; compressor: its fp32 kv and gate rows; MoE: the quantised input, router
    scores and, per routed pair and for the shared expert, the SwiGLU input/output and the
    expert output, then the combined output. Each tensor counts once written and once read."""
    d, n = stats.dim, stats.hc_mult
    out = {"mHC": 2.0 * 2 * (3 * n * d * 2 + 2 * d * 2)}
    kind = block_kind(a)
    if kind == "MLA":
        heads = a.n_heads * (2 * a.kv_lora + a.rope) * 2
        out["attention MLA"] = 2.0 * (heads / tp + 2 * d * 2)
    else:
        out[f"attention {kind}"] = 2.0 * (2 * a.n_heads * a.head_dim * 2 / tp + 2 * d * 2
                                          + a.head_dim * 2)
        if a.ratio:
            c = 2 if a.ratio == 4 else 1
            out["compressor"] = 2.0 * (2 * c * a.head_dim * 4)
        if a.ratio == 4:
            out["indexer"] = 2.0 * (a.index_heads * a.index_dim + a.index_heads * 4
                                    + (ctx // 4) * 4 + min(a.topk, ctx // 4) * 4)
    inter, k = stats.moe_inter, stats.top_k
    out["MoE experts"] = 2.0 * (d + stats.n_routed * 4 + (k + 1) * (3 * inter * 2 + d * 2) + d * 2)
    return out


def _moe_comm(stats, cluster, lay: Layout, tokens: float, layers: int) -> (float, float):
    """Dispatch (1-byte tokens + 4 B scale) and combine (bf16) of `tokens` per rank per layer:
    (bandwidth seconds, fixed latency seconds) over `layers` MoE layers."""
    if lay.ranks <= 1:
        return 0.0, 0.0
    remote = 1.0 - 1.0 / lay.ranks
    disp = tokens * stats.top_k * (stats.dim + 4) * remote
    comb = tokens * stats.top_k * stats.dim * 2 * remote
    bw = link_seconds(disp, lay.ranks, cluster, cal.eff("dispatch")) + \
        link_seconds(comb, lay.ranks, cluster, cal.eff("combine"))
    return bw * layers, 2 * cal.fixed("a2a_latency_us") * 1e-6 * layers


def link_seconds(nbytes: float, ranks: int, cluster, eff: float) -> float:
    """Seconds to move `nbytes` from one rank spread over `ranks` peers (some may be off-domain)."""
    npu = cluster.npu
    dom = cluster.scale_up_domain_ranks
    if ranks <= 1:
        return 0.0
    off = 0.0 if ranks <= dom else 1.0 - (dom - 1) / (ranks - 1)
    up = npu.link_bw_per_rank * eff
    out = npu.scale_out_bw_per_rank * cal.eff("scale_out")
    return nbytes * ((1 - off) / up + off / out)


def _weights(stats, lay: Layout, g, tokens: float, pairs: float, w: Work) -> None:
    """Add one weight group's bytes and FLOPs for `tokens` tokens (`pairs` routed pairs)."""
    fmt = SCHEMES[lay.scheme][g.role]
    cf = COMPUTE_FMT[fmt]
    if g.role in ("embed", "table"):
        return                                            # row lookups: negligible bytes
    if g.role == "expert":
        per_expert = g.params / stats.n_routed
        slots = lay.slots_per_rank(stats.n_routed)
        w.hbm_bytes += g.nbytes(lay.scheme) / stats.n_routed * min(slots, pairs)
        w.add_flops(cf, 2.0 * per_expert * pairs)
    elif g.role in ATTN_ROLES:
        div = lay.tp if g.tp_split else 1                 # replicated projections: every rank's own
        w.hbm_bytes += g.nbytes(lay.scheme) / div
        w.add_flops(cf, 2.0 * g.params / div * tokens)
    elif g.role == "head":
        w.hbm_bytes += g.nbytes(lay.scheme) / lay.head_tp
        w.add_flops(cf, 2.0 * g.params * tokens)
    else:                                                 # shared, gate, dense, mHC, norms
        w.hbm_bytes += g.nbytes(lay.scheme)
        if g.role != "small" or "hc_" in g.name:
            w.add_flops(cf, 2.0 * g.params * tokens)


def decode_work(stats, cluster, lay: Layout, seqs: int, ctx: int) -> Dict[str, Work]:
    """Per-rank work of one decode step for a DP group of `seqs` sequences at context `ctx`."""
    t = 1 + lay.draft
    n_att = seqs * t                      # query tokens of the DP group (each TP rank sees all)
    n_moe = n_att / lay.tp                # tokens this rank sends into the MoE
    idx_fmt = INDEX_FMT[lay.scheme]
    work: Dict[str, Work] = {}
    W = lambda name: work.setdefault(name, Work())
    for g in stats.groups:
        comp = component_of(stats, g)
        if comp == "MTP":
            continue
        side = n_moe if comp == "MoE experts" else n_att
        _weights(stats, lay, g, side, n_moe * stats.top_k, W(comp))
    for a in stats.attn[:stats.n_layers]:
        kind = f"attention {block_kind(a)}"
        W(kind).hbm_bytes += seqs * a.kv_read_bytes(ctx, t, lay.cache)
        W(kind).add_flops("bf16", n_att * a.core_flops(ctx) / lay.tp)
        if a.index_flops(ctx):
            W("indexer").hbm_bytes += seqs * a.index_read_bytes(ctx, lay.cache)
            W("indexer").add_flops(idx_fmt, n_att * a.index_flops(ctx) / lay.tp)
        for comp, b in activation_bytes(stats, a, ctx, lay.tp).items():
            W(comp).act_bytes += b * (n_moe if comp == "MoE experts" else n_att)
    # fp32 logits: the vocab-parallel group's head_tp x n_att tokens over vocab / head_tp columns
    W("head").act_bytes += n_att * 2.0 * stats.vocab * 4
    bw, lat = _moe_comm(stats, cluster, lay, n_moe, stats.n_moe_layers)
    W("dispatch/combine").comm_s += bw
    W("dispatch/combine").comm_latency_s += lat
    if lay.tp > 1:
        nbytes = 2 * n_att * stats.dim * 2 * (lay.tp - 1) / lay.tp   # reduce-scatter + all-gather
        tpw = W("attention TP collectives")
        tpw.comm_s += link_seconds(nbytes, lay.tp, cluster, cal.eff("combine")) * stats.n_layers
        tpw.comm_latency_s += 2 * cal.fixed("a2a_latency_us") * 1e-6 * stats.n_layers
    if lay.draft and stats.n_mtp_layers:
        work["MTP"] = mtp_work(stats, cluster, lay, seqs, ctx)
    return work


def mtp_work(stats, cluster, lay: Layout, seqs: int, ctx: int) -> Work:
    """`lay.draft` sequential draft passes, each one MTP block and the shared head on `seqs`
    tokens (window-only attention)."""
    one = Work()
    n_moe = seqs / lay.tp
    for g in stats.groups:
        if g.mtp:
            _weights(stats, lay, g, n_moe if g.role in ("expert", "shared", "gate") else seqs,
                     n_moe * stats.top_k, one)
        elif g.role == "head":
            _weights(stats, lay, g, seqs, 0, one)
    for a in stats.attn[stats.n_layers:]:
        one.hbm_bytes += seqs * a.kv_read_bytes(ctx, 1, lay.cache)
        one.add_flops("bf16", seqs * a.core_flops(ctx) / lay.tp)
        one.act_bytes += seqs * sum(activation_bytes(stats, a, ctx, lay.tp).values())
    bw, lat = _moe_comm(stats, cluster, lay, n_moe, stats.n_mtp_layers)
    k = lay.draft
    return Work(one.hbm_bytes * k, {f: v * k for f, v in one.flops.items()}, one.act_bytes * k,
                bw * k, lat * k)
