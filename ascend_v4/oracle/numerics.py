"""Number formats and small numeric building blocks of the oracle (V4_SPEC sections 3, 4, 9).

Everything is plain numpy in the oracle's working precision, float32 by default (angles and a
few reductions in float64); `with precision("float64"):` runs it in float64, so that its FP8 /
FP4 rounding decisions match another float64 implementation's exactly. The reference
keeps bf16 activations between operators; the oracle does NOT emulate that rounding, so a
bf16 implementation differs from it by bf16-level noise (tests choose tolerances accordingly).
Quant-dequant helpers follow `inference/kernel.py` (act_quant / fp4_act_quant, inplace mode).
"""
from __future__ import annotations

import contextlib
import math
from functools import lru_cache

import ml_dtypes
import numpy as np

_WORKING = [np.float32]


def real():
    """The working float dtype (float32 unless inside `precision`)."""
    return _WORKING[-1]


@contextlib.contextmanager
def precision(dtype: str):
    """Run the oracle in `dtype` ('float32' or 'float64') inside the block."""
    _WORKING.append(np.dtype(dtype).type)
    try:
        yield
    finally:
        _WORKING.pop()


FP8_MAX = 448.0
FP4_MAX = 6.0
# e2m1 code -> value; bit 3 is the sign, codes 0..7 are the magnitudes (V4_SPEC section 9).
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                        -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)


def pow2_ceil(s: np.ndarray) -> np.ndarray:
    """2^ceil(log2(s)) for positive normal float32 s, exact (frexp instead of log2)."""
    s = np.asarray(s, real())
    mant, exp = np.frexp(s)                      # s = mant * 2^exp, mant in [0.5, 1)
    exp = np.where(mant == 0.5, exp - 1, exp)    # exact powers of two keep their exponent
    return np.ldexp(real()(1.0), exp).astype(real())


def _tiles(x: np.ndarray, block: int):
    """View the last dim as tiles of `block` (a short last tile is padded with zeros)."""
    n = x.shape[-1]
    nt = -(-n // block)
    pad = nt * block - n
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]) if pad else x
    return xp.reshape(*x.shape[:-1], nt, block), n


def fp8_quant_dequant(x: np.ndarray, block: int = 128, scale_fmt="ue8m0",
                      return_scale: bool = False):
    """e4m3 quant-dequant of x [..., n] per tile of `block` along the last dim.

    amax = max(|x|, 1e-4); s = amax * (1/448) (fp32), rounded up to a power of two when
    scale_fmt == 'ue8m0'; q = clamp(x / s, -448, 448) rounded to e4m3 (nearest even).
    A last tile shorter than `block` forms its own tile (the reference asserts n % block == 0).
    Returns float32 [..., n] (and the scales [..., n_tiles] when return_scale).
    """
    x = np.asarray(x, real())
    if x.size == 0:
        return (x.copy(), np.zeros(x.shape[:-1] + (0,), real())) if return_scale else x.copy()
    t, n = _tiles(x, block)
    amax = np.maximum(np.abs(t).max(-1, keepdims=True), real()(1e-4))
    s = (amax * real()(1.0 / FP8_MAX)).astype(real())
    if scale_fmt is not None:
        s = pow2_ceil(s)
    q = e4m3_round(np.clip(t / s, -FP8_MAX, FP8_MAX))
    y = (q * s).reshape(*x.shape[:-1], -1)[..., :n]
    return (y, s[..., 0]) if return_scale else y


def e4m3_round(v: np.ndarray) -> np.ndarray:
    """Round values in [-448, 448] to e4m3 (nearest, ties to the even code) in their own precision.

    float32 goes through ml_dtypes; float64 is rounded directly, since ml_dtypes converts float64
    to float8 through float32 (measured: 21.0000007 -> 21.0 -> 20, where e4m3 of it is 22)."""
    v = np.asarray(v)
    if v.dtype != np.float64:
        return v.astype(ml_dtypes.float8_e4m3fn).astype(v.dtype)
    a = np.abs(v)
    _, ex = np.frexp(a)                                   # a = m * 2^ex, m in [0.5, 1)
    step = np.ldexp(1.0, np.maximum(ex - 1, -6) - 3)      # 3 mantissa bits; subnormals below 2^-6
    return np.copysign(np.rint(a / step) * step, v)


