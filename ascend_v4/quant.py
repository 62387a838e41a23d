"""Weight quantisation in numpy (V4_SPEC section 9): FP8 e4m3 / FP4 e2m1 with ue8m0 scales.

- FP8 weights: [out, in] e4m3, one power-of-two scale per 128x128 block (edge blocks partial),
  scale tensor float8_e8m0fnu [ceil(out/128), ceil(in/128)].
- FP4 weights: e2m1 codes packed two per byte (LOW nibble = even column), int8 [out, in/2],
  one power-of-two scale per 1x32 ([out, in/32]).
- `fp4_to_fp8` recasts FP4 blocks to FP8 blocks exactly as the release's converter does.
Scales are 2^ceil(log2(amax / max_value)), computed exactly from the float32 bit pattern.
Casts go through ml_dtypes (round to nearest even); values are clipped first (saturation).
"""
from __future__ import annotations

from typing import Tuple

import ml_dtypes
import numpy as np

FP8_MAX = 448.0
FP4_MAX = 6.0
FP8_BLOCK = 128
FP4_BLOCK = 32
FP8_AMAX_FLOOR = 1e-4
FP4_AMAX_FLOOR = 6.0 * 2.0 ** -126     # as the release's fp4 quant kernel
E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
E2M1 = np.dtype(ml_dtypes.float4_e2m1fn)
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
# e2m1 code (4 bits: sign, 2 exponent, 1 mantissa) -> value
FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                       -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)


class QuantError(ValueError):
    """A tensor has the wrong rank, shape or dtype for a quantisation format."""


def ceil_log2(x: np.ndarray) -> np.ndarray:
    """Exact ceil(log2(x)) for positive float32 x (int32), from frexp: x = m 2^e, m in [.5, 1)."""
    m, e = np.frexp(np.asarray(x, np.float32))
    return np.where(m == 0.5, e - 1, e).astype(np.int32)


def pow2_scale(amax: np.ndarray, max_value: float, floor: float) -> np.ndarray:
    """ue8m0 scale 2^ceil(log2(max(amax, floor) / max_value)) as float32 (exact powers of two)."""
    a = np.maximum(np.asarray(amax, np.float32), np.float32(floor))
    return np.ldexp(np.float32(1.0), ceil_log2(a / np.float32(max_value))).astype(np.float32)


def _check_2d(w: np.ndarray, what: str) -> None:
    if w.ndim != 2:
        raise QuantError(f"{what}: expected a 2-D [out, in] weight, got shape {w.shape}")


