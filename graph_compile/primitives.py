"""MindSpore primitive -> standard ONNX operators (opset 21), one small emitter per primitive.

Each emitter gets the Emitter, the node's arguments (Val for tensors, python values for
constants, lists for tuples), the output Meta (MindIR records every static shape) and the
primitive's attributes. Shape-only primitives lower to Reshape/Expand onto the recorded shape.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from graph_compile.emit import ONNX_DTYPE, Emitter, LoweringError, Val
from graph_compile.mindir import Meta

EMITTERS: Dict[str, Callable] = {}


def emitter(*names):
    def deco(fn):
        for n in names:
            EMITTERS[n] = fn
        return fn
    return deco


def _dtype_of(args):
    """Common dtype for comparisons: the first tensor float dtype, else the first tensor dtype."""
    tens = [a.meta.dtype for a in args if isinstance(a, Val)]
    floats = [d for d in tens if d.kind == "f"]
    if floats:
        return floats[0]
    if tens:
        return tens[0]
    return np.dtype(np.float64)


def _axes(v, rank):
    if v is None:
        return list(range(rank))
    vals = list(v) if isinstance(v, (tuple, list)) else [int(v)]
    return [a % rank if rank else a for a in vals]


# ---- elementwise ---------------------------------------------------------------------------
_BINARY = {"Add": "Add", "Sub": "Sub", "Mul": "Mul", "Div": "Div", "Muls": "Mul", "Divs": "Div",
           "Maximum": "Max", "Minimum": "Min", "Pow": "Pow", "RealDiv": "Div", "Adds": "Add",
           "SubExt": "Sub", "AddExt": "Add"}


@emitter(*_BINARY)
def _binary(e: Emitter, args, meta, attrs, op=None):
    a, b = (e.as_tensor(x, meta.dtype) for x in args[:2])
    if op in ("AddExt", "SubExt") and len(args) > 2 and args[2] not in (None, 1):
        b = e.op("Mul", [b.name, e.as_tensor(args[2], meta.dtype).name], b.meta)
    return e.op(_BINARY[op], [a.name, b.name], meta)


_UNARY = {"Abs": "Abs", "Exp": "Exp", "Log": "Log", "Neg": "Neg", "Sqrt": "Sqrt", "Sign": "Sign",
          "Floor": "Floor", "Ceil": "Ceil", "Sigmoid": "Sigmoid",
          "ReLU": "Relu", "Reciprocal": "Reciprocal", "Erf": "Erf", "Tanh": "Tanh"}


@emitter(*_UNARY)
def _unary(e, args, meta, attrs, op=None):
    return e.op(_UNARY[op], [e.as_tensor(args[0], meta.dtype).name], meta)


@emitter("Rsqrt")
def _rsqrt(e, args, meta, attrs, op=None):
    s = e.op("Sqrt", [e.as_tensor(args[0], meta.dtype).name], meta)
    return e.op("Reciprocal", [s.name], meta)


@emitter("Softplus")
def _softplus(e, args, meta, attrs, op=None):
    """log(1 + exp(x)) = relu(x) + log(1 + exp(-|x|)) (onnxruntime has no double Softplus)."""
    x = e.as_tensor(args[0], meta.dtype)
    t = e.op("Exp", [e.op("Neg", [e.op("Abs", [x.name], meta).name], meta).name], meta)
    t = e.op("Log", [e.op("Add", [t.name, e.const(np.asarray(1, meta.dtype)).name], meta).name], meta)
    return e.op("Add", [e.op("Relu", [x.name], meta).name, t.name], meta)


@emitter("Log1p")
def _log1p(e, args, meta, attrs, op=None):
    """log(1 + x) to full precision for small x: log(u) * x / (u - 1) with u = 1 + x (u == 1: x)."""
    x = e.as_tensor(args[0], meta.dtype)
    u = e.op("Add", [x.name, e.const(np.asarray(1, meta.dtype)).name], meta)
    d = e.op("Sub", [u.name, e.const(np.asarray(1, meta.dtype)).name], meta)
    one = e.op("Equal", [d.name, e.const(np.asarray(0, meta.dtype)).name], Meta(np.dtype(np.bool_), meta.shape))
    safe = e.op("Where", [one.name, e.const(np.asarray(1, meta.dtype)).name, d.name], meta)
    r = e.op("Div", [e.op("Mul", [e.op("Log", [u.name], meta).name, x.name], meta).name, safe.name], meta)
    return e.op("Where", [one.name, x.name, r.name], meta)


@emitter("SiLU")
def _silu(e, args, meta, attrs, op=None):
    x = e.as_tensor(args[0], meta.dtype)
    return e.op("Mul", [x.name, e.op("Sigmoid", [x.name], meta).name], meta)


@emitter("Round")
def _round(e, args, meta, attrs, op=None):
    if len(args) > 1 and args[1] not in (None, 0):
        raise LoweringError("Round with decimals != 0 is not supported")
    return e.op("Round", [e.as_tensor(args[0], meta.dtype).name], meta)


@emitter("ClampScalar", "ClampTensor")
def _clamp(e, args, meta, attrs, op=None):
    x = e.as_tensor(args[0], meta.dtype)
    lo = "" if args[1] is None else e.as_tensor(args[1], meta.dtype).name
    hi = "" if args[2] is None else e.as_tensor(args[2], meta.dtype).name
    if (isinstance(args[1], Val) and args[1].meta.shape) or (isinstance(args[2], Val) and args[2].meta.shape):
        out = x
        if lo:
            out = e.op("Max", [out.name, lo], meta)
        if hi:
            out = e.op("Min", [out.name, hi], meta)
        return out
    return e.op("Clip", [x.name, lo, hi], meta)


_COMPARE = {"Less": "Less", "LessEqual": "LessOrEqual", "Greater": "Greater",
            "GreaterEqual": "GreaterOrEqual", "Equal": "Equal", "EqScalar": "Equal",
            "LessScalar": "Less", "LessEqualScalar": "LessOrEqual", "GreaterScalar": "Greater",
            "GreaterEqualScalar": "GreaterOrEqual", "EqualScalar": "Equal"}


@emitter(*_COMPARE)
def _compare(e, args, meta, attrs, op=None):
    dt = _dtype_of(args)
    a, b = (e.as_tensor(x, dt) for x in args[:2])
    return e.op(_COMPARE[op], [a.name, b.name], meta)


@emitter("LogicalAnd", "LogicalOr", "LogicalNot")
def _logical(e, args, meta, attrs, op=None):
    names = [e.as_tensor(x, np.bool_).name for x in args]
    return e.op({"LogicalAnd": "And", "LogicalOr": "Or", "LogicalNot": "Not"}[op], names, meta)


@emitter("Select")
def _select(e, args, meta, attrs, op=None):
    c = e.as_tensor(args[0], np.bool_)
    x, y = (e.as_tensor(v, meta.dtype) for v in args[1:3])
    return e.op("Where", [c.name, x.name, y.name], meta)


@emitter("Cast")
def _cast(e, args, meta, attrs, op=None):
    x = args[0]
    if isinstance(x, Val) and x.role == "codes":   # uint8/uint16 codes -> int32 lookup indices
        if meta.dtype.kind not in "iu":
            raise LoweringError(f"stored weight codes {x.name} cast to {meta.dtype} (not a lookup index)")
        return Val(x.name, x.meta, role="index")
    return e.as_tensor(x, meta.dtype)


@emitter("RemainderTensorScalar", "FloorMod", "RemainderTensorTensor")
def _remainder(e, args, meta, attrs, op=None):
    a, b = (e.as_tensor(x, meta.dtype) for x in args[:2])
    if meta.dtype.kind in "iu":
        return e.op("Mod", [a.name, b.name], meta, fmod=0)   # sign of the divisor, as Python
    q = e.op("Floor", [e.op("Div", [a.name, b.name], meta).name], meta)
    return e.op("Sub", [a.name, e.op("Mul", [q.name, b.name], meta).name], meta)


@emitter("FloorDiv")
def _floordiv(e, args, meta, attrs, op=None):
    a, b = (e.as_tensor(x, meta.dtype) for x in args[:2])
    if meta.dtype.kind in "iu":     # (a - a mod b) / b is exact floor division for integers
        r = e.op("Mod", [a.name, b.name], meta, fmod=0)
        return e.op("Div", [e.op("Sub", [a.name, r.name], meta).name, b.name], meta)
    return e.op("Floor", [e.op("Div", [a.name, b.name], meta).name], meta)


# ---- reductions ----------------------------------------------------------------------------
@emitter("SumExt", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "MeanExt")
def _reduce(e, args, meta, attrs, op=None):
    x = args[0]
    rank = len(x.meta.shape)
    axes = _axes(args[1] if len(args) > 1 else None, rank)
    keep = bool(args[2]) if len(args) > 2 and args[2] is not None else False
    onnx_op = {"SumExt": "ReduceSum", "ReduceSum": "ReduceSum", "ReduceMean": "ReduceMean",
               "MeanExt": "ReduceMean", "ReduceMax": "ReduceMax", "ReduceMin": "ReduceMin"}[op]
    src = e.as_tensor(x, meta.dtype)
    out = e.op(onnx_op, [src.name, e.ints(axes)], Meta(meta.dtype, meta.shape), keepdims=int(keep))
    return e.reshape(out, meta.shape)


@emitter("ArgMaxWithValue", "ArgMinWithValue")
def _argmax_value(e, args, meta, attrs, op=None):
    x = args[0]
    axis = int(args[1]) % len(x.meta.shape)
    keep = int(bool(args[2]))
    im, vm = meta
    arg = "ArgMax" if op == "ArgMaxWithValue" else "ArgMin"
    red = "ReduceMax" if op == "ArgMaxWithValue" else "ReduceMin"
    idx = e.op(arg, [x.name], Meta(np.dtype(np.int64), im.shape), axis=axis, keepdims=keep,
               select_last_index=0)
    val = e.op(red, [x.name, e.ints([axis])], vm, keepdims=keep)
    return [e.as_tensor(idx, im.dtype), val]


@emitter("Softmax")
def _softmax(e, args, meta, attrs, op=None):
    axes = _axes(args[1] if len(args) > 1 else -1, len(meta.shape))
    if len(axes) != 1:
        raise LoweringError("Softmax over several axes is not supported")
    return e.op("Softmax", [args[0].name], meta, axis=axes[0])


@emitter("TopK")
def _topk(e, args, meta, attrs, op=None):
    x, k = args[0], int(args[1])
    vm, im = meta
    vals, idx = e.node("TopK", [x.name, e.ints([k])], 2, axis=-1, largest=1, sorted=1)
    return [Val(vals, vm), e.as_tensor(Val(idx, Meta(np.dtype(np.int64), im.shape)), im.dtype)]


@emitter("Sort", "SortExt")
def _sort(e, args, meta, attrs, op=None):
    """Stable sort = TopK over the whole axis (ONNX breaks ties by the lower index, both ways)."""
    x = args[0]
    axis = int(args[1] if len(args) > 1 and args[1] is not None else attrs.get("axis", -1)) % len(x.meta.shape)
    desc = bool(args[2] if len(args) > 2 and args[2] is not None else attrs.get("descending", False))
    vm, im = meta
    n = x.meta.shape[axis]
    vals, idx = e.node("TopK", [x.name, e.ints([n])], 2, axis=axis, largest=int(desc), sorted=1)
    return [Val(vals, vm), e.as_tensor(Val(idx, Meta(np.dtype(np.int64), im.shape)), im.dtype)]


@emitter("CumSum", "CumsumExt")
def _cumsum(e, args, meta, attrs, op=None):
    x = e.as_tensor(args[0], meta.dtype)
    axis = int(args[1]) % len(meta.shape)
    return e.op("CumSum", [x.name, e.const(np.array(axis, np.int64)).name], meta,
                exclusive=int(bool(attrs.get("exclusive", False))), reverse=int(bool(attrs.get("reverse", False))))


# ---- linear algebra ------------------------------------------------------------------------
@emitter("MatMulExt", "BatchMatMulExt", "MatMul", "BatchMatMul")
def _matmul(e, args, meta, attrs, op=None):
    a, b = (e.as_tensor(x, meta.dtype) for x in args[:2])
    flags = [bool(attrs.get(k)) for k in ("transpose_a", "transpose_b")]
    for j, extra in enumerate(args[2:4]):     # MindSpore 2.x passes them as constant inputs
        flags[j] = flags[j] or bool(np.asarray(extra).reshape(()))
    if flags[0]:
        raise LoweringError(f"{op} with transpose_a is not supported")
    if flags[1]:                              # weights stored [out, in]: read transposed
        shape = b.meta.shape
        perm = list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
        b = e.op("Transpose", [b.name], Meta(b.meta.dtype, tuple(shape[p] for p in perm)), perm=perm)
    return e.op("MatMul", [a.name, b.name], meta)


# ---- shape and indexing --------------------------------------------------------------------
@emitter("Reshape", "ExpandDims", "Squeeze", "Flatten", "Unsqueeze", "View")
def _reshape(e, args, meta, attrs, op=None):
    return e.reshape(args[0], meta.shape)


@emitter("BroadcastTo")
def _broadcast(e, args, meta, attrs, op=None):
    x = e.as_tensor(args[0], meta.dtype)
    if x.meta.shape == meta.shape:
        return x
    return e.op("Expand", [x.name, e.ints(meta.shape)], meta)


@emitter("Tile")
def _tile(e, args, meta, attrs, op=None):
    x = args[0]
    reps = [int(r) for r in args[1]]
    rank = max(len(reps), len(x.meta.shape))
    x = e.reshape(x, (1,) * (rank - len(x.meta.shape)) + tuple(x.meta.shape))
    reps = [1] * (rank - len(reps)) + reps
    return e.op("Tile", [x.name, e.ints(reps)], meta)


@emitter("Transpose")
def _transpose(e, args, meta, attrs, op=None):
    return e.op("Transpose", [args[0].name], meta, perm=[int(p) for p in args[1]])


@emitter("Concat")
def _concat(e, args, meta, attrs, op=None):
    parts = [e.as_tensor(v, meta.dtype) for v in args[0]]
    axis = int(args[1] if len(args) > 1 else attrs.get("axis", 0)) % len(meta.shape)
    parts = [p for p in parts if p.meta.shape[axis] != 0]
    if len(parts) == 1:
        return parts[0]
    return e.op("Concat", [p.name for p in parts], meta, axis=axis)


@emitter("Stack")
def _stack(e, args, meta, attrs, op=None):
    axis = int(attrs.get("axis", args[1] if len(args) > 1 else 0)) % len(meta.shape)
    parts = []
    for v in args[0]:
        v = e.as_tensor(v, meta.dtype)
        parts.append(e.reshape(v, meta.shape[:axis] + (1,) + meta.shape[axis + 1:]).name)
    return e.op("Concat", parts, meta, axis=axis)


@emitter("StridedSlice")
def _strided_slice(e, args, meta, attrs, op=None):
    x = args[0]
    shape = x.meta.shape
    begin, end, strides = (list(args[i]) for i in (1, 2, 3))
    bmask, emask, ellipsis, newax, shrink = (int(args[i]) for i in range(4, 9))
    if ellipsis or newax:
        raise LoweringError("StridedSlice with ellipsis/new-axis masks is not supported")
    starts, ends, axes, steps = [], [], [], []
    sliced = list(shape)
    for i, (b, en, st) in enumerate(zip(begin, end, strides)):
        if shrink >> i & 1:
            b = b % shape[i] if b < 0 else b
            sl = slice(b, b + 1, 1)
        else:
            sl = slice(None if bmask >> i & 1 else b, None if emask >> i & 1 else en, st)
        s0, s1, s2 = sl.indices(shape[i])
        if (s0, s1, s2) == (0, shape[i], 1):
            continue
        sliced[i] = len(range(s0, s1, s2))
        if s2 < 0 and s1 < 0:
            s1 = -shape[i] - 1           # ONNX: an end below -dim means "through index 0"
        starts.append(s0); ends.append(s1); axes.append(i); steps.append(s2)
    out = x
    if axes:
        out = e.op("Slice", [x.name, e.ints(starts), e.ints(ends), e.ints(axes), e.ints(steps)],
                   Meta(x.meta.dtype, tuple(sliced)))
    return e.reshape(out, meta.shape)


@emitter("Gather")
def _gather(e, args, meta, attrs, op=None):
    axis = int(args[2]) if len(args) > 2 and args[2] is not None else 0
    if len(args) > 3 and args[3]:
        raise LoweringError("Gather with batch_dims is not supported")
    if isinstance(args[1], Val) and args[1].role == "index":
        return _code_lookup(e, args[0], args[1], meta, axis)
    x, idx = args[0], e.as_tensor(args[1], np.int64)
    if x.role == "index":
        raise LoweringError(f"stored weight codes {x.name} are gathered after their cast to indices")
    out = Meta(x.meta.dtype, meta.shape)          # codes keep their stored type (e4m3 / bf16)
    return Val(e.op("Gather", [x.name, idx.name], out, axis=axis % len(x.meta.shape)).name, out, x.role)


def _code_lookup(e, table: Val, codes: Val, meta, axis: int) -> Val:
    """table[codes] with the value table of the codes' stored type -> Cast (exact: the tables are
    those types' values; the WeightTable typed only weights without NaN codes)."""
    from ascend_v4.weights import bf16_values, fp8_code_values
    values = {"float8_e4m3fn": fp8_code_values, "bfloat16": bf16_values}[codes.meta.dtype.name]
    got = e.const_values.get(table.name)
    if axis != 0 or got is None or not np.array_equal(got, values(meta.dtype)):
        raise LoweringError(f"stored {codes.meta.dtype.name} codes {codes.name} index a table that is "
                            "not their value table")
    return e.op("Cast", [codes.name], meta, to=ONNX_DTYPE[np.dtype(meta.dtype)])


