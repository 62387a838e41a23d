"""Software FP8 (e4m3fn) decode of sparse_fp8_decode on SoCs without fp8 in the vector unit (910B / 910C):
bit-identical to the native path (950 vector Cast) and to ml_dtypes for all 256 codes x all 256 ue8m0 scales,
through the kernel's own dequantisation routine and through the whole kernel."""
import ctypes

import ml_dtypes
import numpy as np
import pytest

import custom_ops as co
from custom_ops.runtime import soc, twin_library
from custom_ops.sparse_fp8_decode.binding import dequantize_kv_fp8
from custom_ops.sparse_fp8_decode.reference import (DATA_BYTES, NOPE, SCALE_BYTES, TILE, decode_e4m3,
                                                    sparse_fp8_decode_reference, ue8m0_to_float, unpack_kv_fp8)

RNG = np.random.default_rng(77)
TILES = NOPE // TILE                                    # 7 scale tiles per entry
PAGE = 16


def all_codes_cache(scales=range(256), nan_code=None):
    """A MODEL1 cache whose tiles hold every (code, scale) pair: per scale 4 tiles of 64 codes (0..255).
    nan_code replaces 0x7f / 0xff (e.g. by 0x7e) for caches whose entries must stay finite."""
    scales = list(scales)
    codes = np.tile(np.arange(256, dtype=np.uint8).reshape(4, TILE), (len(scales), 1))          # [4S, 64]
    if nan_code is not None:
        codes[(codes & 0x7F) == 0x7F] = nan_code | (codes[(codes & 0x7F) == 0x7F] & 0x80)
    tile_scale = np.repeat(np.array(scales, np.uint8), 4)
    n_tok = -(-len(tile_scale) // TILES)
    n_tok = -(-n_tok // PAGE) * PAGE
    pad = n_tok * TILES - len(tile_scale)
    codes = np.concatenate([codes, np.zeros((pad, TILE), np.uint8)]).reshape(n_tok, NOPE)
    tile_scale = np.concatenate([tile_scale, np.full(pad, 127, np.uint8)]).reshape(n_tok, TILES)
    rope = (RNG.standard_normal((n_tok, 64)) * 3).astype(ml_dtypes.bfloat16).view(np.uint8).reshape(n_tok, 128)
    data = np.concatenate([codes, rope], axis=1)                                                 # [N, 576]
    sc = np.zeros((n_tok, SCALE_BYTES), np.uint8)
    sc[:, :TILES] = tile_scale
    blocks = n_tok // PAGE
    return np.ascontiguousarray(np.concatenate([data.reshape(blocks, PAGE * DATA_BYTES),
                                                sc.reshape(blocks, PAGE * SCALE_BYTES)], axis=1))


def bits(x):
    return np.ascontiguousarray(x, np.float32).view(np.uint32)


def test_reference_decode_facts():
    v = decode_e4m3(np.arange(256, dtype=np.uint8))
    assert v[0x7E] == 448 and v[0xFE] == -448 and v[0x08] == 2.0 ** -6         # max, -max, smallest normal
    assert v[0x01] == 2.0 ** -9 and v[0x07] == 7 * 2.0 ** -9                     # subnormals m * 2^-9
    assert bits(v[[0x7F, 0xFF]]).tolist() == [0x7FC00000, 0xFFC00000]          # NaN keeps the sign
    assert bits(v[[0x00, 0x80]]).tolist() == [0, 0x80000000]                   # +0, -0
    s = ue8m0_to_float(np.array([0, 1, 127, 254, 255], np.uint8))
    assert bits(s[:4]).tolist() == [0x00400000, 0x00800000, 0x3F800000, 0x7F000000] and np.isnan(s[4])


@pytest.mark.parametrize("profile", ["ascend910b", "ascend910_93"])
def test_software_decode_bit_identical_for_every_code_and_scale(profile):
    cache = all_codes_cache()                                                    # 256 codes x 256 scales
    ref = unpack_kv_fp8(cache)                                                   # ml_dtypes x 2^(s-127), fp32
    with soc(profile):
        sw = dequantize_kv_fp8(cache)                                            # integer-op decode
    with soc("ascend950"):
        native = dequantize_kv_fp8(cache)                                        # fp8 vector Cast
    np.testing.assert_array_equal(bits(sw), bits(ref))
    np.testing.assert_array_equal(bits(sw), bits(native))
    # the pairs really are all there: every code under every scale
    data = cache[:, :PAGE * DATA_BYTES].reshape(-1, DATA_BYTES)[:, :NOPE].reshape(-1, TILES, TILE)
    sc = cache[:, PAGE * DATA_BYTES:].reshape(-1, SCALE_BYTES)[:, :TILES]
    pairs = {(int(s), int(c)) for s, row in zip(sc.reshape(-1), data.reshape(-1, TILE)) for c in row}
    assert len(pairs) == 256 * 256
    nope = sw[:, :NOPE]
    assert np.isnan(nope).sum() > 0 and np.isinf(nope).sum() > 0 and (bits(nope) == 0x80000000).any()


def test_kernel_on_910b_equals_950_and_reference_bit_for_bit():
    """The whole kernel: each batch row attends to one entry with q = 0, so out == that entry's dequantised
    values (exactly, -0 -> +0 by the accumulation); NaN / inf entries poison their row on both paths alike."""
    for cache, finite in ((all_codes_cache(range(247), nan_code=0x7E), True), (all_codes_cache(), False)):
        n = cache.shape[0] * PAGE
        args = dict(q=np.zeros((n, 2, 512), np.float32), cache=cache,
                    indices=np.arange(n, dtype=np.int32)[:, None], attn_sink=np.full(2, -np.inf, np.float32),
                    softmax_scale=0.0625)
        with soc("ascend910b"):
            out910, lse910 = co.sparse_fp8_decode(**args)
        with soc("ascend950"):
            out950, lse950 = co.sparse_fp8_decode(**args)
        np.testing.assert_array_equal(bits(out910), bits(out950))
        np.testing.assert_array_equal(bits(lse910), bits(lse950))
        if finite:
            k = unpack_kv_fp8(cache)
            assert np.isfinite(k).all()
            np.testing.assert_array_equal(bits(out910[:, 0]), bits(k + np.float32(0)))   # + 0: -0 -> +0
            np.testing.assert_array_equal(out910[:, 1], out910[:, 0])
        else:
            assert np.isnan(out910).any()


@pytest.mark.parametrize("profile", ["ascend910b", "ascend910_93"])
def test_random_decode_on_910_equals_reference_and_950(profile):
    n, b, h = 300, 3, 20
    kv = (RNG.standard_normal((n, 512)) * 10.0 ** RNG.uniform(-3, 3, (n, 1))).astype(np.float32)
    args = dict(q=RNG.standard_normal((b, h, 512)).astype(np.float32), cache=co.pack_kv_fp8(kv, 64),
                indices=RNG.integers(-1, n, (b, 37)).astype(np.int32),
                attn_sink=RNG.standard_normal(h).astype(np.float32), softmax_scale=512 ** -0.5,
                extra_cache=co.pack_kv_fp8(RNG.standard_normal((50, 512)).astype(np.float32), 16),
                extra_indices=RNG.integers(-1, 50, (b, 5)).astype(np.int32))
    with soc(profile):
        out, lse = co.sparse_fp8_decode(**args)
    with soc("ascend950"):
        out950, lse950 = co.sparse_fp8_decode(**args)
    np.testing.assert_array_equal(bits(out), bits(out950))
    np.testing.assert_array_equal(bits(lse), bits(lse950))
    ref_out, ref_lse = sparse_fp8_decode_reference(**args)
    np.testing.assert_allclose(out, ref_out, atol=2e-5 * np.abs(ref_out).max(), rtol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=2e-5, rtol=1e-5)


def test_tiling_flag_follows_the_soc_and_budgets_the_scratch():
    lib = twin_library("sparse_fp8_decode")
    out = (ctypes.c_uint32 * 5)()
    groups = {}
    for flag in (0, 1):
        assert lib.SparseFp8DecodeTiling(1, 64, ctypes.c_uint64(96 * 1024), 4, flag, out) == 0
        assert out[4] == flag
        groups[flag] = out[0]
    assert groups[1] > groups[0]                   # the software decode's scratch takes UB from the heads
    # a custom 910-like SoC given an fp8 vector Cast takes the native path; without it the software one
    cache = all_codes_cache(range(100, 140))
    with soc("fp8x", ub_bytes=192 * 1024, vector_cores=2, fp8_vector_cast=True):
        a = dequantize_kv_fp8(cache)
    with soc("nofp8", ub_bytes=192 * 1024, vector_cores=2):
        b = dequantize_kv_fp8(cache)
    np.testing.assert_array_equal(bits(a), bits(b))


def test_dequant_test_kernel_bad_input():
    with pytest.raises(ValueError, match=r"cache must be uint8 \[num_blocks, P \* 584\]"):
        dequantize_kv_fp8(np.zeros((2, 583), np.uint8))
