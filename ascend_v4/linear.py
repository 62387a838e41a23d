"""Linear layers over weights in checkpoint format, with the FP8 activation simulation of the release
and the W8A8 INT8 product of converted checkpoints (`w8a8_product`, docs/DESIGN.md 'Converted formats')."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

from ascend_v4.kernels import FUSED_MAX_ROWS, QuantDequant, WeightMatmulPair
from ascend_v4.numerics import int8_quant
from ascend_v4.precision import np_dtype
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.weights import StoredWeight

ACT_BLOCK = 128  # activation quantisation tile along the input dim (V4_SPEC section 9)
# weight format -> the activation quantisation before its product (format, block along the input dim):
# the release's FP8 simulation (1x128, scale 2^ceil(log2(amax/448))) for FP8 / FP4 weights; MXFP8
# (1x32, OCP scale 2^(floor(log2 amax) - 8), saturating) for the 950's MXFP8 / MXFP4 weights.
ACT_QUANT = {"fp8": ("fp8", ACT_BLOCK), "fp4": ("fp8", ACT_BLOCK),
             "mxfp8": ("mxfp8", 32), "mxfp4": ("mxfp8", 32)}
# x @ W^T with W [out, in] as stored: the CPU kernel reads W transposed, no Transpose kernel
_MATMUL_T = ops.MatMul(transpose_b=True)
_BATCH_MATMUL_T = ops.BatchMatMul(transpose_b=True)


def dense(x, weight):
    """x [..., in] @ weight[out, in]^T -> [..., out]."""
    shape = x.shape
    y = _MATMUL_T(x.reshape(-1, shape[-1]), weight)
    return y.reshape(shape[:-1] + (weight.shape[0],))


def batched_dense(x, weights):
    """x [n, m, in] @ weights[n, out, in]^T -> [n, m, out] (one matrix per batch entry)."""
    return _BATCH_MATMUL_T(x, weights)


def dynamic_quant_int8(x):
    """Per-token symmetric INT8 (npu_dynamic_quant): x [..., in] -> (q [..., in] integer values in
    [-127, 127] in x's dtype, scale [..., 1] = rowmax|x| / 127 in x's dtype), numerics.int8_quant."""
    return int8_quant(x)


# INT8 x INT8 products summed in float32 are exact integers while the sum stays below 2^24:
# k * 127^2 < 2^24 for k <= 1040, so float32 products run in chunks of 1024 input dims, each chunk's
# exact sum converted to int32 and the chunks added in int32 (the cube unit's INT32 accumulator);
# float64 sums are exact to 2^53 (k < 5.5e11): one product. Same result as an int32 matmul, at BLAS speed.
EXACT_CHUNK_F32 = 1024


def int8_accumulate(q, weight, batched: bool):
    """q [.., m, in] integer-valued (|q| <= 127, compute dtype) @ int8 weight^T [.., out, in] ->
    exact INT32 sums [.., m, out]."""
    k = q.shape[-1]
    step = EXACT_CHUNK_F32 if q.dtype == ms.float32 else k
    w = weight.astype(q.dtype)
    acc = None
    for lo in range(0, k, step):
        hi = min(k, lo + step)
        qa, wa = (q, w) if (lo, hi) == (0, k) else (q[..., lo:hi], w[..., lo:hi])
        part = (batched_dense(qa, wa) if batched else dense(qa, wa)).astype(ms.int32)
        acc = part if acc is None else acc + part
    return acc


def w8a8_product(x, weight, scale):
    """W8A8 as npu_dynamic_quant + npu_quant_matmul(pertoken_scale, weight scale):
    y = (q_x @ W^T, INT32 accumulation) * w_scale[out] * x_scale[token], in x's dtype.
    x [..., m, in] with weight int8 [out, in], scale [out] -> [..., m, out]; or batched: x [n, m, in]
    with weight [n, out, in], scale [n, out] -> [n, m, out]."""
    q, x_scale = dynamic_quant_int8(x)
    batched = weight.ndim == 3
    acc = int8_accumulate(q.astype(x.dtype), weight, batched)
    w_scale = scale.expand_dims(1) if batched else scale                         # [n, 1, out] | [out]
    return acc.astype(x.dtype) * w_scale.astype(x.dtype) * x_scale


def stacked_product(x, stored, index):
    """x [n, m, in] through experts `index` [n] of a stacked StoredWeight -> [n, m, out]: the
    gathered experts' int8 product; the fused weight-quant matmul on the stored bytes for tiles of
    at most FUSED_MAX_ROWS rows; else the gathered experts dequantised and multiplied."""
    if stored.kind == "int8":
        return w8a8_product(x, ops.gather(stored.weight, index, 0), ops.gather(stored.scale, index, 0))
    if stored.matmul is not None and x.shape[1] <= FUSED_MAX_ROWS:
        return stored.matmul(x, stored.weight, stored.scale_or_none(), index)
    return batched_dense(x, stored.take(index, after=x))


def grouped_product(x, stored):
    """x [m, g, in] through row group i of a 2-D StoredWeight [g*r, in] for x[:, i] -> [m, g, r]
    (the attention's grouped wo_a): fused for at most FUSED_MAX_ROWS rows (in this layout), else
    dequantised and batched over the groups."""
    m, g = x.shape[0], x.shape[1]
    if stored.matmul is not None and m <= FUSED_MAX_ROWS:
        return stored.matmul(x, stored.weight, stored.scale_or_none())
    w = stored.dequantized(after=x).reshape(g, stored.shape[0] // g, -1)
    return batched_dense(x.swapaxes(0, 1), w).swapaxes(0, 1)


def paired_product(pair, x, first, second, index=None):
    """(first(x), second(x)) for two weights read by the same x. pair: the owner's
    weight_pair(first, second) (None: two calls). Two Linears: x [..., in] (FP8 / FP4 quantise x
    once); two expert stacks: x [n, m, in] through experts `index` [n], as stacked_product (the
    caller has quantised x). Up to FUSED_MAX_ROWS rows per matrix one kernel reads both weights;
    the results are the two calls' exactly."""
    shape = x.shape
    if index is not None:
        if pair is None or shape[1] > FUSED_MAX_ROWS:
            return stacked_product(x, first, index), stacked_product(x, second, index)
        return pair(x, first.weight, first.scale_or_none(), second.weight, second.scale_or_none(), index)
    rows = 1
    for d in shape[:-1]:
        rows *= d
    if pair is None or rows > FUSED_MAX_ROWS:
        return first(x), second(x)
    if first.act_quant:
        x = first.quant(x)
    a, b = pair(x.reshape(rows, shape[-1]), first.weight, first.scale_or_none(), second.weight,
                second.scale_or_none())
    return a.reshape(shape[:-1] + (first.shape[0],)), b.reshape(shape[:-1] + (second.shape[0],))


def weight_pair(first, second):
    """The one-kernel product of two weights that read the same x (paired_product), or None: only
    when both run the fused weight matmul on one format, as two Linears with the same activation
    quantisation or as two expert stacks of the same experts."""
    experts = len(first.shape) == 3
    same = (first.kind == second.kind and len(second.shape) == len(first.shape)
            and first.shape[:-2] == second.shape[:-2] and first.shape[-1] == second.shape[-1]
            and getattr(first, "act_quant", False) == getattr(second, "act_quant", False)
            and getattr(first, "act_block", 0) == getattr(second, "act_block", 0))
    if first.matmul is None or second.matmul is None or not same:
        return None
    return WeightMatmulPair(first.kind, experts)


def stored_product(x, stored):
    """x [..., in] @ W^T for a 2-D StoredWeight -> [..., out]: the fused weight-quant matmul for at
    most FUSED_MAX_ROWS rows (decode), else the dequantised weight through the BLAS matmul."""
    shape = x.shape
    rows = 1
    for d in shape[:-1]:
        rows *= d
    if stored.matmul is not None and rows <= FUSED_MAX_ROWS:
        y = stored.matmul(x.reshape(rows, shape[-1]), stored.weight, stored.scale_or_none())
        return y.reshape(shape[:-1] + (stored.shape[0],))
    return dense(x, stored.dequantized(after=x))


def zeros_param(shape, name: str, dtype=np.float32) -> ms.Parameter:
    """A named, non-trainable parameter filled later from a checkpoint."""
    return ms.Parameter(Tensor(np.zeros(shape, dtype)), name=name, requires_grad=False)


def act_quant(ckpt_kind: str, rt: RuntimeConfig):
    """The activation QuantDequant a weight of `ckpt_kind` multiplies (ACT_QUANT), or None."""
    if ckpt_kind not in ACT_QUANT:
        return None
    return QuantDequant(rt, *ACT_QUANT[ckpt_kind])


def storage_kind(ckpt_kind: str, rt: RuntimeConfig) -> str:
    """How a weight stored as `ckpt_kind` is held: as stored, or in the compute dtype when the
    runtime asks for the float layout (weight_storage 'float'). INT8 / INT4 are held as INT8 always:
    their integer product is the format's semantics, not a storage choice."""
    if ckpt_kind in ("int8", "int4"):                               # INT4: unpacked at load
        return "int8"
    if rt.weight_storage == "float" or ckpt_kind not in ("fp8", "fp4", "mxfp8", "mxfp4", "bf16"):
        return "float"
    return "fp4" if ckpt_kind == "mxfp4" else ckpt_kind           # MXFP4: the FP4 bytes


class Linear(StoredWeight):
    """y = x W^T with W [out, in] in its checkpoint format `ckpt_kind` (fp8 | fp4 | mxfp8 | mxfp4 |
    bf16 | int8 | fp32).

    FP8/FP4 weights reproduce the release's quantised GEMMs: the activation is quantised to e4m3
    in tiles of 128 (ue8m0 scales) before the product, exactly as `act_quant` + `fp8_gemm` do;
    MXFP8/MXFP4 weights quantise it to MXFP8 in 1x32 blocks (ACT_QUANT).
    """

    def __init__(self, in_features: int, out_features: int, ckpt_kind: str, rt: RuntimeConfig):
        super().__init__((out_features, in_features), storage_kind(ckpt_kind, rt), np_dtype(rt),
                         kernels=rt.kernels)
        self.act_quant = ckpt_kind in ACT_QUANT
        self.act_block = ACT_QUANT[ckpt_kind][1] if self.act_quant else 0
        if self.act_quant:
            self.quant = act_quant(ckpt_kind, rt)

    def construct(self, x):
        if self.kind == "int8":
            return w8a8_product(x, self.weight, self.scale)
        if self.act_quant:
            x = self.quant(x)
        return stored_product(x, self)
