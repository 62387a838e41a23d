"""Number-format simulation and norms as MindSpore ops (V4_SPEC section 9).

CPU MindSpore has no FP8/FP4 kernels, so quant-dequant is written with float ops that are
bit-exact with an e4m3 / e2m1 cast (round to nearest even, saturate). These run in GRAPH_MODE
and export to MindIR; `ops.round` is round-half-to-even and `pow(2, int)` is exact here.
"""
from __future__ import annotations

from mindspore import Tensor, mint, nn, ops
import mindspore as ms
import numpy as np

FP8_MAX = 448.0
FP4_MAX = 6.0
BF16_MAX = 3.3895313892515355e38
INT8_MAX = 127.0


def _floor_log2(a):
    """Exact floor(log2(a)) for a > 0 (log2 alone is off by one near powers of two)."""
    e = ops.floor(ops.log2(a))
    e = mint.where(ops.pow(2.0, e) > a, e - 1.0, e)
    return mint.where(ops.pow(2.0, e + 1.0) <= a, e + 1.0, e)


def _ceil_log2(a):
    """Exact ceil(log2(a)) for a > 0."""
    e = ops.ceil(ops.log2(a))
    e = mint.where(ops.pow(2.0, e - 1.0) >= a, e - 1.0, e)
    return mint.where(ops.pow(2.0, e) < a, e + 1.0, e)


def round_minifloat(y, mantissa_bits: int, min_exponent: int, max_value: float):
    """Round float `y` onto a minifloat grid (RNE, saturating at +-max_value)."""
    a = ops.clamp(ops.abs(y), 0.0, max_value)
    e = _floor_log2(ops.maximum(a, 2.0 ** min_exponent))
    step = ops.pow(2.0, e - mantissa_bits)
    q = ops.round(a / step) * step
    return ops.sign(y) * ops.minimum(q, max_value)


