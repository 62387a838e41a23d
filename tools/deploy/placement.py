"""Expert placement over an EP group, with redundant copies of the hottest experts.

Every rank gets the same number of slots, S = ceil((E + redundant) / R); the R*S - E spare slots
hold copies of the experts with the highest expected load (from measured `loads` when given,
else uniform, in which case copies go to the lowest expert ids and EPLB replaces them at run
time). Replicas of one expert sit on different ranks; slots are filled greedily so that the
heaviest remaining replica goes to the least-loaded rank with a free slot (LPT scheduling).
"""
from __future__ import annotations

import heapq
import math
from typing import List, Optional, Sequence

from . import PlanError


def place_experts(n_experts: int, ranks: int, redundant: int,
                  loads: Optional[Sequence[float]] = None) -> List[List[int]]:
    """Return, per rank, the expert ids it holds (len == slots per rank for every rank)."""
    if ranks < 1 or n_experts < 1 or redundant < 0:
        raise PlanError(f"expert placement needs ranks >= 1, experts >= 1, redundant >= 0 "
                        f"(got {ranks}, {n_experts}, {redundant})")
    slots = math.ceil((n_experts + redundant) / ranks)
    spare = slots * ranks - n_experts
    if slots > n_experts and ranks > 1 and spare > n_experts * (ranks - 1):
        raise PlanError(f"{spare} redundant slots exceed what {n_experts} experts can fill")
    load = list(loads) if loads is not None else [1.0] * n_experts
    if len(load) != n_experts:
        raise PlanError(f"loads has {len(load)} entries; expected {n_experts}")
    copies = [1] * n_experts
    # give spare slots to the expert whose per-copy load is highest (ties: lower id)
    heap = [(-load[e], e) for e in range(n_experts)]
    heapq.heapify(heap)
    for _ in range(spare):
        _, e = heapq.heappop(heap)
        copies[e] += 1
        heapq.heappush(heap, (-load[e] / copies[e], e))
    replicas = sorted(((load[e] / copies[e], e) for e in range(n_experts) for _ in range(copies[e])),
                      key=lambda x: (-x[0], x[1]))
    out: List[List[int]] = [[] for _ in range(ranks)]
    rank_load = [(0.0, r) for r in range(ranks)]
    heapq.heapify(rank_load)
    for w, e in replicas:
        skipped = []
        while True:
            lr, r = heapq.heappop(rank_load)
            if len(out[r]) < slots and e not in out[r]:
                break
            skipped.append((lr, r))
        out[r].append(e)
        heapq.heappush(rank_load, (lr + w, r))
        for item in skipped:
            heapq.heappush(rank_load, item)
    return out


def rank_loads(placement: List[List[int]], loads: Sequence[float]) -> List[float]:
    """Expected load per rank when each expert's tokens split evenly over its replicas."""
    count = {}
    for experts in placement:
        for e in experts:
            count[e] = count.get(e, 0) + 1
    return [sum(loads[e] / count[e] for e in experts) for experts in placement]