def e2m1_round(v: np.ndarray) -> np.ndarray:
    """Round float32 values (already clamped to [-6, 6]) to e2m1, nearest with ties to even code."""
    v = np.asarray(v, real())
    mags = E2M1_VALUES[:8]
    a = np.abs(v)[..., None]
    d = np.abs(a - mags)                                          # [..., 8]
    best = d.min(-1, keepdims=True)
    # among equally near magnitudes prefer the even code (mantissa bit 0)
    cand = np.where(d == best, np.arange(8), 99)
    even = np.where(cand % 2 == 0, cand, 99).min(-1)
    code = np.where(even < 99, even, cand.min(-1))
    return np.copysign(mags[code], v).astype(real())


def fp4_quant_dequant(x: np.ndarray, block: int = 32, return_scale: bool = False):
    """e2m1 quant-dequant of x [..., n] per block of 32: s = 2^ceil(log2(amax/6)) (kernel.py)."""
    x = np.asarray(x, real())
    if x.size == 0:
        return (x.copy(), np.zeros(x.shape[:-1] + (0,), real())) if return_scale else x.copy()
    t, n = _tiles(x, block)
    amax = np.maximum(np.abs(t).max(-1, keepdims=True), real()(6 * 2.0 ** -126))
    s = pow2_ceil((amax * real()(1.0 / FP4_MAX)).astype(real()))
    q = e2m1_round(np.clip(t / s, -FP4_MAX, FP4_MAX))
    y = (q * s).reshape(*x.shape[:-1], -1)[..., :n]
    return (y, s[..., 0]) if return_scale else y


def mxfp8_quant_dequant(x: np.ndarray, block: int = 32) -> np.ndarray:
    """MXFP8 quant-dequant of x [..., n] per 1x32 block (OCP MX v1.0): s = 2^(floor(log2 amax) - 8),
    8 = e4m3's emax, amax floored at 2^-110; q = clamp(x / s, -448, 448) rounded to e4m3 (nearest even)."""
    x = np.asarray(x, real())
    t, n = _tiles(x, block)
    amax = np.maximum(np.abs(t).max(-1, keepdims=True), real()(2.0 ** -110))
    _, e = np.frexp(amax)                                 # amax = m 2^e, m in [0.5, 1): floor(log2) = e - 1
    s = np.ldexp(real()(1.0), e - 1 - 8).astype(real())
    q = e4m3_round(np.clip(t / s, -FP8_MAX, FP8_MAX))
    return (q * s).reshape(*x.shape[:-1], -1)[..., :n]
