"""MindIR graph -> ONNX model: lower every primitive, then outline the boundary cells as functions.

    model = lower_mindir(read_mindir(path), weights, output_names, cfg)

Inputs and outputs keep the MindIR order; `output_names` names the flattened output tuple.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import helper

from graph_compile.boundaries import BOUNDARY_OPS, find_boundaries
from graph_compile.emit import ONNX_DTYPE, Emitter, LoweringError, Val
from graph_compile.functions import DOMAIN, outline_groups
from graph_compile.mindir import MGraph, short_name
from graph_compile.primitives import EMITTERS
from graph_compile.weights import WeightTable

OPSET = 21
_CODE_READERS = ("Gather", "Cast")    # the primitives that accept stored weight codes (emit.Val.role)
IR_VERSION = 10       # onnxruntime 1.31 reads IR <= 13; 10 is the first with function overloads


def _flatten(v) -> List:
    if isinstance(v, (list, tuple)):
        return [x for item in v for x in _flatten(item)]
    return [v]


def lower_mindir(g: MGraph, weights: WeightTable, input_names: Sequence[str],
                 output_names: Sequence[str], graph_name: str,
                 expected: Optional[Dict[str, int]] = None) -> onnx.ModelProto:
    """Lower `g` to an ONNX model (opset 21, `ascend_v4` functions for the boundary cells)."""
    e = Emitter()
    vals: Dict[str, object] = dict(g.consts)
    graph_inputs = []
    if len(input_names) != len(g.inputs):
        raise LoweringError(f"{graph_name}: {len(g.inputs)} graph inputs, {len(input_names)} names given")
    for (name, meta), onnx_name in zip(g.inputs, input_names):
        vals[name] = Val(onnx_name, meta)
        graph_inputs.append(helper.make_tensor_value_info(onnx_name, ONNX_DTYPE[meta.dtype], meta.shape))
    groups = find_boundaries(g)
    if expected is not None:
        found = {c: len({k for op, k in groups.values() if op == c}) for c in BOUNDARY_OPS.values()}
        if found != expected:
            raise LoweringError(f"{graph_name}: boundary cells found {found}, the model has {expected}")
    group_ids: Dict[tuple, int] = {}
    for i, n in enumerate(g.nodes):
        key = groups.get(i)
        e.group = None if key is None else group_ids.setdefault(key, len(group_ids))
        args = [_arg(vals, g, weights, e, x) for x in n.inputs]
        if n.op in ("Depend", "Identity"):
            vals[n.output] = args[0]
        elif n.op == "UpdateState":
            vals[n.output] = None
        elif n.op == "Load":
            vals[n.output] = args[0]
        elif n.op == "MakeTuple":
            vals[n.output] = list(args)
        elif n.op == "TupleGetItem":
            vals[n.output] = args[0][int(args[1])]
        elif n.op in EMITTERS:
            if n.op not in _CODE_READERS and any(isinstance(a, Val) and a.role != "value" for a in args):
                raise LoweringError(f"{graph_name}: stored weight codes reach {n.op} (scope {n.scope}); "
                                    "only Gather and the lookup Cast may read them")
            args = [e.array(a) if isinstance(a, np.ndarray) and a.ndim > 0 else a for a in args]
            vals[n.output] = EMITTERS[n.op](e, args, n.meta, n.attrs, op=n.op)
        else:
            raise LoweringError(f"{graph_name}: no ONNX lowering for MindSpore primitive {n.op} "
                                f"(scope {n.scope})")
    outs = _flatten(vals[g.output])
    if len(outs) != len(output_names):
        raise LoweringError(f"{graph_name}: {len(outs)} outputs, {len(output_names)} names given")
    e.group = None
    graph_outputs = []
    for v, name in zip(outs, output_names):
        v = v if isinstance(v, Val) else e.const(np.asarray(v))
        e.nodes.append(helper.make_node("Identity", [v.name], [name], name=e.fresh("n_out")))
        e.groups.append(None)
        graph_outputs.append(helper.make_tensor_value_info(name, ONNX_DTYPE[v.meta.dtype], v.meta.shape))
    names = {gid: key for key, gid in group_ids.items()}
    _drop_unused_constants(e)
    nodes, functions = outline_groups(e.nodes, e.groups, names, e.const_names, OPSET)
    graph = helper.make_graph(nodes, graph_name, graph_inputs, graph_outputs,
                              initializer=weights.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid(DOMAIN, 1)],
                             functions=functions, ir_version=IR_VERSION, producer_name="ascend_v4.graph_compile")


def _drop_unused_constants(e: Emitter) -> None:
    """Remove Constant nodes nothing reads (value tables whose lookups became Casts)."""
    used = {x for n in e.nodes for x in n.input}
    keep = [k for k, n in enumerate(e.nodes) if n.op_type != "Constant" or n.output[0] in used]
    e.nodes = [e.nodes[k] for k in keep]
    e.groups = [e.groups[k] for k in keep]


def _arg(vals, g: MGraph, weights: WeightTable, e: Emitter, name: str):
    if name in vals:
        return vals[name]
    if name in g.params:
        v = weights.value(e, short_name(name), g.params[name])
        vals[name] = v
        return v
    raise LoweringError(f"value {name} is used before it is defined")
