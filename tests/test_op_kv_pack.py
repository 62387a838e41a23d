"""kv_pack_fp8 (CPU twin of the AscendC kernel) against its numpy reference: bit-exact.

The reference encodes each entry exactly as `pack_kv_fp8` does (V4_SPEC 8, 9: e4m3 + ue8m0 per 64-dim tile
with amax floored at 1e-4, bf16 RoPE part, zero pad byte) and writes it to slot s = (block s // P, s % P).
"""
import ctypes

import ml_dtypes
import numpy as np
import pytest

import custom_ops as co
from custom_ops.kv_pack_fp8.reference import kv_pack_fp8_reference
from custom_ops.runtime import soc, twin_library
from custom_ops.sparse_fp8_decode.reference import unpack_kv_fp8

RNG = np.random.default_rng(2024)


def entries(n, spread=True):
    """[n, 512] f32 rows with per-row magnitudes from 1e-6 to 1e3 (exercises every scale exponent)."""
    x = RNG.standard_normal((n, 512)).astype(np.float32)
    if spread:
        x *= (10.0 ** RNG.uniform(-6, 3, (n, 1))).astype(np.float32)
    return x


def random_cache(blocks, p):
    return co.pack_kv_fp8(entries(blocks * p), page_block_size=p)


def check(cache, e, slots):
    got = co.kv_pack_fp8(cache, e, slots)
    want = kv_pack_fp8_reference(cache, e, slots)
    assert got.dtype == np.uint8 and got.shape == cache.shape
    np.testing.assert_array_equal(got, want)
    return got