def bf16_round(x: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (8 significant bits, nearest with ties to even) in the working precision,
    directly from frexp (float64 is not rounded via float32 first)."""
    x = np.asarray(x, real())
    _, ex = np.frexp(np.abs(x))                           # |x| = m * 2^ex, m in [0.5, 1)
    step = np.ldexp(real()(1.0), np.maximum(ex - 1, -126) - 7).astype(real())
    return (np.rint(x / step) * step).astype(real())


def int8_quant_dequant(x: np.ndarray, block: int, amax_floor: float = 0.0) -> np.ndarray:
    """Symmetric INT8 quant-dequant of x [..., n] per tile of `block` along the last dim:
    s = max(amax, amax_floor) / 127 (1 for an all-zero tile), q = clip(rint(x / s), -127, 127)."""
    x = np.asarray(x, real())
    if x.size == 0:
        return x.copy()
    t, n = _tiles(x, block)
    amax = np.maximum(np.abs(t).max(-1, keepdims=True), real()(amax_floor))
    s = np.where(amax > 0, amax / real()(127.0), real()(1.0)).astype(real())
    q = np.clip(np.rint(t / s), -127, 127)
    return (q * s).reshape(*x.shape[:-1], -1)[..., :n].astype(real())


def kv_cache_round(kv: np.ndarray, rope_dim: int, fmt: str = "fp8") -> np.ndarray:
    """A KV entry [..., D] (RoPE on the last rope_dim dims) as a KV cache of `fmt` holds it:
    fp8 (release): nope dims e4m3 per 64 with ue8m0 scales, rope dims untouched; bf16 (C16): all
    dims bf16; int8 (C8): nope dims INT8 per 64-dim tile, amax floor float32(1e-4), rope dims bf16."""
    kv = np.array(kv, real(), copy=True)
    if fmt == "bf16":
        return bf16_round(kv)
    if fmt == "int8":
        kv[..., :-rope_dim] = int8_quant_dequant(kv[..., :-rope_dim], 64, float(np.float32(1e-4)))
        kv[..., -rope_dim:] = bf16_round(kv[..., -rope_dim:])
        return kv
    if fmt != "fp8":
        raise ValueError(f"unknown KV cache format {fmt!r}")
    kv[..., :-rope_dim] = fp8_quant_dequant(kv[..., :-rope_dim], 64, "ue8m0")  # the reference forces ue8m0
    return kv


def index_round(x: np.ndarray, fmt: str = "fp4") -> np.ndarray:
    """Indexer keys / queries (already Hadamard-rotated) [..., d]: fp4 per 32 (release) or INT8
    per row (per token for keys, per token-head for queries)."""
    if fmt == "int8":
        return int8_quant_dequant(x, x.shape[-1])
    if fmt != "fp4":
        raise ValueError(f"unknown indexer cache format {fmt!r}")
    return fp4_quant_dequant(x, 32)


def rms_norm(x: np.ndarray, weight, eps: float) -> np.ndarray:
    """x [..., d] * rsqrt(mean(x^2) + eps) * weight [d] (weight None: no weight)."""
    x = np.asarray(x, real())
    var = np.mean(np.square(x, dtype=np.float64), -1, keepdims=True)
    y = (x / np.sqrt(var + eps)).astype(real())
    return y if weight is None else (y * np.asarray(weight, real())).astype(real())


def silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x.astype(np.float64)))).astype(real())


def sigmoid(x):
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(real())


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Max-subtracted softmax; all -inf slices give NaN (callers never pass them)."""
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return (e / e.sum(axis, keepdims=True)).astype(real())


# ---- RoPE ---------------------------------------------------------------------------------

def yarn_correction_range(rope_dim: int, base: float, beta_fast: float, beta_slow: float,
                          original_seq_len: int):
    """(low, high) pair indices of the YaRN ramp, as in the reference precompute_freqs_cis."""
    def corr(rot):
        return rope_dim * math.log(original_seq_len / (rot * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(corr(beta_fast)), 0)
    high = min(math.ceil(corr(beta_slow)), rope_dim - 1)
    return low, high


def rope_frequencies(cfg, compressed: bool) -> np.ndarray:
    """Per-pair angular frequencies f_i [rope_head_dim/2] (float64).

    Window-only layers: rope_theta, no YaRN. Compressed layers: compress_rope_theta with YaRN
    when original_seq_len > 0: f <- f/factor*(1-smooth) + f*smooth, smooth = 1 - ramp(low, high).
    """
    return _freqs(cfg.rope_head_dim, float(cfg.compress_rope_theta if compressed else cfg.rope_theta),
                  int(cfg.original_seq_len) if compressed else 0, float(cfg.rope_factor),
                  float(cfg.beta_fast), float(cfg.beta_slow))


@lru_cache(16)
def _freqs(dim, base, original_seq_len, factor, beta_fast, beta_slow):
    i = np.arange(dim // 2, dtype=np.float64)
    f = 1.0 / base ** (2 * i / dim)
    if original_seq_len > 0:
        low, high = yarn_correction_range(dim, base, beta_fast, beta_slow, original_seq_len)
        if low == high:
            high += 0.001
        smooth = 1.0 - np.clip((i - low) / (high - low), 0.0, 1.0)
        f = f / factor * (1 - smooth) + f * smooth
    f.flags.writeable = False
    return f


def rope(x: np.ndarray, positions, cfg, compressed: bool, inverse: bool = False) -> np.ndarray:
    """Rotate the last rope_head_dim dims of x by position (interleaved pairs 2i, 2i+1).

    x: [b, s, D] or [b, s, h, D]; positions: int [s] (position of each index along axis 1).
    inverse=True rotates by -angle (used on the attention output). Returns a new float32 array.
    """
    x = np.array(x, real(), copy=True)
    rd = cfg.rope_head_dim
    ang = np.outer(np.asarray(positions, np.float64), rope_frequencies(cfg, compressed))  # [s, rd/2]
    if inverse:
        ang = -ang
    shape = (1, len(positions)) + (1,) * (x.ndim - 3) + (rd // 2,)
    cos, sin = np.cos(ang).reshape(shape), np.sin(ang).reshape(shape)
    a, b = x[..., -rd::2].astype(np.float64), x[..., -rd + 1::2].astype(np.float64)
    x[..., -rd::2] = a * cos - b * sin
    x[..., -rd + 1::2] = a * sin + b * cos
    return x


# ---- Hadamard -----------------------------------------------------------------------------

@lru_cache(4)
def hadamard_matrix(n: int) -> np.ndarray:
    """Sylvester Hadamard matrix in natural order, H[i, j] = (-1)^popcount(i & j), unscaled."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = np.ones((1, 1), np.float64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    h.flags.writeable = False
    return h


def hadamard(x: np.ndarray) -> np.ndarray:
    """x [..., n] @ H_n * n^-0.5 (fast_hadamard_transform with scale = n^-0.5)."""
    n = x.shape[-1]
    return (np.asarray(x, np.float64) @ hadamard_matrix(n) * n ** -0.5).astype(real())
