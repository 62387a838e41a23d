"""An ONNX node buffer with typed values: the target of the MindIR primitive emitters.

Values are `Val(name, meta)` for tensors; python scalars/tuples/None stay python until an
emitter turns them into constants of the dtype it needs. Every ONNX node records the boundary
group of the MindIR node that produced it (see boundaries.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import ml_dtypes
import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from graph_compile.mindir import Meta

ONNX_DTYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.bool_): TensorProto.BOOL, np.dtype(np.float16): TensorProto.FLOAT16,
              np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
              np.dtype(np.uint16): TensorProto.UINT16, np.dtype(ml_dtypes.bfloat16): TensorProto.BFLOAT16,
              np.dtype(ml_dtypes.float8_e4m3fn): TensorProto.FLOAT8E4M3FN}


SPLAT_BYTES = 4096      # uniform constant arrays above this size are emitted as Expand of a scalar


class LoweringError(ValueError):
    """A MindIR node the ONNX lowering cannot express."""


@dataclass
class Val:
    """A typed ONNX value. role 'codes': a stored FP8 / bf16 weight (or rows gathered from one) that
    the MindIR holds as its uint8 / uint16 bit patterns, typed here (meta.dtype e4m3 / bfloat16);
    role 'index': those codes cast to int32 as lookup indices. Code values have two readers only:
    Gather (rows of the codes) and the value-table lookup, which lowers to a Cast (primitives.py)."""
    name: str
    meta: Meta
    role: str = "value"


class Emitter:
    def __init__(self):
        self.nodes: List[NodeProto] = []
        self.groups: List[Optional[int]] = []      # boundary group per node (None: top level)
        self.group: Optional[int] = None           # group of the nodes being emitted now
        self._n = 0
        self._consts: Dict[Any, str] = {}
        self.const_names = set()                   # outputs of Constant nodes (copied into functions)
        self.const_values: Dict[str, np.ndarray] = {}   # Constant output name -> its value

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs) -> List[str]:
        outs = [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.fresh("n_" + op), domain=domain,
                                           **attrs))
        self.groups.append(self.group)
        return outs

    def op(self, op: str, inputs: Sequence[str], meta: Meta, **attrs) -> Val:
        return Val(self.node(op, inputs, 1, **attrs)[0], meta)

    def const(self, value, dtype=None) -> Val:
        """A Constant node (cached per value and dtype, top level)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh("n_Constant"),
                                               value=numpy_helper.from_array(arr, name)))
            self.groups.append(None)
            self._consts[key] = name
            self.const_names.add(name)
            self.const_values[name] = arr
        return Val(self._consts[key], Meta(arr.dtype, arr.shape))

    def array(self, arr: np.ndarray) -> Val:
        """A constant array operand; a large uniform one (MindSpore's folded zeros/ones) becomes
        Expand(scalar, shape), so the file does not carry its bytes."""
        arr = np.asarray(arr)
        if arr.nbytes > SPLAT_BYTES and arr.tobytes() == arr.reshape(-1)[:1].tobytes() * arr.size:
            return self.op("Expand", [self.const(arr.reshape(-1)[0]).name, self.ints(arr.shape)],
                           Meta(arr.dtype, arr.shape))
        return self.const(arr)

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64).reshape(-1)).name

    # ---- typed helpers -------------------------------------------------------------------
    def as_tensor(self, v, dtype) -> Val:
        """A Val or python value -> Val of numpy dtype `dtype` (Cast when needed)."""
        dtype = np.dtype(dtype)
        if isinstance(v, Val):
            if v.role != "value":
                raise LoweringError(f"stored weight codes {v.name} are read other than by a lookup")
            if v.meta.dtype == dtype:
                return v
            return self.op("Cast", [v.name], Meta(dtype, v.meta.shape), to=ONNX_DTYPE[dtype])
        if v is None:
            raise LoweringError("a None value where a tensor is needed")
        return self.const(np.asarray(v).astype(dtype))

    def reshape(self, v: Val, shape) -> Val:
        shape = tuple(int(d) for d in shape)
        if v.meta.shape == shape:
            return v
        return self.op("Reshape", [v.name, self.ints(shape)], Meta(v.meta.dtype, shape))
