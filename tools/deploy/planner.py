"""Search a prefill/decode-disaggregated deployment for a model on a cluster.

Decode: for every expert-parallel degree (whole nodes) and attention TP degree, find the largest
per-rank batch that fits in HBM at the requested context, then the largest that meets the TPOT
target; keep the layout with the most tokens/s per NPU. Prefill: the smallest whole-node
instance that holds the weights and one prompt's KV; as many instances as the requested prefill
throughput needs (one if none is requested). Infeasible requests raise PlanError with one
sentence and the numbers behind it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from . import PlanError
from . import calibration as cal
from .catalogue import Cluster, load_cluster
from .memory import Layout, rank_budget
from .formats import Formats, pick, profile_for
from .model_stats import ModelStats, v4_stats
from .placement import place_experts
from .reference_models import r1_stats
from .roofline import decode_step, prefill_token_seconds
from .units import fmt_bytes, fmt_tokens

GiB = 2 ** 30
PREFILL_DISPATCH_TOKENS = -1    # prefill uses AllToAllV through the default HCCL buffer
PREFILL_CHUNK = 4096            # assumed prompt tokens in flight per rank (chunked prefill)


@dataclass
class Request:
    model: str
    cluster: str
    context: int
    tpot: float                              # seconds
    prefill_throughput: Optional[float] = None   # tokens/s for the whole deployment
    weights: Optional[str] = None            # model_stats.SCHEMES key (default: the SoC profile's)
    kv_cache: Optional[str] = None           # model_stats.CACHE_FORMATS key (default: the SoC profile's)
    mtp: int = 1
    mtp_accept: Optional[float] = None
    redundancy: float = 0.125                # redundant expert slots / routed experts
    roofline_only: bool = False
    soc: Optional[str] = None                # SoC profile; default: the cluster's chip's (`soc:` key)


def load_model(source: str) -> ModelStats:
    """'flash' | 'pro' | a config file/folder, or 'deepseek-r1' (planner-side reference)."""
    if source in ("deepseek-r1", "deepseek-v3"):
        return r1_stats()
    from ascend_v4.config import ConfigError, load_config
    try:
        cfg = load_config(source, max_seq_len=1 << 20) if not os.path.exists(source) else load_config(source)
    except ConfigError as exc:
        raise PlanError(f"--model {source}: {exc}") from None
    return v4_stats(cfg)


def _defaults(req: Request, cluster: Cluster) -> (Formats, float):
    """(formats picked for the SoC, MTP acceptance); see tools/deploy/formats."""
    fmts = pick(profile_for(req.soc, cluster.npu.soc, cluster.npu.name), req.weights, req.kv_cache)
    accept = req.mtp_accept if req.mtp_accept is not None else {0: 0.0, 1: 0.7, 2: 1.1, 3: 1.44}.get(req.mtp, 0.48 * req.mtp)
    if not 0 <= accept <= req.mtp:
        raise PlanError(f"--mtp-accept {accept}: must lie between 0 and --mtp ({req.mtp})")
    return fmts, accept


def _layout(stats, cluster, ranks, tp, scheme, cache, draft, accept, redundancy) -> Layout:
    E = stats.n_routed
    slots = math.ceil(E * (1 + redundancy) / ranks)
    return Layout(ranks=ranks, tp=tp, scheme=scheme, cache=cache, draft=draft, accept=accept,
                  redundant=slots * ranks - E, head_tp=min(ranks, cluster.ranks_per_node))


def _max_batch(stats, cluster, lay: Layout, ctx: int) -> int:
    """Largest sequences per DP group whose memory fits one rank (0 if none)."""
    t = 1 + lay.draft
    fits = lambda b: rank_budget(stats, cluster.npu, lay, b, ctx, b * t)["free"] >= 0
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi) and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _best_batch(stats, cluster, lay, ctx, bmax, tpot, roofline_only) -> (int, Any):
    tp_of = lambda b: decode_step(stats, cluster, lay, b, ctx, not roofline_only).tpot
    if tp_of(1) > tpot:
        return 0, None
    lo, hi = 1, bmax
    if tp_of(hi) <= tpot:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tp_of(mid) <= tpot else (lo, mid)
    return lo, decode_step(stats, cluster, lay, lo, ctx, not roofline_only)


def _candidate_ranks(cluster: Cluster, limit: int) -> List[int]:
    """Whole-node instance sizes: 1, 2, 3, 4, 6, 8, 12, 16, ... nodes (x ranks per node)."""
    rpn = cluster.ranks_per_node
    nodes = sorted({n for k in range(12) for n in (2 ** k, 3 * 2 ** k, 5 * 2 ** k)})
    return [n * rpn for n in nodes if n * rpn <= limit]


def plan(req: Request) -> Dict[str, Any]:
    stats = load_model(req.model)
    cluster = load_cluster(req.cluster)
    fmts, accept = _defaults(req, cluster)
    scheme, cache = fmts.weights, fmts.kv_cache
    ctx = req.context
    kv = stats.kv_bytes_per_seq(ctx, cache)
    total_ranks = cluster.n_ranks
    colocated = cluster.nodes < 2
    # ---- prefill instance size -------------------------------------------------------------
    prefill = None
    reserve = 0
    if not colocated:
        prefill = _plan_prefill(stats, cluster, req, scheme, cache, ctx)
        reserve = prefill["ranks"] * prefill["instances"]
        if reserve >= total_ranks:
            raise PlanError(
                f"the requested prefill throughput needs {prefill['instances']} prefill instances "
                f"of {prefill['ranks'] // cluster.npu.dies} NPUs ({reserve // cluster.npu.dies} NPUs), "
                f"leaving none of the {cluster.n_npus} NPUs for decode")
    # ---- decode search ----------------------------------------------------------------------
    best, reasons = None, []
    for ranks in _candidate_ranks(cluster, total_ranks - reserve):
        for tp in (1, 2, 4):
            if tp > cluster.ranks_per_node or ranks % tp:
                continue
            lay = _layout(stats, cluster, ranks, tp, scheme, cache, req.mtp, accept, req.redundancy)
            bmax = _max_batch(stats, cluster, lay, ctx)
            if bmax == 0:
                bud = rank_budget(stats, cluster.npu, lay, 1, ctx, 1 + req.mtp)
                reasons.append(("memory", ranks, bud))
                continue
            b, step = _best_batch(stats, cluster, lay, ctx, bmax, req.tpot, req.roofline_only)
            if b == 0:
                s1 = decode_step(stats, cluster, lay, 1, ctx, not req.roofline_only)
                reasons.append(("tpot", ranks, (s1, lay)))
                continue
            npu_tput = step.tokens_per_s_per_rank * cluster.npu.dies
            if best is None or npu_tput > best[0] * 1.001:
                best = (npu_tput, lay, b, bmax, step)
    if best is None:
        raise PlanError(_infeasible(reasons, stats, cluster, req, kv, ctx))
    npu_tput, lay, b, bmax, step = best
    instances = 1 if colocated else (total_ranks - reserve) // lay.ranks
    if prefill is not None and not req.prefill_throughput:
        # no prefill demand given: spare whole instances of NPUs go to prefill
        extra = (total_ranks - reserve - instances * lay.ranks) // prefill["ranks"]
        if extra:
            prefill["instances"] += extra
            prefill["tokens_per_s_total"] *= prefill["instances"] / (prefill["instances"] - extra)
            reserve += extra * prefill["ranks"]
    budget = rank_budget(stats, cluster.npu, lay, b, ctx, b * (1 + lay.draft))
    placement = place_experts(stats.n_routed, lay.ranks, lay.redundant)
    tpot = step.tpot
    roof = decode_step(stats, cluster, lay, b, ctx, software=False)
    dies = cluster.npu.dies
    decode = {
        "instances": instances, "npus_per_instance": lay.ranks // dies, "ranks": lay.ranks,
        "attention_dp": lay.dp, "attention_tp": lay.tp, "expert_parallel": lay.ranks,
        "head_tp": lay.head_tp, "expert_slots_per_rank": lay.slots_per_rank(stats.n_routed),
        "redundant_experts": lay.redundant, "batch_per_rank": b // lay.tp if lay.tp > 1 else b,
        "sequences_per_dp_group": b, "sequences_per_instance": b * lay.dp,
        "max_batch_by_memory": bmax, "tpot_ms": tpot * 1e3, "roofline_tpot_ms": roof.tpot * 1e3,
        "step_ms": step.seconds * 1e3,
        "tokens_per_s_per_npu": npu_tput,
        "tokens_per_s_total": npu_tput * lay.ranks // dies * instances,
        "bound": step.bound, "time_parts_ms": {k: v * 1e3 for k, v in step.parts.items()},
        "explain_ms": {c: {r: v * 1e3 for r, v in row.items()} for c, row in step.table.items()},
        "hidden_comm_ms": step.hidden_comm * 1e3,
        "memory_per_rank": {k: v for k, v in budget.items() if k != "weights_by_role"},
        "weights_per_rank_by_role": budget["weights_by_role"],
        "expert_placement": placement,
    }
    host = cluster.host_memory_gib_per_node * GiB
    out = {
        "model": {"name": stats.name, "params": stats.params(),
                  "weights_bytes": stats.weight_bytes(scheme)},
        "cluster": {"name": cluster.name, "npu": cluster.npu.name, "npus": cluster.n_npus,
                    "ranks_per_npu": dies, "ranks": total_ranks, "nodes": cluster.nodes,
                    "ranks_per_node": cluster.ranks_per_node},
        "request": {"context": ctx, "tpot_target_ms": req.tpot * 1e3, "soc": fmts.soc, "weights": scheme,
                    "kv_cache": cache, "indexer_cache": fmts.indexer_cache, "mtp_draft": req.mtp, "mtp_accept": accept,
                    "prefill_throughput": req.prefill_throughput,
                    "roofline_only": req.roofline_only},
        "disaggregation": "colocated (single node)" if colocated else "prefill/decode",
        "kv_cache": {"per_sequence": kv,
                     "per_token_per_layer_avg": kv["total"] / ctx / len(stats.attn)},
        "engram_host_bytes": stats.engram_bytes,
        "decode": decode, "prefill": prefill,
        "unused_npus": (total_ranks - reserve - instances * lay.ranks) // dies,
        "calibration": cal.table(),
    }
    if stats.engram_bytes and stats.engram_bytes > host:
        raise PlanError(f"the Engram tables need {fmt_bytes(stats.engram_bytes)} of host memory "
                        f"per node but {cluster.name} nodes have {fmt_bytes(host)}")
    return out


def _plan_prefill(stats, cluster, req, scheme, cache, ctx) -> Dict[str, Any]:
    dies = cluster.npu.dies
    chunk = min(ctx, PREFILL_CHUNK)
    for ranks, tp in ((r, t) for r in _candidate_ranks(cluster, cluster.n_ranks) for t in (1, 2, 4)
                      if t <= cluster.ranks_per_node):
        lay = _layout(stats, cluster, ranks, tp, scheme, cache, 0, 0.0, req.redundancy)
        bud = rank_budget(stats, cluster.npu, lay, 1, ctx, chunk, PREFILL_DISPATCH_TOKENS)
        if bud["free"] < 0:
            continue
        step = prefill_token_seconds(stats, cluster, lay, ctx, software=not req.roofline_only)
        per_rank = step.tokens_per_s_per_rank
        per_instance = per_rank * ranks
        n = 1 if not req.prefill_throughput else math.ceil(req.prefill_throughput / per_instance)
        return {"instances": n, "npus_per_instance": ranks // dies, "ranks": ranks,
                "attention_tp": tp, "chunk_tokens_per_rank": chunk,
                "attention": "context parallel over the instance (zig-zag), DP across prompts",
                "expert_parallel": ranks, "tokens_per_s_per_npu": per_rank * dies,
                "tokens_per_s_total": per_instance * n,
                "ttft_s_ideal_cp": ctx / per_instance, "bound": step.bound,
                "memory_per_rank": {k: v for k, v in bud.items() if k != "weights_by_role"}}
    lay = _layout(stats, cluster, cluster.n_ranks, min(4, cluster.ranks_per_node), scheme, cache,
                  0, 0.0, req.redundancy)
    bud = rank_budget(stats, cluster.npu, lay, 1, ctx, chunk, PREFILL_DISPATCH_TOKENS)
    raise PlanError(_memory_sentence(bud, stats.kv_bytes_per_seq(ctx, cache), ctx, lay.ranks,
                                     "prefill"))


def _memory_sentence(bud, kv, ctx, ranks, phase) -> str:
    """Why one rank cannot hold the weights, or one request's KV cache, in one sentence."""
    left = bud["capacity"] - bud["total"] + bud["kv_cache"]
    other = bud["activations"] + bud["comm_buffers"] + bud["runtime_reserved"]
    if left <= 0:
        return (f"the {phase} weights need {fmt_bytes(bud['weights'])} per rank even with "
                f"EP{ranks}, which with {fmt_bytes(other)} of activations, HCCL buffers and "
                f"runtime reserve exceeds the {fmt_bytes(bud['capacity'])} of HBM per rank")
    return (f"the KV cache of one request at {fmt_tokens(ctx)} tokens ({fmt_bytes(kv['total'])}) "
            f"exceeds the {fmt_bytes(left)} left per {phase} rank after weights "
            f"({fmt_bytes(bud['weights'])}) and {fmt_bytes(other)} of activations, buffers and "
            f"reserve, of {fmt_bytes(bud['capacity'])} HBM, even with EP{ranks}")


def _infeasible(reasons, stats, cluster, req, kv, ctx) -> str:
    mem = [r for r in reasons if r[0] == "memory"]
    tpot = [r for r in reasons if r[0] == "tpot"]
    if tpot:
        _, ranks, (s1, lay) = min(tpot, key=lambda r: r[2][0].tpot)
        t = s1.tpot
        return (f"even one sequence per rank gives a predicted TPOT of {t * 1e3:.1f} ms at "
                f"{fmt_tokens(ctx)} context (best layout EP{ranks}, bound by {s1.bound}), above "
                f"the {req.tpot * 1e3:.1f} ms target")
    if mem:
        _, ranks, bud = max(mem, key=lambda r: r[1])
        return _memory_sentence(bud, kv, ctx, ranks, "decode")
    return (f"{cluster.name} has {cluster.n_npus} NPUs, too few for one decode instance of "
            f"whole nodes after the prefill reservation")
