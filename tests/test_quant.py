"""ascend_v4.quant against ml_dtypes casts, an independent per-block reference and hand values."""
import math

import ml_dtypes
import numpy as np
import pytest

from ascend_v4 import quant

E4M3 = ml_dtypes.float8_e4m3fn
E2M1 = ml_dtypes.float4_e2m1fn
GRID = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def ref_block_scale(block: np.ndarray, max_value: float, floor: float) -> float:
    """2^ceil(log2(amax / max)) in float64 python math (independent of quant.ceil_log2)."""
    amax = max(float(np.abs(block).max()), floor)
    return 2.0 ** math.ceil(math.log2(amax / max_value))


def ref_fp4_code(v: float) -> int:
    """Nearest e2m1 grid point, ties to the even code (even mantissa bit), sign in bit 3."""
    a = min(abs(v), 6.0)
    d = np.abs(GRID - a)
    best = np.flatnonzero(d == d.min())
    idx = int(best[0]) if len(best) == 1 else int([b for b in best if b % 2 == 0][0])
    return idx | (8 if v < 0 or (v == 0 and math.copysign(1, v) < 0) else 0)


def test_fp8_matches_blockwise_reference_with_partial_edges():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((200, 300)) * np.exp(rng.uniform(-6, 6, (200, 1)))).astype(np.float32)
    q, s = quant.quantize_fp8(w)
    assert q.dtype == E4M3 and s.dtype == ml_dtypes.float8_e8m0fnu
    assert q.shape == (200, 300) and s.shape == (2, 3)
    for bi in range(2):
        for bj in range(3):
            blk = w[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            scale = ref_block_scale(blk, 448.0, 1e-4)
            assert float(s[bi, bj].astype(np.float32)) == scale
            # e8m0 byte is the biased exponent
            assert int(s[bi, bj].view(np.uint8)) == int(math.log2(scale)) + 127
            want = (blk.astype(np.float64) / scale).astype(np.float32).astype(E4M3)
            got = q[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_fp8_hand_values():
    w = np.zeros((2, 130), np.float32)
    w[0, 0], w[1, 1], w[0, 2] = 448.0, -3.0, 1.0          # first block amax 448 -> scale 1
    w[0, 129] = 449.0                                      # edge block: amax 449 -> scale 2
    q, s = quant.quantize_fp8(w)
    assert s.astype(np.float32).tolist() == [[1.0, 2.0]]
    assert q.astype(np.float32)[0, :3].tolist() == [448.0, 0.0, 1.0]
    assert q.astype(np.float32)[1, 1] == -3.0
    assert q.astype(np.float32)[0, 129] == 224.0           # 449 / 2 = 224.5 -> 224 (RNE)
    # an all-zero block takes the amax floor 1e-4: 2^ceil(log2(1e-4/448)) = 2^-22
    _, s0 = quant.quantize_fp8(np.zeros((3, 5), np.float32))
    assert float(s0.astype(np.float32)[0, 0]) == 2.0 ** -22
    # exact power-of-two boundary: amax = 448 * 2^-3 gives scale 2^-3, not 2^-2
    _, s1 = quant.quantize_fp8(np.full((1, 1), 56.0, np.float32))
    assert float(s1.astype(np.float32)[0, 0]) == 0.125


def test_fp8_dequantize_error_bound():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 384)).astype(np.float32)
    q, s = quant.quantize_fp8(w)
    dq = quant.dequantize_fp8(q, s)
    full = quant.expand_block_scale(s, w.shape)
    # e4m3: 3 mantissa bits -> half-ulp 2^-4 relative; subnormal step 2^-9 * scale
    assert np.all(np.abs(dq - w) <= np.abs(w) * 2.0 ** -4 + full * 2.0 ** -10)
    np.testing.assert_array_equal(quant.quantize_fp8(dq)[0].view(np.uint8), q.view(np.uint8))
    with pytest.raises(quant.QuantError, match="scale shape"):
        quant.dequantize_fp8(q, s[:1])


def test_fp4_hand_values_rne_and_packing():
    row = np.zeros(32, np.float32)
    row[:12] = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -5.0, 0.5, -1.5]
    packed, s = quant.quantize_fp4(row[None])
    assert packed.dtype == np.int8 and packed.shape == (1, 16) and s.shape == (1, 1)
    assert float(s.astype(np.float32)[0, 0]) == 1.0                    # amax 6 -> 2^0
    deq = quant.dequantize_fp4(packed, s)[0]
    assert deq[:12].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -0.0, -4.0, 0.5, -1.5]
    # low nibble first: codes (0.25 -> 0, 0.75 -> 2) -> byte 0x20; (1.25 -> 2, 1.75 -> 4) -> 0x42
    assert packed.view(np.uint8)[0, :2].tolist() == [0x20, 0x42]
    # 0.5 (code 1) then -1.5 (code 8 | 3 = 11) -> 0xB1
    assert packed.view(np.uint8)[0, 5] == 0xB1
    # scale: amax 7 -> 2^ceil(log2(7/6)) = 2, values halved before rounding
    p2, s2 = quant.quantize_fp4(np.full((1, 32), 7.0, np.float32))
    assert float(s2.astype(np.float32)[0, 0]) == 2.0
    assert quant.dequantize_fp4(p2, s2)[0, 0] == 8.0                  # 3.5 -> 4 (RNE) x 2


def test_fp4_matches_reference_grid_and_ml_dtypes():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 96)) * np.exp(rng.uniform(-4, 4, (8, 3))).repeat(32, 1)).astype(np.float32)
    w[0, :16] = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 2) * np.repeat([1, -1], 8)
    packed, s = quant.quantize_fp4(w)
    codes = quant.unpack_fp4(packed)
    scales = s.astype(np.float32)
    for i in range(8):
        for j in range(3):
            blk = w[i, j * 32:(j + 1) * 32]
            scale = ref_block_scale(blk, 6.0, 6.0 * 2.0 ** -126)
            assert scales[i, j] == scale
            x = blk.astype(np.float64) / scale
            want = [ref_fp4_code(v) for v in x]
            assert codes[i, j * 32:(j + 1) * 32].tolist() == want
            ml = x.astype(np.float32).astype(E2M1).view(np.uint8).tolist()
            assert ml == want
    np.testing.assert_array_equal(quant.pack_fp4(codes), packed)
    with pytest.raises(quant.QuantError, match="multiple of 32"):
        quant.quantize_fp4(np.ones((2, 40), np.float32))


def test_fp4_to_fp8_is_lossless_and_follows_converter_scales():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    w *= np.exp2(rng.integers(-4, 2, (256, 8))).repeat(32, 1).astype(np.float32)
    packed, s4 = quant.quantize_fp4(w)
    q8, s8 = quant.fp4_to_fp8(packed, s4)
    assert q8.dtype == E4M3 and s8.shape == (2, 2)
    s4f = s4.astype(np.float32)
    for bi in range(2):
        for bj in range(2):
            blk_max = s4f[bi * 128:(bi + 1) * 128, bj * 4:(bj + 1) * 4].max()
            assert float(s8[bi, bj].astype(np.float32)) == blk_max / 64.0   # 2^6 headroom
    np.testing.assert_array_equal(quant.dequantize_fp8(q8, s8), quant.dequantize_fp4(packed, s4))
    assert np.abs(q8.astype(np.float32)).max() <= 384.0                     # 6 * 2^6
    with pytest.raises(quant.QuantError, match="multiples of 128"):
        quant.fp4_to_fp8(packed[:, :48], s4[:, :3])