def test_fresh_pool_equals_pack_kv_fp8():
    kv = entries(150)
    p = 64
    pool = np.zeros(((150 + p - 1) // p, p * 584), np.uint8)
    got = co.kv_pack_fp8(pool, kv, np.arange(150, dtype=np.int32))
    np.testing.assert_array_equal(got, co.pack_kv_fp8(kv, page_block_size=p))
    dec = unpack_kv_fp8(got)[:150]
    np.testing.assert_array_equal(dec[:, 448:], kv[:, 448:].astype(ml_dtypes.bfloat16).astype(np.float32))
    tile_amax = np.maximum(np.abs(kv[:, :448]).reshape(150, 7, 64).max(-1), 1e-4)
    err = np.abs(dec[:, :448] - kv[:, :448]).reshape(150, 7, 64).max(-1)
    assert (err <= tile_amax / 16 + 1e-12).all()                        # 3 mantissa bits, scale >= amax/448


@pytest.mark.parametrize("blocks,p,n", [(3, 64, 37), (1, 64, 1), (5, 16, 80), (7, 5, 23)])
def test_random_slots_match_reference(blocks, p, n):
    cache = random_cache(blocks, p)
    slots = RNG.permutation(blocks * p)[:n].astype(np.int32)
    slots[RNG.random(n) < 0.2] = -1                                     # skipped entries
    out = check(cache, entries(n), slots)
    untouched = np.setdiff1d(np.arange(blocks * p), slots)
    np.testing.assert_array_equal(unpack_kv_fp8(out)[untouched], unpack_kv_fp8(cache)[untouched])


def tiling(n, p, blocks, ub, cores):
    """(blocksPerCore, usedCores, copyChunk, slotTile) from the tiling code the CANN host also compiles."""
    out = (ctypes.c_uint32 * 4)()
    fn = twin_library("kv_pack_fp8").KvPackFp8Tiling
    fn.argtypes = [ctypes.c_uint32] * 3 + [ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
    assert fn(n, p, blocks, ub, cores, out) == 0
    return tuple(out)


def test_tiling():
    assert tiling(300, 50, 7, 4096, 3) == (3, 3, 32, 208)
    assert tiling(40, 50, 7, 8192, 48) == (1, 7, 2400, 40)          # (8192 - 3360) / 2, 32-aligned
    assert tiling(5000, 64, 1000, 192 * 1024, 48) == (21, 48, 64 * 1024, 1024)


def test_tails_on_small_ub_and_several_cores():
    # 4 KiB of UB: 32-byte copy chunks and 208-slot tiles (300 = 208 + 92); P = 50 rows of 584 B;
    # 7 blocks over 3 cores (3 + 3 + 1)
    cache = random_cache(7, 50)
    slots = RNG.integers(-1, 350, 300).astype(np.int32)                 # duplicates: the last entry wins
    with soc("small", ub_bytes=4096, vector_cores=3):
        check(cache, entries(300), slots)
    with soc("small", ub_bytes=8192, vector_cores=48):                  # more cores than blocks
        check(cache, entries(40), slots[:40])


def test_duplicate_slot_keeps_last_entry():
    cache = random_cache(1, 8)
    e = entries(3)
    got = co.kv_pack_fp8(cache, e, np.array([5, 5, 5], np.int32))
    np.testing.assert_array_equal(got, co.kv_pack_fp8(cache, e[2:], np.array([5], np.int32)))


def test_saturation_floor_and_zero_tiles():
    e = entries(6, spread=False)
    e[0, :64] = 0.0                                                      # amax floored at 1e-4
    e[1, 64:128] = 1e-9                                                  # below the floor: scale 2^-22, e4m3 subnormal
    e[2, 128:192] = [448.0, -448.0, 1e30, -1e30] * 16                    # scale 2^ceil(log2(1e30/448)) = 2^91
    e[3, :448] = 3.0e38                                                  # near float max
    e[4, 192:256] = 1e-12                                                # below half the smallest code: 0
    e[5, 448:] = [65504.0, -1e-30, 3.0e38, 1.0 + 2 ** -8] * 16          # bf16 rounding and range of RoPE dims
    cache = random_cache(1, 8)
    out = check(cache, e, np.arange(6, dtype=np.int32))
    dec = unpack_kv_fp8(out)
    assert (dec[0, :64] == 0).all() and (dec[4, 192:256] == 0).all()
    assert (dec[1, 64:128] == 2.0 ** -30).all()                          # 1e-9 / 2^-22 = 0.0042 -> 2 x 2^-9
    big = np.float32(416 * 2.0 ** 91)                                   # 1e30 / 2^91 = 403.9 -> e4m3 416
    np.testing.assert_array_equal(dec[2, 128:132], [0.0, 0.0, big, -big])    # 448 / 2^91 underflows
    assert out[0, 8 * 576 + 2 * 8 + 2] == 127 + 91                      # ue8m0 byte of tile 2 of entry 2
    assert out[0, 8 * 576 + 2 * 8 + 7] == 0                             # pad byte


def test_all_slots_skipped_copies_the_cache():
    cache = random_cache(4, 16)
    got = co.kv_pack_fp8(cache, entries(10), np.full(10, -1, np.int32))
    np.testing.assert_array_equal(got, cache)
    np.testing.assert_array_equal(co.kv_pack_fp8(cache, np.zeros((0, 512), np.float32), np.zeros(0, np.int32)), cache)


def test_fp8_vector_cast_soc_matches_scalar_encode():
    cache = random_cache(2, 32)
    e = entries(40)
    e[0, :8] = [448, -449, 1e-6, 3e-3, 1e4, 0, -0.0, 5e-5]
    slots = RNG.permutation(64)[:40].astype(np.int32)
    with soc("fp8soc", ub_bytes=192 * 1024, vector_cores=4, fp8_vector_cast=True):   # Cast<fp8_e4m3fn_t> path
        check(cache, e, slots)


def test_emulator_rules_and_bad_input():
    cache = random_cache(1, 4)
    # the tiling refuses a Unified Buffer without room for one entry, its packed row and the copy buffers
    refused = pytest.raises(ValueError, match="kv_pack_fp8 tiling: the Unified Buffer cannot hold")
    with soc("tiny", ub_bytes=2048, vector_cores=2), refused:
        co.kv_pack_fp8(cache, entries(2), np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match=r"slots holds 4, outside -1..3"):
        co.kv_pack_fp8(cache, entries(2), np.array([0, 4], np.int32))
    with pytest.raises(ValueError, match=r"entries must be \[N, 512\]"):
        co.kv_pack_fp8(cache, np.zeros((2, 500), np.float32), np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match=r"cache must be uint8 \[num_blocks, P \* 584\]"):
        co.kv_pack_fp8(np.zeros((1, 100), np.uint8), entries(1), np.array([0], np.int32))
    with pytest.raises(ValueError, match="finite"):
        co.kv_pack_fp8(cache, np.full((1, 512), np.nan, np.float32), np.array([0], np.int32))


def test_mindspore_graph_mode_equals_numpy():
    ms = pytest.importorskip("mindspore")
    from custom_ops import ms_ops
    ms.set_context(mode=ms.GRAPH_MODE)
    cache, e = random_cache(3, 16), entries(20)
    slots = RNG.integers(-1, 48, 20).astype(np.int32)
    got = ms_ops.kv_pack_fp8_op()(ms.Tensor(cache), ms.Tensor(e), ms.Tensor(slots))
    np.testing.assert_array_equal(got.asnumpy(), co.kv_pack_fp8(cache, e, slots))
