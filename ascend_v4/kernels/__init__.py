"""The kernel registry: which implementation runs each fusable operator of the model.

RuntimeConfig.kernels picks, for the whole model:
  'fused'      one C++ CPU kernel per call (fused_cpu.cpp via ops.Custom aot) for the block
               quant-dequant chain and the Sinkhorn split: float32 and float64, bit-identical
               to the composite where it is exact (the default for running)
  'composite'  the chains as MindSpore primitives (ascend_v4/numerics.py, mhc.py): what graph
               export lowers to MindIR / ONNX, and the reference the fused kernels are tested on
custom_ops=True additionally routes the operator boundaries to the AscendC kernels' CPU twins
(sinkhorn_mhc, sparse_fp8_decode, kv_pack_fp8, moe_dispatch/combine): see custom_ops/.
Cells ask here (`QuantDequant(rt, fmt, block)`, `sinkhorn_kind(rt)`) instead of branching themselves.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from mindspore import Tensor, nn, ops

from ascend_v4.numerics import FORMATS, quant_dequant
from ascend_v4.runtime import RuntimeConfig

SOURCE = Path(__file__).resolve().parent / "fused_cpu.cpp"
@functools.lru_cache(maxsize=None)
def library_path() -> str:
    """The fused kernels' shared object (compiled with g++ on first use, cached by source hash)."""
    from custom_ops.runtime.build import shared_object
    return str(shared_object("fused_cpu", SOURCE, []))


def _aot(entry: str, out_shape, out_dtype) -> ops.Custom:
    return ops.Custom(f"{library_path()}:{entry}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


class QuantDequant(nn.Cell):
    """x [..., K] -> x quant-dequantised to `fmt` ('fp8' e4m3 | 'fp4' e2m1) in blocks of `block`
    along the last dim with ue8m0 scales (numerics.quant_dequant): one fused kernel, or the
    composite chain."""

    def __init__(self, rt: RuntimeConfig, fmt: str, block: int):
        super().__init__()
        self.block, self.params = block, FORMATS[fmt]
        self.fused = rt.kernels == "fused"
        if self.fused:
            self.attrs = Tensor(np.array((block,) + self.params, np.float64))
            self.op = _aot("QuantDequantAot", lambda x, a: x, lambda x, a: x)

    def construct(self, x):
        if self.fused:
            return self.op(x, self.attrs)
        return quant_dequant(x, self.block, *self.params)


class FusedSinkhorn(nn.Cell):
    """mixes [..., (2+n)n] -> (pre [..., n], post [..., n], comb [..., n, n]) as one kernel;
    the same operation order as mhc.sinkhorn_split."""

    def __init__(self, n: int, iters: int, eps: float):
        super().__init__()
        self.n = n
        self.attrs = Tensor(np.array([n, iters, eps], np.float64))
        self.op = _aot("SinkhornSplitAot", lambda m, s, b, a: ([m[0], n], [m[0], n], [m[0], n, n]),
                       lambda m, s, b, a: (m, m, m))

    def construct(self, mixes, scale, base):
        lead, n = mixes.shape[:-1], self.n
        pre, post, comb = self.op(mixes.reshape(-1, mixes.shape[-1]), scale, base, self.attrs)
        return pre.reshape(lead + (n,)), post.reshape(lead + (n,)), comb.reshape(lead + (n, n))


def sinkhorn_kind(rt: RuntimeConfig) -> str:
    """'ascendc' (the sinkhorn_mhc twin, custom_ops), 'fused' or 'composite'."""
    if rt.custom_ops:
        return "ascendc"
    return "fused" if rt.kernels == "fused" else "composite"
