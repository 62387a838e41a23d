"""Linear layers over dequantised weights, with the FP8 activation simulation of the release."""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ascend_v4.numerics import fp8_quant_dequant

ACT_BLOCK = 128  # activation quantisation tile along the input dim (V4_SPEC section 9)


def dense(x, weight):
    """x [..., in] @ weight[out, in]^T -> [..., out] (fp32)."""
    shape = x.shape
    y = ops.matmul(x.reshape(-1, shape[-1]), weight.T)
    return y.reshape(shape[:-1] + (weight.shape[0],))


def zeros_param(shape, name: str, dtype=np.float32) -> ms.Parameter:
    """A named, non-trainable parameter filled later from a checkpoint."""
    return ms.Parameter(Tensor(np.zeros(shape, dtype)), name=name, requires_grad=False)


class Linear(nn.Cell):
    """y = x W^T with W [out, in] held dequantised in fp32.

    `act_quant` reproduces the release's FP8/FP4 GEMMs: the activation is quantised to e4m3 in
    tiles of 128 (ue8m0 scales) before the product, exactly as `act_quant` + `fp8_gemm` do.
    """

    def __init__(self, in_features: int, out_features: int, act_quant: bool = False, dtype=np.float32):
        super().__init__()
        self.act_quant = act_quant
        self.weight = zeros_param((out_features, in_features), "weight", dtype)

    def construct(self, x):
        if self.act_quant:
            x = fp8_quant_dequant(x, ACT_BLOCK)
        return dense(x, self.weight)
