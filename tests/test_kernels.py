"""The fused CPU kernels (ascend_v4/kernels) against the numpy oracle and the composite chains.

Block quant-dequant is exact arithmetic (power-of-two scales, round half to even), so the fused
kernel must equal the oracle and the composite bit for bit in float32 and float64. Sinkhorn
calls exp: float64 within 1e-13, float32 within 2e-6 of the oracle (relative to the maximum).
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ascend_v4 import oracle
from ascend_v4.config import load_config
from ascend_v4.runtime import RuntimeConfig

DTYPES = {"float32": np.float32, "float64": np.float64}


def _runtime(kernels: str, dtype: str) -> RuntimeConfig:
    return RuntimeConfig.for_model(load_config("tiny"), kernels=kernels, compute_dtype=dtype)


def _awkward(rng, shape, dtype):
    """Values over 20 binades, exact ties of the e4m3/e2m1 grids, zeros, a block of zeros."""
    x = rng.normal(size=shape) * np.exp2(rng.integers(-10, 10, size=shape))
    x.reshape(-1)[:64] = np.repeat([0.0, -0.0, 1.0625, 2.25, -3.5, 448.0, 6.5e-5, 1e-6], 8)
    x[..., :128][0] = 0.0
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("fmt,block", [("fp8", 128), ("fp8", 64), ("fp4", 32), ("mxfp8", 32)])
def test_fused_quant_dequant_is_bit_exact(dtype, fmt, block):
    from ascend_v4.kernels import QuantDequant
    ms.set_context(mode=ms.PYNATIVE_MODE)
    x = _awkward(np.random.default_rng(block), (3, 5, 256), DTYPES[dtype])
    fused = QuantDequant(_runtime("fused", dtype), fmt, block)(Tensor(x)).asnumpy()
    composite = QuantDequant(_runtime("composite", dtype), fmt, block)(Tensor(x)).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        want = {"fp8": oracle.numerics.fp8_quant_dequant, "fp4": oracle.numerics.fp4_quant_dequant,
                "mxfp8": oracle.numerics.mxfp8_quant_dequant}[fmt](x, block)
    assert fused.dtype == DTYPES[dtype]
    np.testing.assert_array_equal(fused, want)
    np.testing.assert_array_equal(fused, composite)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 2e-6)])
def test_fused_sinkhorn_matches_the_oracle(dtype, tol):
    from ascend_v4.mhc import SinkhornSplit
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(1)
    n, iters, eps = 4, 20, 1e-6
    mixes = rng.normal(size=(2, 7, (2 + n) * n)).astype(DTYPES[dtype])
    scale = rng.uniform(0.5, 2.0, 3).astype(DTYPES[dtype])
    base = rng.normal(size=(2 + n) * n).astype(DTYPES[dtype])
    cell = SinkhornSplit(n, iters, eps, kind="fused")
    got = [o.asnumpy() for o in cell(Tensor(mixes), Tensor(scale), Tensor(base))]
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        want = oracle.hc.sinkhorn(mixes, scale, base, n, iters, eps)
    for g, w, name in zip(got, want, ("pre", "post", "comb")):
        assert g.shape == w.shape and g.dtype == DTYPES[dtype], name
        assert np.abs(g - w).max() <= tol * np.abs(w).max(), name


def test_unknown_kernels_option_is_refused():
    from ascend_v4.config import ConfigError
    with pytest.raises(ConfigError, match="kernels must be one of fused, composite, got 'fast'"):
        RuntimeConfig.for_model(load_config("tiny"), kernels="fast")