def _block_view(w: np.ndarray, block: int) -> Tuple[np.ndarray, int, int]:
    """Zero-pad w [out, in] to whole blocks -> [bo, block, bi, block] plus the original dims."""
    out, inp = w.shape
    bo, bi = -(-out // block), -(-inp // block)
    padded = np.zeros((bo * block, bi * block), np.float32)
    padded[:out, :inp] = w
    return padded.reshape(bo, block, bi, block), out, inp


def expand_block_scale(scale: np.ndarray, shape: Tuple[int, int], block: int = FP8_BLOCK) -> np.ndarray:
    """Scale [ceil(out/b), ceil(in/b)] -> per-element float32 [out, in]."""
    s = np.asarray(scale).astype(np.float32)
    return np.repeat(np.repeat(s, block, 0), block, 1)[:shape[0], :shape[1]]


def quantize_fp8(w: np.ndarray, block: int = FP8_BLOCK) -> Tuple[np.ndarray, np.ndarray]:
    """w float [out, in] -> (e4m3 [out, in], e8m0 scale [ceil(out/block), ceil(in/block)])."""
    w = np.asarray(w, np.float32)
    _check_2d(w, "quantize_fp8")
    blocks, out, inp = _block_view(w, block)
    scale = pow2_scale(np.abs(blocks).max(axis=(1, 3)), FP8_MAX, FP8_AMAX_FLOOR)   # [bo, bi]
    full = expand_block_scale(scale, (out, inp), block)
    q = np.clip(w / full, -FP8_MAX, FP8_MAX).astype(E4M3)
    return q, scale.astype(E8M0)


def dequantize_fp8(q: np.ndarray, scale: np.ndarray, block: int = FP8_BLOCK) -> np.ndarray:
    """(e4m3 [out, in], scale [ceil(out/b), ceil(in/b)]) -> float32 [out, in] (exact)."""
    _check_2d(q, "dequantize_fp8")
    want = (-(-q.shape[0] // block), -(-q.shape[1] // block))
    if tuple(scale.shape) != want:
        raise QuantError(f"dequantize_fp8: scale shape {tuple(scale.shape)} does not match "
                         f"weight {tuple(q.shape)} in {block}x{block} blocks (expected {want})")
    return q.astype(np.float32) * expand_block_scale(scale, q.shape, block)


def pack_fp4(codes: np.ndarray) -> np.ndarray:
    """uint8 e2m1 codes [out, in] (in even) -> int8 [out, in/2], low nibble = even column."""
    c = np.asarray(codes, np.uint8) & 0x0F
    return (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8).view(np.int8)


def unpack_fp4(packed: np.ndarray) -> np.ndarray:
    """int8/uint8 [out, in/2] -> uint8 codes [out, in]."""
    p = np.asarray(packed).view(np.uint8)
    codes = np.empty((p.shape[0], p.shape[1] * 2), np.uint8)
    codes[:, 0::2] = p & 0x0F
    codes[:, 1::2] = p >> 4
    return codes


def _row_blocks(w: np.ndarray, block: int, name: str) -> np.ndarray:
    """A float weight [out, in] (in % block == 0) -> float32 [out, in/block, block] (1 x block tiles)."""
    w = np.asarray(w, np.float32)
    _check_2d(w, name)
    out, inp = w.shape
    if inp % block:
        raise QuantError(f"{name}: input dim {inp} is not a multiple of {block}")
    return w.reshape(out, inp // block, block)


def quantize_fp4(w: np.ndarray, block: int = FP4_BLOCK) -> Tuple[np.ndarray, np.ndarray]:
    """w float [out, in] (in % 32 == 0) -> (packed int8 [out, in/2], e8m0 scale [out, in/32])."""
    wb = _row_blocks(w, block, "quantize_fp4")                                    # [out, in/32, 32]
    out, inp = wb.shape[0], wb.shape[1] * block
    scale = pow2_scale(np.abs(wb).max(axis=2), FP4_MAX, FP4_AMAX_FLOOR)          # [out, in/32]
    x = np.clip(wb / scale[:, :, None], -FP4_MAX, FP4_MAX).reshape(out, inp)
    codes = x.astype(E2M1).view(np.uint8)     # round to nearest even on the e2m1 grid
    return pack_fp4(codes), scale.astype(E8M0)


def dequantize_fp4(packed: np.ndarray, scale: np.ndarray, block: int = FP4_BLOCK) -> np.ndarray:
    """(int8 [out, in/2], scale [out, in/32]) -> float32 [out, in] (exact)."""
    _check_2d(packed, "dequantize_fp4")
    out, inp = packed.shape[0], packed.shape[1] * 2
    if tuple(scale.shape) != (out, inp // block):
        raise QuantError(f"dequantize_fp4: scale shape {tuple(scale.shape)} does not match "
                         f"weight [{out}, {inp}] in 1x{block} blocks (expected {(out, inp // block)})")
    values = FP4_VALUES[unpack_fp4(packed)]
    return values * np.repeat(np.asarray(scale).astype(np.float32), block, axis=1)


def fp4_to_fp8(packed: np.ndarray, scale: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Recast FP4 (1x32 scales) to FP8 (128x128 scales) as the release's converter does.

    Per 128x128 block the new scale is max(1x32 scales) / 2^6; each FP4 value times its
    offset (its scale / the new scale, a power of two <= 2^6) fits e4m3 since 6 * 2^6 = 384
    < 448. Exact unless an offset drops below 2^-8 (values would fall under e4m3's subnormals).
    Needs out and in to be multiples of 128 (as the converter asserts).
    """
    out, inp = packed.shape[0], packed.shape[1] * 2
    if out % FP8_BLOCK or inp % FP8_BLOCK:
        raise QuantError(f"fp4_to_fp8: weight [{out}, {inp}] must have both dims multiples of 128")
    s = np.asarray(scale).astype(np.float32)                                    # [out, in/32]
    block_scale = s.reshape(out // 128, 128, inp // 128, 4).max(axis=(1, 3)) / np.float32(64.0)
    offset = s / np.repeat(np.repeat(block_scale, 128, 0), 4, 1)                # [out, in/32]
    x = FP4_VALUES[unpack_fp4(packed)] * np.repeat(offset, FP4_BLOCK, axis=1)
    return x.astype(E4M3), block_scale.astype(E8M0)


# ---- INT8 (W8A8, converted checkpoints; docs/DESIGN.md 'Converted formats') ---------------------
INT8_MAX = 127


def quantize_int8_rows(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row (output channel) INT8: w [out, in] float -> (q int8 [out, in], scale
    float32 [out]) with scale = amax / 127 (float32; 1 for an all-zero row),
    q = clip(round_half_even(w / scale), -127, 127), the division in float32."""
    _check_2d(w, "an int8 weight")
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(INT8_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dynamic_quant_int8(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-token INT8 of activations (npu_dynamic_quant), in x's dtype: x [..., in] ->
    (q [..., in] integer-valued, scale [..., 1] = rowmax|x| / 127, 1 for a zero row)."""
    amax = np.abs(x).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, amax / INT8_MAX, 1).astype(x.dtype)
    return np.clip(np.rint(x / scale), -INT8_MAX, INT8_MAX), scale


def w8a8_matmul(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Reference W8A8 product in x's dtype: x [..., in], q int8 [out, in], scale [out] ->
    (q_x @ q^T accumulated exactly in int64) * scale * x_scale [..., out]."""
    qx, xs = dynamic_quant_int8(x)
    acc = qx.astype(np.int64) @ q.astype(np.int64).T
    return acc.astype(x.dtype) * scale.astype(x.dtype) * xs


# ---- MXFP8 / MXFP4 (OCP MX v1.0; the 950's mxfp8-mxfp4 scheme, docs/DESIGN.md 'Converted formats') --
MX_BLOCK = 32           # one ue8m0 scale per 1x32 block along the input dim
MXFP8_EMAX = 8          # e4m3's largest exponent (448 = 1.75 * 2^8)


def quantize_mxfp8(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """w float [out, in] (in % 32 == 0) -> (e4m3 codes uint8 [out, in], ue8m0 exponent bytes uint8
    [out, in/32]). Per 1x32 block the smallest power-of-two scale with amax / scale <= 448, i.e.
    2^ceil(log2(amax / 448)): the OCP scale 2^(floor(log2 amax) - 8) except when that one would
    saturate the block's largest element (amax mantissa > 1.75), then the next power up. Values
    already on an e4m3 grid times a power of two (an FP8 128x128 block) are therefore kept exactly;
    others round half to even. An all-zero block gets scale 2^-127 (byte 0)."""
    wb = _row_blocks(w, MX_BLOCK, "quantize_mxfp8")                               # [out, in/32, 32]
    out, inp = wb.shape[0], wb.shape[1] * MX_BLOCK
    amax = np.abs(wb).max(axis=2)                                                  # [out, in/32]
    scale = np.where(amax > 0, pow2_scale(amax, FP8_MAX, 2.0 ** -118), np.float32(2.0 ** -127))
    q = np.clip(wb / scale[:, :, None], -FP8_MAX, FP8_MAX).reshape(out, inp).astype(E4M3)
    return q.view(np.uint8), scale.astype(E8M0).view(np.uint8)


def dequantize_mxfp8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(e4m3 codes [out, in], ue8m0 exponent bytes or e8m0 values [out, in/32]) -> float32 [out, in]."""
    _check_2d(codes, "dequantize_mxfp8")
    out, inp = codes.shape
    if tuple(scale.shape) != (out, inp // MX_BLOCK) or inp % MX_BLOCK:
        raise QuantError(f"dequantize_mxfp8: scale shape {tuple(scale.shape)} does not match weight "
                         f"[{out}, {inp}] in 1x{MX_BLOCK} blocks (expected {(out, inp // MX_BLOCK)})")
    s = np.asarray(scale)
    s = (s.view(E8M0) if s.dtype == np.uint8 else s).astype(np.float32)
    values = np.asarray(codes).view(np.uint8).view(E4M3).astype(np.float32)
    return values * np.repeat(s, MX_BLOCK, axis=1)


# ---- INT4 (W4A8, converted checkpoints for 910B/910C; docs/DESIGN.md 'Converted formats') -------
INT4_MAX = 7


def quantize_int4_rows(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row INT4: w [out, in] (in even) -> (packed int8 [out, in/2], low nibble = even
    column, two's complement nibbles; scale float32 [out] = amax / 7, 1 for an all-zero row), with
    q = clip(round_half_even(w / scale), -7, 7), the division in float32."""
    _check_2d(w, "an int4 weight")
    w = np.asarray(w, np.float32)
    if w.shape[1] % 2:
        raise QuantError(f"an int4 weight needs an even input dim, got shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(INT4_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -INT4_MAX, INT4_MAX).astype(np.int8)
    return pack_fp4(q.view(np.uint8)), scale


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """int8/uint8 [out, in/2] two's complement nibbles -> int8 values [out, in] in [-8, 7]."""
    codes = unpack_fp4(packed).astype(np.int8)
    return np.where(codes > 7, codes - 16, codes).astype(np.int8)
