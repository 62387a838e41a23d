"""Find the operator-boundary cells (SinkhornSplit, SinkAttention, RoutedExperts) in a MindIR graph.

MindIR node scopes cannot delimit them: MindSpore parses each shared function (every `ops.*`
wrapper, our helpers) once, so its nodes keep the scope of the first caller anywhere in the model
(measured: the indexer's OneHot and the shared expert's SiLU say `RoutedExperts`). The capture
therefore wraps each boundary cell in Identity markers (capture.Marked) whose primitive attribute
`ascend_v4_boundary = "<op>:<k>:in|out"` survives export. An instance is the set of nodes on
paths from its `in` markers to its `out` markers, plus the input-free nodes (parameter loads,
constant masks) that only feed it.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Set, Tuple

from graph_compile.capture import BOUNDARIES, MARK_ATTR
from graph_compile.mindir import MGraph

BOUNDARY_OPS = dict(BOUNDARIES)


def find_boundaries(g: MGraph) -> Dict[int, Tuple[str, int]]:
    """node index -> (operator name, instance number) for nodes inside a boundary."""
    producer = {n.output: i for i, n in enumerate(g.nodes)}
    preds: List[List[int]] = [[producer[x] for x in n.inputs if x in producer
                               and g.nodes[producer[x]].op != "UpdateState"] for n in g.nodes]
    succs: List[List[int]] = [[] for _ in g.nodes]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    marks: Dict[Tuple[str, int], Dict[str, Set[int]]] = defaultdict(lambda: {"in": set(), "out": set()})
    is_mark = set()
    for i, n in enumerate(g.nodes):
        tag = n.attrs.get(MARK_ATTR) if n.op == "Identity" else None
        if tag:
            op, k, role = tag.split(":")
            marks[(op, int(k))][role].add(i)
            is_mark.add(i)
    groups: Dict[Tuple[str, int], Set[int]] = {}
    extras: Dict[Tuple[str, int], Set[int]] = {}
    for key, m in marks.items():
        fwd = _reach(m["in"], succs, is_mark)
        bwd = _reach(m["out"], preds, is_mark)
        groups[key] = (fwd & bwd) | m["in"] | m["out"]
        extra: Set[int] = set()
        for i in sorted(bwd - fwd - is_mark):          # input-free producers inside the cell
            if all(p in groups[key] or p in extra for p in preds[i]):
                extra.add(i)
        extras[key] = extra
    # an input-free producer that feeds several instances (a constant the compiler merged)
    # stays outside them all: each instance takes it as an input
    claims: Dict[int, int] = defaultdict(int)
    for extra in extras.values():
        for i in extra:
            claims[i] += 1
    out: Dict[int, Tuple[str, int]] = {}
    for key, group in groups.items():
        for i in group | {i for i in extras[key] if claims[i] == 1}:
            if i in out:
                raise ValueError(f"MindIR node {g.nodes[i].output} lies in two boundaries")
            out[i] = key
    return out


def _reach(starts: Set[int], edges: List[List[int]], stop: Set[int]) -> Set[int]:
    """Nodes reachable from `starts` along `edges`, not entering `stop` nodes (starts excluded)."""
    seen: Set[int] = set()
    todo = [j for s in starts for j in edges[s]]
    while todo:
        i = todo.pop()
        if i in seen or i in stop:
            continue
        seen.add(i)
        todo.extend(edges[i])
    return seen


def expected_instances(cfg, graph: str) -> Dict[str, int]:
    """How many instances of each boundary a prefill/decode graph of `cfg` must contain."""
    return {"sinkhorn_mhc": 2 * cfg.n_layers, "sparse_attention": cfg.n_layers,
            "moe_dispatch_combine": cfg.n_layers}
