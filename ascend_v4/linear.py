"""Linear layers over weights in checkpoint format, with the FP8 activation simulation of the release
and the W8A8 INT8 product of converted checkpoints (`w8a8_product`, docs/DESIGN.md 'Converted formats')."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

from ascend_v4.kernels import QuantDequant
from ascend_v4.numerics import int8_quant
from ascend_v4.precision import np_dtype
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.weights import StoredWeight

ACT_BLOCK = 128  # activation quantisation tile along the input dim (V4_SPEC section 9)
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
    gathered experts' int8 product, else their dequantised weights."""
    if stored.kind == "int8":
        return w8a8_product(x, ops.gather(stored.weight, index, 0), ops.gather(stored.scale, index, 0))
    return batched_dense(x, stored.take(index))


def zeros_param(shape, name: str, dtype=np.float32) -> ms.Parameter:
    """A named, non-trainable parameter filled later from a checkpoint."""
    return ms.Parameter(Tensor(np.zeros(shape, dtype)), name=name, requires_grad=False)


def storage_kind(ckpt_kind: str, rt: RuntimeConfig) -> str:
    """How a weight stored as `ckpt_kind` is held: as stored, or in the compute dtype when the
    runtime asks for the float layout (weight_storage 'float'). INT8 stays INT8 always: its
    integer product is the format's semantics, not a storage choice."""
    if ckpt_kind == "int8":
        return "int8"
    if rt.weight_storage == "float" or ckpt_kind not in ("fp8", "fp4", "bf16"):
        return "float"
    return ckpt_kind


class Linear(StoredWeight):
    """y = x W^T with W [out, in] in its checkpoint format `ckpt_kind` (fp8 | fp4 | bf16 | int8 | fp32).

    FP8/FP4 weights reproduce the release's quantised GEMMs: the activation is quantised to e4m3
    in tiles of 128 (ue8m0 scales) before the product, exactly as `act_quant` + `fp8_gemm` do.
    """

    def __init__(self, in_features: int, out_features: int, ckpt_kind: str, rt: RuntimeConfig):
        super().__init__((out_features, in_features), storage_kind(ckpt_kind, rt), np_dtype(rt))
        self.act_quant = ckpt_kind in ("fp8", "fp4")
        if self.act_quant:
            self.quant = QuantDequant(rt, "fp8", ACT_BLOCK)

    def construct(self, x):
        if self.kind == "int8":
            return w8a8_product(x, self.weight, self.scale)
        if self.act_quant:
            x = self.quant(x)
        return dense(x, self.dequantized())