def quant_dequant(x, block: int, max_value: float, mantissa_bits: int, min_exponent: int,
                  amax_floor: float, ocp_emax: int = -1):
    """Block-wise quant-dequant along the last dim with power-of-two (ue8m0) scales.

    x [..., K] (K % block == 0) -> same shape; scale = 2^ceil(log2(max(amax, floor) / max)) (the
    release's rule), or with ocp_emax >= 0 the OCP MX rule 2^(floor(log2 max(amax, floor)) - ocp_emax)
    (elements then saturate at +-max).
    """
    shape = x.shape
    xb = x.reshape(shape[:-1] + (shape[-1] // block, block))
    amax = ops.maximum(ops.amax(ops.abs(xb), -1, True), amax_floor)
    if ocp_emax >= 0:
        scale = ops.pow(2.0, _floor_log2(amax) - ocp_emax)
    else:
        scale = ops.pow(2.0, _ceil_log2(amax / max_value))
    q = round_minifloat(ops.clamp(xb / scale, -max_value, max_value), mantissa_bits, min_exponent,
                        max_value)
    return (q * scale).reshape(shape)


# format -> (max_value, mantissa_bits, min_exponent, amax_floor, ocp_emax) of quant_dequant.
# mxfp8: MXFP8 activations (OCP MX: e4m3, emax 8, 1x32 blocks); the floor 2^-110 keeps the scale a
# normal float32 (>= 2^-118) for all-zero blocks, whose values are 0 whatever the scale.
FORMATS = {"fp8": (FP8_MAX, 3, -6, 1e-4, -1), "fp4": (FP4_MAX, 1, 0, FP4_MAX * 2.0 ** -126, -1),
           "mxfp8": (FP8_MAX, 3, -6, 2.0 ** -110, 8)}


def fp8_quant_dequant(x, block: int = 128):
    """e4m3 simulation (3 mantissa bits, min normal exponent -6, max 448), amax floor 1e-4."""
    return quant_dequant(x, block, *FORMATS["fp8"])


def fp4_quant_dequant(x, block: int = 32):
    """e2m1 simulation (1 mantissa bit, min normal exponent 0, max 6), amax floor 6 * 2^-126."""
    return quant_dequant(x, block, *FORMATS["fp4"])


def round_bf16(x):
    """x rounded to bfloat16 (8 significant bits, round half to even), kept in x's dtype: the C16
    KV cache. Exact for float32 and float64 inputs (a float64 value is rounded once, not via float32)."""
    return round_minifloat(x, 7, -126, BF16_MAX)


def int8_quant(x, amax_floor: float = 0.0):
    """Symmetric INT8 along the last dim: x [..., k] -> (q [..., k] integer values in x's dtype,
    scale [..., 1]); scale = max(amax|x|, amax_floor) / 127 (1 for an all-zero row),
    q = clamp(round_half_even(x / scale), -127, 127). amax_floor 0 is npu_dynamic_quant."""
    amax = ops.maximum(ops.abs(x).max(axis=-1, keepdims=True), amax_floor)
    scale = mint.where(amax > 0, amax / INT8_MAX, ops.ones_like(amax))
    return ops.clamp(ops.round(x / scale), -INT8_MAX, INT8_MAX), scale


def int8_quant_dequant(x, block: int, amax_floor: float = 0.0):
    """x [..., K] (K % block == 0) -> q * scale with int8_quant per block of `block` along the last dim."""
    shape = x.shape
    q, scale = int8_quant(x.reshape(shape[:-1] + (shape[-1] // block, block)), amax_floor)
    return (q * scale).reshape(shape)


def sum_last(x):
    """x [..., n] -> its sum over the last axis [..., 1], as a product with a column of ones:
    MindSpore's CPU ReduceSum / ReduceMean take 3-5x as long as that BLAS product (256 x 4 x 544
    attention weights: 3.3 vs 0.6 ms; 256 x 1,024 squares: 1.8 vs 0.5 ms)."""
    n = x.shape[-1]
    return ops.matmul(x.reshape(-1, n), ops.ones((n, 1), x.dtype)).reshape(x.shape[:-1] + (1,))


def weighted_sum(w, X):
    """w [..., k], X [..., k, d] -> sum_j w[..., j] X[..., j, :]  [..., d], as one batched matmul
    ([1, k] x [k, d] per leading index; the ReduceSum over the k axis takes 2.6x as long)."""
    k, d = X.shape[-2], X.shape[-1]
    return ops.bmm(w.reshape(-1, 1, k), X.reshape(-1, k, d)).reshape(X.shape[:-2] + (d,))


def dot_rows(x, keys):
    """x [b, m, d], keys [b, n, d] -> x @ keys^T [b, m, n], with the transpose inside the batched
    matmul (keys.swapaxes would copy the keys first: the indexer's key cache every decode step)."""
    return ops.BatchMatMul(transpose_b=True)(x, keys)


def rms_normalize(x, eps: float):
    """x * rsqrt(mean(x^2) + eps) over the last dim (no weight)."""
    return x * ops.rsqrt(sum_last(x * x) / x.shape[-1] + eps)


class RMSNorm(nn.Cell):
    """RMSNorm with a weight in the compute dtype (`ops.rms_norm` has no CPU kernel); kernels
    'fused' runs it as one kernel (ascend_v4.kernels.rms_norm_op) when the weight is 1-D."""

    def __init__(self, dim, eps: float, dtype=np.float32, kernels: str = "composite"):
        super().__init__()
        self.eps = eps
        self.weight = ms.Parameter(Tensor(np.ones(dim, dtype)), name="weight", requires_grad=False)
        from ascend_v4.kernels import rms_norm_op       # the registry imports this module
        self.op = rms_norm_op(kernels) if isinstance(dim, int) else None
        if self.op is not None:
            self.attrs = Tensor(np.array([eps], np.float64))

    def construct(self, x):
        if self.op is not None:
            return self.op(x, self.weight, self.attrs)
        return rms_normalize(x, self.eps) * self.weight


class Normalize(nn.Cell):
    """rms_normalize (no weight) over the last dim: one kernel under kernels 'fused'."""

    def __init__(self, eps: float, dtype=np.float32, kernels: str = "composite"):
        super().__init__()
        self.eps = eps
        from ascend_v4.kernels import rms_norm_op
        self.op = rms_norm_op(kernels)
        if self.op is not None:
            self.attrs = Tensor(np.array([eps], np.float64))
            self.no_weight = Tensor(np.zeros(1, dtype))     # the compute dtype: no Cast per call

    def construct(self, x):
        if self.op is not None:
            return self.op(x, self.no_weight, self.attrs)
        return rms_normalize(x, self.eps)


def hadamard_matrix(n: int, dtype=np.float32) -> np.ndarray:
    """Sylvester Hadamard matrix [n, n] scaled by n^-0.5 (natural order, as fast-hadamard)."""
    h = np.ones((1, 1), np.float32)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return (h * n ** -0.5).astype(dtype)


def rotate_last(x, matrix):
    """x [..., n] @ matrix [n, n] as one 2-D matmul: ops.matmul on [..., n] x [n, n] broadcasts the
    matrix over every leading index first (a 16 MB copy for 1,024 indexer query rows of 128)."""
    return ops.matmul(x.reshape(-1, x.shape[-1]), matrix).reshape(x.shape)

