"""Roofline step-time model: HBM bytes, FLOPs by matmul format, MoE all-to-all bytes and latency.

Per rank and per step, three phases (attention, MoE, head) each cost max(bytes / HBM, FLOPs /
peak); communication (dispatch, combine, TP collectives) overlaps with them when two
micro-batches are pipelined (calibration.OVERLAP_COMM); every block adds a fixed overhead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict

from . import calibration as cal
from .memory import Layout
from .model_stats import SCHEMES


@dataclass
class Step:
    seconds: float
    tpot: float
    tokens_per_s_per_rank: float
    bound: str
    parts: Dict[str, float] = field(default_factory=dict)   # seconds per resource/phase


def _link_time(nbytes: float, ranks: int, cluster, eff: float) -> float:
    """Seconds to move `nbytes` from one rank spread over `ranks` peers (some may be off-domain)."""
    npu = cluster.npu
    dom = cluster.scale_up_domain_ranks
    if ranks <= 1:
        return 0.0
    off = 0.0 if ranks <= dom else 1.0 - (dom - 1) / (ranks - 1)
    up = npu.link_bw_per_rank * eff
    out = npu.scale_out_bw_per_rank * cal.eff("scale_out")
    return nbytes * ((1 - off) / up + off / out)


def _matmul_seconds(params_by_role: Dict[str, float], tokens: float, scheme: str, npu) -> float:
    t = 0.0
    for role, params in params_by_role.items():
        fmt = SCHEMES[scheme][role]
        t += 2.0 * params * tokens / (npu.peak_flops_per_rank(fmt) * cal.eff("compute"))
    return t


def _moe_comm(stats, cluster, lay: Layout, tokens: float, layers: int) -> float:
    """Dispatch (int8/fp8 tokens + 4 B scale) and combine (bf16) of `tokens` per rank."""
    remote = 1.0 - 1.0 / lay.ranks
    disp = tokens * stats.top_k * (stats.dim + 4) * remote
    comb = tokens * stats.top_k * stats.dim * 2 * remote
    per_layer = (_link_time(disp, lay.ranks, cluster, cal.eff("dispatch"))
                 + _link_time(comb, lay.ranks, cluster, cal.eff("combine"))
                 + 2 * cal.fixed("a2a_latency_us") * 1e-6)
    return per_layer * layers


def _tp_comm(stats, cluster, lay: Layout, tokens: float, layers: int) -> float:
    if lay.tp <= 1:
        return 0.0
    nbytes = 2 * tokens * stats.dim * 2 * (lay.tp - 1) / lay.tp     # reduce-scatter + all-gather
    per_layer = _link_time(nbytes, lay.tp, cluster, cal.eff("combine")) + \
        2 * cal.fixed("a2a_latency_us") * 1e-6
    return per_layer * layers


def _split_roles(params: Dict[str, float]) -> (Dict[str, float], Dict[str, float], Dict[str, float]):
    attn = {r: v for r, v in params.items() if r in ("attn", "attn_bf16")}
    moe = {r: v for r, v in params.items() if r in ("expert", "shared", "gate", "dense_ffn")}
    head = {r: v for r, v in params.items() if r == "head"}
    return attn, moe, head


def decode_step(stats, cluster, lay: Layout, seqs: int, ctx: int) -> Step:
    """One decode step of a rank whose DP group holds `seqs` sequences at context `ctx`."""
    npu = cluster.npu
    hbm = npu.hbm_bw_per_rank * cal.eff("hbm")
    bf16 = npu.peak_flops_per_rank("bf16") * cal.eff("compute")
    t = 1 + lay.draft
    n_att = seqs * t                         # query tokens in the DP group
    n_moe = n_att / lay.tp                   # tokens this rank sends into the MoE
    wb = {}
    for g in stats.groups:
        if not g.mtp:
            wb[g.role] = wb.get(g.role, 0) + g.nbytes(lay.scheme)
    slots = lay.slots_per_rank(stats.n_routed)
    n_total = n_moe * lay.ranks
    p_active = 1.0 - math.exp(-n_total * stats.top_k / (slots * lay.ranks))
    # attention: weights / tp, KV reads, linear + core FLOPs
    attn_bytes = (wb.get("attn", 0) + wb.get("attn_bf16", 0)) / lay.tp + \
        seqs * stats.decode_read_bytes_per_seq(ctx, t, lay.cache)
    params = stats.linear_params_per_token()
    p_attn, p_moe, p_head = _split_roles(params)
    attn_flop_t = _matmul_seconds({r: v / lay.tp for r, v in p_attn.items()}, n_att, lay.scheme, npu) \
        + n_att * stats.decode_attn_flops(ctx) / lay.tp / bf16
    # MoE: local expert slots (activated fraction), shared + gate + dense replicated
    moe_bytes = slots * stats.expert_bytes(lay.scheme) * stats.n_moe_layers * p_active + \
        wb.get("shared", 0) + wb.get("gate", 0) + wb.get("dense_ffn", 0)
    moe_flop_t = _matmul_seconds(p_moe, n_moe, lay.scheme, npu)
    head_bytes = wb.get("head", 0) / lay.head_tp
    head_flop_t = _matmul_seconds(p_head, n_att, lay.scheme, npu)
    # MTP draft passes: one block + the head on `seqs` tokens each
    mtp_t = 0.0
    if lay.draft and stats.n_mtp_layers:
        mb = sum(g.nbytes(lay.scheme) for g in stats.groups if g.mtp and g.role != "expert")
        mb += slots * stats.expert_bytes(lay.scheme) * stats.n_mtp_layers * p_active
        mb += head_bytes + seqs * sum(a.read_bytes(ctx, 1, lay.cache) for a in stats.attn[stats.n_layers:])
        mflop = _matmul_seconds(stats.mtp_linear_params_per_token(), seqs, lay.scheme, npu)
        mtp_t = lay.draft * max(mb / hbm, mflop)
    parts = {"attention_hbm": attn_bytes / hbm, "attention_compute": attn_flop_t,
             "moe_hbm": moe_bytes / hbm, "moe_compute": moe_flop_t,
             "head_hbm": head_bytes / hbm, "head_compute": head_flop_t, "mtp_draft": mtp_t}
    local = (max(parts["attention_hbm"], attn_flop_t) + max(parts["moe_hbm"], moe_flop_t)
             + max(parts["head_hbm"], head_flop_t) + mtp_t)
    comm = _moe_comm(stats, cluster, lay, n_moe, stats.n_moe_layers) + \
        lay.draft * _moe_comm(stats, cluster, lay, seqs / lay.tp, stats.n_mtp_layers) + \
        _tp_comm(stats, cluster, lay, n_att, stats.n_layers)
    overhead = cal.fixed("layer_overhead_us") * 1e-6 * (stats.n_layers + lay.draft * stats.n_mtp_layers)
    parts["communication"] = comm
    parts["fixed_overhead"] = overhead
    seconds = (max(local, comm) if cal.OVERLAP_COMM else local + comm) + overhead
    hbm_t = parts["attention_hbm"] + parts["moe_hbm"] + parts["head_hbm"]
    flop_t = attn_flop_t + moe_flop_t + head_flop_t
    cands = {"HBM bandwidth": hbm_t, "compute": flop_t, "interconnect": comm,
             "fixed per-layer overhead": overhead}
    bound = max(cands, key=cands.get)
    accepted = 1.0 + min(lay.accept, lay.draft)
    return Step(seconds, seconds / accepted, seqs / lay.tp * accepted / seconds, bound, parts)


def prefill_token_seconds(stats, cluster, lay: Layout, length: int, chunk: int = 16384) -> Step:
    """Seconds per prompt token on one rank of a prefill instance (prompts of `length`)."""
    npu = cluster.npu
    hbm = npu.hbm_bw_per_rank * cal.eff("hbm")
    bf16 = npu.peak_flops_per_rank("bf16") * cal.eff("compute")
    params = stats.linear_params_per_token()
    params.pop("head", None)                       # logits of the last token only
    flop_t = _matmul_seconds(params, 1, lay.scheme, npu) + stats.prefill_attn_flops(length) / bf16
    wbytes = sum(g.nbytes(lay.scheme) for g in stats.groups if not g.mtp and g.role != "expert")
    wbytes += lay.slots_per_rank(stats.n_routed) * stats.expert_bytes(lay.scheme) * stats.n_moe_layers
    kv_write = stats.kv_bytes_per_seq(length, lay.cache)["total"] / length
    mem_t = (wbytes / chunk + kv_write) / hbm
    comm = _moe_comm(stats, cluster, lay, 1, stats.n_moe_layers) - \
        2 * cal.fixed("a2a_latency_us") * 1e-6 * stats.n_moe_layers * (1 - 1 / chunk)
    local = max(flop_t, mem_t)
    overhead = cal.fixed("layer_overhead_us") * 1e-6 * stats.n_layers / chunk
    seconds = (max(local, comm) if cal.OVERLAP_COMM else local + comm) + overhead
    cands = {"compute": flop_t, "HBM bandwidth": mem_t, "interconnect": comm}
    parts = {"compute": flop_t, "hbm": mem_t, "communication": comm, "fixed_overhead": overhead}
    return Step(seconds, seconds, 1.0 / seconds, max(cands, key=cands.get), parts)