@emitter("TensorScatterUpdate")
def _scatter_update(e, args, meta, attrs, op=None):
    x, idx, upd = args[0], e.as_tensor(args[1], np.int64), e.as_tensor(args[2], meta.dtype)
    return e.op("ScatterND", [x.name, idx.name, upd.name], meta)


@emitter("GatherD")
def _gatherd(e, args, meta, attrs, op=None):
    x, dim, idx = args[0], int(args[1]), e.as_tensor(args[2], np.int64)
    return e.op("GatherElements", [x.name, idx.name], meta, axis=dim % len(x.meta.shape))


@emitter("OneHot", "OneHotExt")
def _one_hot(e, args, meta, attrs, op=None):
    """indices [...] -> [..., depth]: Equal against 0..depth-1, then Where(on, off)."""
    idx, depth = e.as_tensor(args[0], np.int64), int(args[1])
    on, off = (e.as_tensor(v, meta.dtype) for v in args[2:4])
    axis = int(args[4]) if len(args) > 4 else int(attrs.get("axis", -1))
    if axis != -1:
        raise LoweringError("OneHot with axis != -1 is not supported")
    col = e.reshape(idx, idx.meta.shape + (1,))
    hit = e.op("Equal", [col.name, e.const(np.arange(depth, dtype=np.int64)).name],
               Meta(np.dtype(np.bool_), meta.shape))
    return e.op("Where", [hit.name, on.name, off.name], meta)


@emitter("Zeros", "Ones", "FillV2", "Full", "ZerosLike", "OnesLike")
def _fill(e, args, meta, attrs, op=None):
    value = {"Zeros": 0, "Ones": 1, "ZerosLike": 0, "OnesLike": 1}.get(op)
    if value is None:
        value = args[1]
        value = np.asarray(value).reshape(())
    return e.op("Expand", [e.as_tensor(value, meta.dtype).name, e.ints(meta.shape)], meta)


@emitter("Arange")
def _arange(e, args, meta, attrs, op=None):
    start, stop, step = (e.as_tensor(v, meta.dtype).name for v in args[:3])
    return e.op("Range", [start, stop, step], meta)
