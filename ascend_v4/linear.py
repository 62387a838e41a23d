"""Linear layers over weights in checkpoint format, with the FP8 activation simulation of the release."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

from ascend_v4.kernels import QuantDequant
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


def zeros_param(shape, name: str, dtype=np.float32) -> ms.Parameter:
    """A named, non-trainable parameter filled later from a checkpoint."""
    return ms.Parameter(Tensor(np.zeros(shape, dtype)), name=name, requires_grad=False)


def storage_kind(ckpt_kind: str, rt: RuntimeConfig) -> str:
    """How a weight stored as `ckpt_kind` is held: as stored, or in the compute dtype when the
    runtime asks for the float layout (weight_storage 'float')."""
    if rt.weight_storage == "float" or ckpt_kind not in ("fp8", "fp4", "bf16"):
        return "float"
    return ckpt_kind


class Linear(StoredWeight):
    """y = x W^T with W [out, in] in its checkpoint format `ckpt_kind` (fp8 | fp4 | bf16 | fp32).

    FP8/FP4 weights reproduce the release's quantised GEMMs: the activation is quantised to e4m3
    in tiles of 128 (ue8m0 scales) before the product, exactly as `act_quant` + `fp8_gemm` do.
    """

    def __init__(self, in_features: int, out_features: int, ckpt_kind: str, rt: RuntimeConfig):
        super().__init__((out_features, in_features), storage_kind(ckpt_kind, rt), np_dtype(rt))
        self.act_quant = ckpt_kind in ("fp8", "fp4")
        if self.act_quant:
            self.quant = QuantDequant(rt, "fp8", ACT_BLOCK)

    def construct(self, x):
        if self.act_quant:
            x = self.quant(x)
        return dense(x, self.dequantized())
