"""Outline groups of lowered nodes into `ascend_v4` ONNX functions (model-local FunctionProtos).

Each boundary instance becomes one node `ascend_v4.<op>` (overload = instance number, since the
static shapes inside differ per layer) whose function body is the group's standard-op nodes,
so onnxruntime executes the body on CPU and an Ascend backend can bind the node to its kernel.
Constants used inside are copied into the body; weight dequantisation that only the group uses
moves inside, so the function receives the FP8 weights and their scales.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Set, Tuple

from onnx import FunctionProto, NodeProto, helper

DOMAIN = "ascend_v4"


def _pull_in_producers(nodes: Sequence[NodeProto], groups: List[Optional[int]], const_names: Set[str]) -> None:
    """Top-level nodes feeding only one group from initializers/constants join that group."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    consumers: Dict[str, Set[int]] = defaultdict(set)
    for i, n in enumerate(nodes):
        for x in n.input:
            consumers[x].add(i)
    for i in reversed(range(len(nodes))):
        n = nodes[i]
        if groups[i] is not None or n.op_type == "Constant":
            continue
        users = {groups[j] for o in n.output for j in consumers[o]}
        if len(users) != 1 or None in users or not any(consumers[o] for o in n.output):
            continue
        if all(x in const_names or x not in producer or groups[producer[x]] is not None for x in n.input):
            groups[i] = users.pop()


def _toposort(nodes: List[NodeProto]) -> List[NodeProto]:
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    deps = [{producer[x] for x in n.input if x in producer} for n in nodes]
    users: Dict[int, List[int]] = defaultdict(list)
    for i, d in enumerate(deps):
        for p in d:
            users[p].append(i)
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(nodes[i])
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):
        stuck = [nodes[i] for i, r in enumerate(remaining) if r > 0][:6]
        raise ValueError("outlined graph has a cycle through " +
                         ", ".join(f"{n.op_type}:{n.name}" for n in stuck))
    return out


def outline_groups(nodes: List[NodeProto], groups: List[Optional[int]], names: Dict[int, Tuple[str, int]],
                   const_names: Set[str], opset: int) -> Tuple[List[NodeProto], List[FunctionProto]]:
    """-> (graph nodes with one call node per group, the function definitions)."""
    groups = list(groups)
    _pull_in_producers(nodes, groups, const_names)
    const_node = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
    members: Dict[int, List[int]] = defaultdict(list)
    for i, gid in enumerate(groups):
        if gid is not None:
            members[gid].append(i)
    consumer_groups: Dict[str, Set[Optional[int]]] = defaultdict(set)
    for i, n in enumerate(nodes):
        for x in n.input:
            consumer_groups[x].add(groups[i])
    out_nodes: List[NodeProto] = [n for i, n in enumerate(nodes) if groups[i] is None]
    functions: List[FunctionProto] = []
    for gid, idx in sorted(members.items()):
        op, k = names[gid]
        body_nodes = [nodes[i] for i in idx]
        produced = {o for n in body_nodes for o in n.output}
        inputs, consts = [], []
        for n in body_nodes:
            for x in n.input:
                if x and x not in produced and x not in inputs and x not in consts:
                    (consts if x in const_node else inputs).append(x)
        outputs = [o for n in body_nodes for o in n.output
                   if consumer_groups[o] - {gid}]
        body = [const_node[c] for c in consts] + body_nodes
        functions.append(helper.make_function(DOMAIN, op, inputs, outputs, body,
                                              [helper.make_opsetid("", opset)], overload=str(k)))
        out_nodes.append(helper.make_node(op, inputs, outputs, name=f"{op}_{k}", domain=DOMAIN,
                                          overload=str(k)))
    top_inputs = {x for n in out_nodes for x in n.input}
    out_nodes = [n for n in out_nodes if n.op_type != "Constant" or n.output[0] in top_inputs]
    return _toposort(out_nodes), functions
