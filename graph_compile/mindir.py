"""Read an exported MindIR file (MindSpore's protobuf) into a small flat graph description.

The MindIR of a GRAPH_MODE cell is one inlined graph: nodes `REF::<Prim>:<id>` in topological
order, `Constant` nodes for scalars/tuples/tensors, parameters with their data, and a scope
string per node (`domain`, e.g. `Default/model-Transformer/.../core-SinkAttention/Exp-op3`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import ml_dtypes
import numpy as np

# MindIR TensorProto.DataType -> numpy dtype
_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
       10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64, 16: ml_dtypes.bfloat16,
       17: np.float64}


class MindIRError(ValueError):
    """A MindIR file this reader cannot interpret."""


@dataclass
class Meta:
    """Static type of a tensor value: numpy dtype and shape."""
    dtype: Any
    shape: Tuple[int, ...]


@dataclass
class MNode:
    op: str                         # primitive name, e.g. 'MatMulExt'
    inputs: List[str]               # value names (nodes, constants, inputs, parameters)
    output: str
    meta: Any                       # Meta, a list of Meta (tuple outputs) or None
    scope: str
    attrs: Dict[str, Any] = field(default_factory=dict)   # primitive attributes (e.g. Stack axis)


@dataclass
class MGraph:
    name: str
    inputs: List[Tuple[str, Meta]]
    params: Dict[str, np.ndarray]   # full value name -> data
    consts: Dict[str, Any]          # Constant node output -> python / numpy value
    nodes: List[MNode]
    output: str


def _pb():
    from mindspore.train import mind_ir_pb2
    return mind_ir_pb2


def _tensor_meta(t) -> Meta:
    if t.data_type not in _NP:
        raise MindIRError(f"unsupported MindIR data type {t.data_type}")
    return Meta(np.dtype(_NP[t.data_type]), tuple(int(d) for d in t.dims))


def _tensor_value(t) -> np.ndarray:
    meta = _tensor_meta(t)
    return np.frombuffer(t.raw_data, meta.dtype).reshape(meta.shape).copy()


def _attr_value(a) -> Any:
    """A MindIR AttributeProto -> python value (ints, floats, tuples, tensors, None)."""
    pb = _pb().AttributeProto
    t = a.type
    if t == pb.INT64 or t == pb.INT32 or t == pb.INT8 or t == pb.UINT8:
        return int(a.i)
    if t == pb.BOOL:
        return bool(a.i)
    if t == pb.FLOAT:
        return float(a.f)
    if t == pb.DOUBLE:
        return float(a.d)
    if t == pb.STRING:
        return a.s.decode()
    if t == pb.TENSORS:
        return _tensor_value(a.tensors[0])
    if t in (pb.TUPLE, pb.LIST):
        out = []
        for v in a.values:
            if v.ints:
                out.append(int(v.ints[0]))
            elif v.type == pb.FLOAT:
                out.append(float(v.floats[0]) if v.floats else float(v.f))
            elif v.type == pb.DOUBLE:
                out.append(float(v.doubles[0]) if v.doubles else float(v.d))
            elif v.type == pb.STRING:
                out.append(v.strings[0].decode() if v.strings else v.s.decode())
            else:
                out.append(_attr_value(v))
        return tuple(out)
    if t in (pb.NONE, pb.UMONAD, pb.IOMONAD):
        return None
    if t == pb.TYPE_NULL or t == pb.TENSOR:
        # a dtype argument (e.g. SumExt's dtype=None, Cast's target type) -> its enum value
        return int(a.i) if a.i else None
    raise MindIRError(f"unsupported constant attribute type {pb.AttributeType.Name(t)}")


def _node_meta(n) -> Any:
    for a in n.attribute:
        if a.name == "shape":
            pb = _pb().AttributeProto
            if a.type == pb.TENSORS:
                return _tensor_meta(a.tensors[0])
            if a.type == pb.TUPLE:
                return [_tensor_meta(v.tensors[0]) if v.tensors else None for v in a.values]
    return None


def read_mindir(path: str) -> MGraph:
    """Parse `path` (a .mindir file) into an MGraph."""
    pb = _pb()
    model = pb.ModelProto()
    with open(path, "rb") as f:
        model.ParseFromString(f.read())
    g = model.graph
    prims = {p.name: {a.name: _attr_value(a) for a in p.attribute
                      if a.name not in ("input_names", "output_names")} for p in model.primitives}
    params = {}
    for p in g.parameter:
        if p.HasField("external_data") and p.external_data.location:
            raise MindIRError(f"{path}: parameter {p.name} is stored externally (not supported)")
        params[p.name] = _tensor_value(p)
    inputs = [(i.name, _tensor_meta(i.tensor[0])) for i in g.input]
    consts: Dict[str, Any] = {}
    nodes: List[MNode] = []
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = _attr_value(n.attribute[0])
            continue
        if not n.op_type.startswith("REF::"):
            raise MindIRError(f"{path}: unexpected node kind {n.op_type!r} (nested graphs are not supported)")
        ref = n.op_type[len("REF::"):]
        nodes.append(MNode(op=ref.split(":")[0], inputs=list(n.input), output=n.output[0],
                           meta=_node_meta(n), scope=n.domain, attrs=prims.get(ref, {})))
    if len(g.output) != 1:
        raise MindIRError(f"{path}: expected one (tuple) graph output, got {len(g.output)}")
    return MGraph(name=g.name, inputs=inputs, params=params, consts=consts, nodes=nodes,
                  output=g.output[0].name)


def short_name(value_name: str) -> str:
    """'<graph>:model.layers.0.attn.wq_a.weight' -> 'model.layers.0.attn.wq_a.weight'."""
    return value_name.split(":", 1)[1] if ":" in value_name else value_name
