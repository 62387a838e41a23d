"""Fixed-deployment query: TPOT, tokens/s per chip, TTFT, memory and the binding resource of
exactly this deployment (`ascend-v4 plan --chips N --batch B`).

The deployment is one instance of N chips: attention DP x TP over its ranks, EP over all of
them, vocab-parallel head within a node; `batch` is the global number of sequences in flight
(the 'Global Batch Size' of the published tables), split evenly over the DP groups (the busiest
group sets the step). TTFT is one prompt of `context` tokens prefilled by the same chips with
ideal context parallelism. Infeasible deployments raise PlanError with one sentence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from . import PlanError
from .catalogue import load_cluster
from .memory import rank_budget
from .planner import Request, _defaults, _layout, _max_batch, load_model
from .roofline import decode_step, prefill_token_seconds
from .units import fmt_bytes, fmt_tokens


@dataclass
class FixedRequest:
    model: str
    cluster: str
    chips: int
    batch: int
    context: int
    weights: Optional[str] = None
    kv_cache: Optional[str] = None
    mtp: int = 1
    mtp_accept: Optional[float] = None
    redundancy: float = 0.0
    tp: int = 1
    roofline_only: bool = False
    soc: Optional[str] = None


def predict(req: FixedRequest, stats=None) -> Dict[str, Any]:
    """Predicted decode and prefill figures of one fixed deployment (see the module docstring)."""
    stats = stats or load_model(req.model)
    full = load_cluster(req.cluster)
    if req.chips < 1 or req.batch < 1:
        raise PlanError(f"--chips {req.chips} and --batch {req.batch} must both be >= 1")
    cluster = full.restrict(req.chips)
    fmts, accept = _defaults(Request(req.model, req.cluster, req.context, 1.0, weights=req.weights,
                                     kv_cache=req.kv_cache, mtp=req.mtp, mtp_accept=req.mtp_accept,
                                     soc=req.soc), cluster)
    scheme, cache = fmts.weights, fmts.kv_cache
    ranks = cluster.n_ranks
    if ranks % req.tp or req.tp > cluster.ranks_per_node:
        raise PlanError(f"attention TP{req.tp} must divide the {ranks} ranks and fit in one node "
                        f"({cluster.ranks_per_node} ranks)")
    lay = _layout(stats, cluster, ranks, req.tp, scheme, cache, req.mtp, accept, req.redundancy)
    seqs = math.ceil(req.batch / lay.dp)
    t = 1 + lay.draft
    budget = rank_budget(stats, cluster.npu, lay, seqs, req.context, seqs * t)
    if budget["free"] < 0:
        raise PlanError(_does_not_fit(stats, cluster, lay, req, seqs, budget))
    software = not req.roofline_only
    step = decode_step(stats, cluster, lay, seqs, req.context, software)
    roof = decode_step(stats, cluster, lay, seqs, req.context, software=False)
    pre_lay = _layout(stats, cluster, ranks, req.tp, scheme, cache, 0, 0.0, req.redundancy)
    pre = prefill_token_seconds(stats, cluster, pre_lay, req.context, software=software)
    dies = cluster.npu.dies
    return {
        "model": stats.name, "cluster": full.name, "npu": cluster.npu.name, "chips": req.chips,
        "ranks": ranks, "attention_dp": lay.dp, "attention_tp": lay.tp,
        "expert_parallel": ranks, "expert_slots_per_rank": lay.slots_per_rank(stats.n_routed),
        "batch": req.batch, "sequences_per_dp_group": seqs, "context": req.context,
        "soc": fmts.soc, "weights": scheme, "kv_cache": cache, "indexer_cache": fmts.indexer_cache,
        "mtp_draft": req.mtp, "mtp_accept": accept,
        "step_ms": step.seconds * 1e3, "tpot_ms": step.tpot * 1e3,
        "roofline_tpot_ms": roof.tpot * 1e3,
        "tokens_per_s_per_chip": req.batch / step.tpot / req.chips,
        "tokens_per_s_total": req.batch / step.tpot,
        "bound": step.bound,
        "ttft_s": req.context * pre.seconds / ranks,
        "prefill_tokens_per_s_per_chip": dies / pre.seconds, "prefill_bound": pre.bound,
        "memory_per_rank": {k: v for k, v in budget.items() if k != "weights_by_role"},
        "max_batch_by_memory": _max_batch(stats, cluster, lay, req.context) * lay.dp,
        "explain_ms": {c: {r: s * 1e3 for r, s in row.items()} for c, row in step.table.items()},
        "hidden_comm_ms": step.hidden_comm * 1e3,
    }


def _does_not_fit(stats, cluster, lay, req, seqs, bud) -> str:
    over = -bud["free"]
    head = (f"{req.batch} sequences at {fmt_tokens(req.context)} context do not fit on "
            f"{req.chips} x {cluster.npu.name}: each rank needs {fmt_bytes(bud['total'])} "
            f"(weights {fmt_bytes(bud['weights'])}, KV cache {fmt_bytes(bud['kv_cache'])} for "
            f"{seqs} sequences, buffers and reserve "
            f"{fmt_bytes(bud['activations'] + bud['comm_buffers'] + bud['runtime_reserved'])}) "
            f"but has {fmt_bytes(bud['capacity'])}, {fmt_bytes(over)} "
            f"({100 * over / bud['capacity']:.0f}%) too much")
    most = _max_batch(stats, cluster, lay, req.context) * lay.dp
    if most:
        return head + f"; at most {most} sequences fit"
    return head + "; not even one sequence fits, use more chips"
