"""numpy entry point of sinkhorn_mhc running the CPU twin of op_kernel/sinkhorn_mhc.cpp."""
from __future__ import annotations

import numpy as np

from custom_ops.runtime.runner import call_aot

TWIN, FUNC = "sinkhorn_mhc", "SinkhornMhcAot"


def check_args(mixes: np.ndarray, hc_scale, hc_base, hc_mult: int, iters: int) -> None:
    width = (2 + hc_mult) * hc_mult
    if hc_mult < 1 or mixes.ndim < 1 or mixes.shape[-1] != width:
        raise ValueError(f"sinkhorn_mhc: mixes must be [..., (2+hc_mult)*hc_mult] = [..., {width}], got {mixes.shape}")
    if np.shape(hc_scale) != (3,):
        raise ValueError(f"sinkhorn_mhc: hc_scale must have shape [3], got {np.shape(hc_scale)}")
    if np.shape(hc_base) != (width,):
        raise ValueError(f"sinkhorn_mhc: hc_base must have shape [{width}], got {np.shape(hc_base)}")
    if int(iters) != iters or iters < 1:
        raise ValueError(f"sinkhorn_mhc: iters must be a positive integer, got {iters}")


def sinkhorn_mhc(mixes, hc_scale, hc_base, hc_mult: int = 4, iters: int = 20, eps: float = 1e-6):
    """mixes [..., (2+n)n] fp32 -> (pre [..., n], post [..., n], comb [..., n, n]) fp32."""
    mixes = np.asarray(mixes, np.float32)
    check_args(mixes, hc_scale, hc_base, hc_mult, iters)
    lead, n = mixes.shape[:-1], hc_mult
    flat = mixes.reshape(-1, mixes.shape[-1])
    t = flat.shape[0]
    pre, post = np.empty((t, n), np.float32), np.empty((t, n), np.float32)
    comb = np.empty((t, n, n), np.float32)
    attrs = np.array([iters, eps], np.float32)
    call_aot(TWIN, FUNC, [flat, np.asarray(hc_scale, np.float32), np.asarray(hc_base, np.float32), attrs],
             [pre, post, comb])
    return pre.reshape(*lead, n), post.reshape(*lead, n), comb.reshape(*lead, n, n)
