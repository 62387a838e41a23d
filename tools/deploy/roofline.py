"""Step-time model: per component, HBM bytes and FLOPs at achievable rates, activation traffic,
interconnect, and fixed per-block latency (`components.py` says what each component does).

Decode, per rank and step: each component costs max(bytes / HBM, FLOPs / peak) plus its
activation traffic (calibration `activation_passes`); communication overlaps with that local
work (two micro-batches, calibration.OVERLAP_COMM) and only the excess is exposed; every block
pass adds `block_gap_us`. Prefill runs chunks of thousands of tokens through fused kernels, so
there each activation crosses HBM once (`activation_passes` describes small decode shapes). `Step.table` attributes every second of the step to a component and
a resource (compute, HBM, interconnect, latency), so the table sums to `Step.seconds` exactly.
`software=False` drops the two fitted terms (the physical roofline).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

from . import calibration as cal
from .components import COMPUTE_FMT, INDEX_FMT, activation_bytes, decode_work, link_seconds
from .memory import Layout
from .model_stats import SCHEMES

RESOURCES = ("compute", "HBM", "interconnect", "latency")
BOUND_NAMES = {"compute": "compute", "HBM": "HBM bandwidth", "interconnect": "interconnect",
               "latency": "latency (kernel gaps, collective set-up)"}


@dataclass
class Step:
    seconds: float
    tpot: float
    tokens_per_s_per_rank: float
    bound: str
    parts: Dict[str, float] = field(default_factory=dict)            # seconds per resource
    table: Dict[str, Dict[str, float]] = field(default_factory=dict)  # component -> resource -> s
    hidden_comm: float = 0.0          # communication seconds overlapped with local work


def _compute_seconds(flops: Dict[str, float], npu) -> float:
    return sum(f / (npu.peak_flops_per_rank(fmt) * cal.eff("compute")) for fmt, f in flops.items())


def _finish(table, seconds, seqs_per_rank, accepted) -> Step:
    parts = {r: sum(row.get(r, 0.0) for row in table.values()) for r in RESOURCES}
    bound = BOUND_NAMES[max(parts, key=parts.get)]
    return Step(seconds, seconds / accepted, seqs_per_rank * accepted / seconds, bound, parts,
                table)


def decode_step(stats, cluster, lay: Layout, seqs: int, ctx: int, software: bool = True) -> Step:
    """One decode step of a rank whose DP group holds `seqs` sequences at context `ctx`."""
    npu = cluster.npu
    hbm = npu.hbm_bw_per_rank * cal.eff("hbm")
    passes = cal.fitted("activation_passes") if software else 0.0
    gap = cal.fitted("block_gap_us") * 1e-6 if software else 0.0
    table: Dict[str, Dict[str, float]] = {}
    local = comm = 0.0
    work = decode_work(stats, cluster, lay, seqs, ctx)
    for name, w in work.items():
        mem, flop = w.hbm_bytes / hbm, _compute_seconds(w.flops, npu)
        row = {r: 0.0 for r in RESOURCES}
        row["HBM" if mem >= flop else "compute"] += max(mem, flop)
        row["HBM"] += passes * w.act_bytes / hbm
        table[name] = row
        local += max(mem, flop) + passes * w.act_bytes / hbm
        comm += w.comm_s + w.comm_latency_s
    exposed = max(0.0, comm - local) if cal.OVERLAP_COMM else comm
    if comm > 0:
        for name, w in work.items():                  # exposed share, by bytes vs fixed cost
            table[name]["interconnect"] += exposed * w.comm_s / comm
            table[name]["latency"] += exposed * w.comm_latency_s / comm
    table.setdefault("launch gaps", {r: 0.0 for r in RESOURCES})["latency"] += \
        gap * stats.n_layers
    if "MTP" in table:
        table["MTP"]["latency"] += gap * lay.draft * stats.n_mtp_layers
    seconds = sum(sum(row.values()) for row in table.values())
    step = _finish(table, seconds, seqs / lay.tp, 1.0 + min(lay.accept, lay.draft))
    step.hidden_comm = comm - exposed
    return step


def prefill_token_seconds(stats, cluster, lay: Layout, length: int, chunk: int = 16384,
                          software: bool = True) -> Step:
    """Seconds per prompt token on one rank of a prefill instance (prompts of `length`)."""
    npu = cluster.npu
    hbm = npu.hbm_bw_per_rank * cal.eff("hbm")
    flops: Dict[str, float] = {}
    wbytes = 0.0
    for g in stats.groups:
        if g.mtp or g.role in ("embed", "table", "head"):   # logits of the last token only
            continue
        fmt = COMPUTE_FMT[SCHEMES[lay.scheme][g.role]]
        params = g.params * (stats.top_k / stats.n_routed if g.role == "expert" else 1)
        if g.role != "small" or "hc_" in g.name:
            flops[fmt] = flops.get(fmt, 0.0) + 2.0 * params
        wbytes += g.nbytes(lay.scheme) if g.role != "expert" else 0
    wbytes += lay.slots_per_rank(stats.n_routed) * stats.expert_bytes(lay.scheme) * stats.n_moe_layers
    idx = INDEX_FMT[lay.scheme]
    act = 0.0
    for a in stats.attn[:stats.n_layers]:
        core = a.prefill_flops(length)
        ind = 2.0 * a.index_heads * a.index_dim * length / 8 if a.index_flops(length) else 0.0
        flops["bf16"] = flops.get("bf16", 0.0) + core - ind
        flops[idx] = flops.get(idx, 0.0) + ind
        act += sum(activation_bytes(stats, a, length // 2, lay.tp).values())
    passes = 1.0 if software else 0.0      # big fused kernels: each activation crosses HBM once
    gap = cal.fitted("block_gap_us") * 1e-6 if software else 0.0
    flop_t = _compute_seconds(flops, npu)
    kv_write = stats.kv_bytes_per_seq(length, lay.cache)["total"] / length
    mem_t = (wbytes / chunk + kv_write) / hbm
    remote = 1.0 - 1.0 / lay.ranks
    comm = stats.n_moe_layers * stats.top_k * remote * (
        link_seconds(stats.dim + 4, lay.ranks, cluster, cal.eff("dispatch"))
        + link_seconds(2 * stats.dim, lay.ranks, cluster, cal.eff("combine")))
    local = max(flop_t, mem_t) + passes * act / hbm
    exposed = max(0.0, comm - local) if cal.OVERLAP_COMM else comm
    row = {r: 0.0 for r in RESOURCES}
    row["compute" if flop_t >= mem_t else "HBM"] += max(flop_t, mem_t)
    row["HBM"] += passes * act / hbm
    row["interconnect"] = exposed
    row["latency"] = gap * stats.n_layers / chunk
    seconds = sum(row.values())
    return _finish({"prefill": row}, seconds, 1.0, 1.0)
