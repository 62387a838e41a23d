"""Operators (CPU twins of the AscendC kernels) against their numpy references.

Tolerances: sinkhorn_mhc vs the fp32 numpy reference rtol 1e-5 / atol 1e-6; sparse_fp8_decode vs the
float64 reference atol 2e-5 on out and lse (same dequantised cache); moe_dispatch bit-exact (incl. FP8
codes and scales); moe_combine vs the fp32 reference atol 1e-5.
"""
import ctypes

import ml_dtypes
import numpy as np
import pytest

import custom_ops as co
from custom_ops.moe_dispatch.reference import combine_reference, dispatch_reference, expert_loop_reference
from custom_ops.runtime import soc, twin_library
from custom_ops.sinkhorn_mhc.reference import sinkhorn_mhc_reference
from custom_ops.sparse_fp8_decode.reference import sparse_fp8_decode_reference, unpack_kv_fp8

RNG = np.random.default_rng(1234)
SMALL_UB = dict(ub_bytes=24 * 1024, vector_cores=3)      # forces several tiles and tails per block


def mhc_inputs(t, n=4, scale=3.0):
    m = (2 + n) * n
    return (RNG.standard_normal((t, m)) * scale).astype(np.float32), RNG.standard_normal(3).astype(np.float32), \
        RNG.standard_normal(m).astype(np.float32)


@pytest.mark.parametrize("t,n,iters", [(1, 4, 20), (37, 4, 20), (1000, 4, 20), (13, 2, 1), (9, 4, 3)])
def test_sinkhorn_matches_reference(t, n, iters):
    mixes, s, b = mhc_inputs(t, n)
    got = co.sinkhorn_mhc(mixes, s, b, hc_mult=n, iters=iters)
    for g, r in zip(got, sinkhorn_mhc_reference(mixes, s, b, n, iters)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert np.allclose(got[2].sum(axis=-2), 1.0, atol=1e-4)          # ends on columns (sum/(sum+eps))


def test_sinkhorn_tails_on_small_ub_and_extreme_logits():
    mixes, s, b = mhc_inputs(203, scale=80.0)                           # saturating sigmoids / softmax
    with soc("small", **SMALL_UB):
        got = co.sinkhorn_mhc(mixes.reshape(7, 29, 24), s, b)
    ref = sinkhorn_mhc_reference(mixes, s, b)
    for g, r in zip(got, ref):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g.reshape(r.shape), r, rtol=1e-5, atol=1e-6)


def test_sinkhorn_tiling_invariants():
    lib = twin_library("sinkhorn_mhc")
    out = (ctypes.c_uint32 * 3)()
    for tokens, ub, cores in [(1, 196608, 48), (1000, 196608, 48), (100000, 196608, 48), (203, 24576, 3)]:
        assert lib.SinkhornMhcTiling(ctypes.c_int64(tokens), 4, ctypes.c_uint64(ub), cores, out) == 0
        per, tile, used = out
        assert tile % 8 == 0 and tile >= 8 and used <= cores and per * used >= tokens > per * (used - 1)
        assert 32 + 128 + tile * (4 * (4 * 24 + 12 + 32 + 2)) <= ub                 # fits the UB
    assert lib.SinkhornMhcTiling(ctypes.c_int64(10), 4, ctypes.c_uint64(4096), 1, out) == 2   # no tiling


def test_sinkhorn_bad_input():
    with pytest.raises(ValueError, match=r"mixes must be \[..., \(2\+hc_mult\)\*hc_mult\] = \[..., 24\]"):
        co.sinkhorn_mhc(np.zeros((3, 20), np.float32), np.ones(3), np.zeros(24))
    with pytest.raises(ValueError, match="iters must be a positive integer"):
        co.sinkhorn_mhc(np.zeros((3, 24), np.float32), np.ones(3), np.zeros(24), iters=0)


def decode_case(b=3, h=20, n=300, k=37, page=64, extra=True):
    kv = RNG.standard_normal((n, 512)).astype(np.float32)
    cache = co.pack_kv_fp8(kv, page)
    q = RNG.standard_normal((b, h, 512)).astype(np.float32)
    sink = RNG.standard_normal(h).astype(np.float32)
    idx = RNG.integers(-1, n, (b, k)).astype(np.int32)
    args = dict(q=q, cache=cache, indices=idx, attn_sink=sink, softmax_scale=512 ** -0.5)
    if extra:
        args["extra_cache"] = co.pack_kv_fp8(RNG.standard_normal((50, 512)).astype(np.float32), 16)
        args["extra_indices"] = RNG.integers(-1, 50, (b, 5)).astype(np.int32)
    return args


def check_decode(args, atol=2e-5):
    out, lse = co.sparse_fp8_decode(**args)
    ref_out, ref_lse = sparse_fp8_decode_reference(**args)
    np.testing.assert_allclose(out, ref_out, atol=atol, rtol=1e-5)
    np.testing.assert_allclose(lse, ref_lse, atol=atol, rtol=1e-6)
    return out, lse


def test_decode_random_with_extra_cache():
    check_decode(decode_case())


def test_decode_small_ub_splits_heads():
    args = decode_case(b=2, h=9, k=40, extra=False)
    with soc("small", ub_bytes=72 * 1024, vector_cores=5):                 # fewer heads per group than 9
        lib = twin_library("sparse_fp8_decode")
        out = (ctypes.c_uint32 * 5)()
        assert lib.SparseFp8DecodeTiling(2, 9, ctypes.c_uint64(72 * 1024), 5, 0, out) == 0 and out[1] > 1
        check_decode(args)


def test_decode_all_skipped_and_single_index():
    args = decode_case(b=2, h=4, extra=False)
    args["indices"][:] = -1
    out, lse = check_decode(args)
    assert np.all(out == 0) and np.allclose(lse, args["attn_sink"][None, :])
    args["indices"][1, 7] = 42                                              # one valid entry in row 1
    out, lse = check_decode(args)
    k = unpack_kv_fp8(args["cache"])[42]
    s = args["q"][1] @ k * args["softmax_scale"]
    w = 1 / (1 + np.exp(args["attn_sink"] - s))                             # sink only in the denominator
    np.testing.assert_allclose(out[1], w[:, None] * k[None, :], atol=2e-5)


def test_decode_extreme_logits_and_large_sink():
    args = decode_case(b=2, h=4, extra=False)
    args["q"] *= 200.0                                                      # scores in the thousands
    args["attn_sink"] = np.array([1e4, -1e4, 0.0, 3e3], np.float32)
    out, lse = check_decode(args, atol=2e-2)
    assert np.isfinite(out).all() and np.isfinite(lse).all()
    assert np.abs(out[:, 0]).max() == 0.0 or np.abs(out[:, 0]).max() < 1e-30   # sink 1e4 takes all weight


def test_pack_saturation_and_layout():
    kv = np.zeros((3, 512), np.float32)
    kv[0, :64] = 448.0                                                      # amax 448 -> scale 1, code 0x7e
    kv[1, 64:128] = -1e30                                                   # huge: still exactly -448 * 2^k
    kv[2, 448:] = 1.5                                                       # bf16 RoPE part
    c = co.pack_kv_fp8(kv, page_block_size=2)
    assert c.shape == (2, 2 * 584)
    assert np.all(c[0, :64] == 0x7E) and c[0, 2 * 576] == 127               # data rows first, then scales
    dq = unpack_kv_fp8(c)
    np.testing.assert_array_equal(dq[0, :64], 448.0)
    assert np.all(dq[1, 64:128] == dq[1, 64]) and -1.07e30 < dq[1, 64] < -0.93e30   # e4m3: 3 mantissa bits
    np.testing.assert_array_equal(dq[2, 448:], 1.5)


def test_decode_bad_indices():
    args = decode_case(b=1, h=2, extra=False)
    args["indices"][0, 0] = 10 ** 6
    with pytest.raises(ValueError, match="indices holds 1000000, outside -1..319"):
        co.sparse_fp8_decode(**args)


def moe_case(t, d, e, k, unique=True):
    x = (RNG.standard_normal((t, d)) * 10).astype(np.float32)
    if unique:
        idx = np.stack([RNG.permutation(e)[:k] for _ in range(t)]).astype(np.int32)
    else:
        idx = RNG.integers(-1, e, (t, k)).astype(np.int32)
    return x, idx, RNG.random((t, k)).astype(np.float32)


def check_dispatch(x, idx, w, e, ep, fp8):
    r = co.moe_dispatch(x, idx, w, e, ep, fp8)
    for key, val in dispatch_reference(x, idx, w, e, ep, fp8).items():
        np.testing.assert_array_equal(getattr(r, key), val, err_msg=key)
    return r


@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_dispatch_combine_random(fp8, bf16):
    x, idx, w = moe_case(37, 300, 16, 3, unique=False)                     # D=300: not a multiple of 128
    if bf16:
        x = x.astype(ml_dtypes.bfloat16)
    r = check_dispatch(x, idx, w, 16, 4, fp8)
    eo = r.dequantized()
    np.testing.assert_allclose(co.moe_combine(eo, r), combine_reference(eo, r.slot_of, w), atol=1e-5)


def test_dispatch_fp8_edge_values_bit_exact():
    x = np.array([[448, -448, 1e-6, 3e-3, 0.0, 1e4, -2.5e-5, 447.9]], np.float32).repeat(4, axis=1)
    check_dispatch(x, np.array([[0]], np.int32), np.ones((1, 1), np.float32), 2, 1, True)


def test_dispatch_empty_experts_one_expert_and_same_rank():
    x, idx, w = moe_case(5, 64, 64, 2)
    r = check_dispatch(x, idx, w, 64, 8, False)                             # most experts empty
    assert (r.expert_counts == 0).sum() >= 54
    idx1 = np.zeros((9, 1), np.int32)                                       # every token to expert 0
    r = check_dispatch(x.repeat(2, 0)[:9], idx1, np.ones((9, 1), np.float32), 8, 2, False)
    assert r.expert_counts[0] == 9 and r.rank_counts.tolist() == [9, 0]
    idx2 = np.array([[0, 1], [1, 5], [4, 7]], np.int32)                     # k=2 to one rank (ep=2: 0-3, 4-7)
    r = check_dispatch(x[:3], idx2, w[:3], 8, 2, False)
    assert r.rank_counts.tolist() == [3, 3] and r.rank_token_counts.tolist() == [2, 2]
    assert r.rank_rows(1) == slice(3, 6)


def test_combine_matches_expert_loop_on_small_ub():
    x, idx, w = moe_case(40, 300, 32, 6)
    idx[3, 2] = -1                                                          # a dropped route
    r = co.moe_dispatch(x, idx, w, 32, 4)
    with soc("small", ub_bytes=4096, vector_cores=3):                       # 64-element chunks + tail
        y = co.moe_combine(r.x * 2.0, r)
    np.testing.assert_allclose(y, expert_loop_reference(x, idx, w, 32, lambda e, h: 2.0 * h), atol=1e-4)


def test_moe_bad_input():
    x, idx, w = moe_case(4, 64, 8, 2)
    with pytest.raises(ValueError, match=r"topk_idx holds 8, outside -1..7"):
        co.moe_dispatch(x, idx + 8 - idx.max(), w, 8)
    with pytest.raises(ValueError, match="must be a positive multiple of ep_size"):
        co.moe_dispatch(x, idx, w, 8, ep_size=3)


@pytest.mark.parametrize("fp8", [False, True])
def test_dispatch_chunk_tails_on_small_ub(fp8):
    x, idx, w = moe_case(11, 300, 8, 2)                                     # 300 = 2 x 128 + 44
    with soc("small", ub_bytes=3 * 1024, vector_cores=4):                   # one 128-element chunk at a time
        check_dispatch(x.astype(ml_dtypes.bfloat16), idx, w, 8, 2, fp8)
    with soc("tiny", ub_bytes=1024, vector_cores=4), pytest.raises(ValueError, match="moe_dispatch tiling: the Unified Buffer cannot hold"):
        co.moe_dispatch(x, idx, w, 8)


def test_dense_baseline_equals_sparse_over_every_entry():
    from custom_ops.sparse_fp8_decode.reference import dense_attention_reference
    args = decode_case(b=2, h=3, n=100, k=100, extra=False)
    args["indices"][:] = np.arange(100, dtype=np.int32)
    kv = unpack_kv_fp8(args["cache"])[:100]
    dense = dense_attention_reference(args["q"], kv, args["attn_sink"], args["softmax_scale"])
    np.testing.assert_allclose(dense, check_decode(args)[0], atol=2e-5)


def test_empty_inputs():
    pre, post, comb = co.sinkhorn_mhc(np.zeros((0, 24), np.float32), np.ones(3), np.zeros(24))
    assert pre.shape == (0, 4) and comb.shape == (0, 4, 4)
    r = co.moe_dispatch(np.zeros((0, 64), np.float32), np.zeros((0, 2), np.int32), np.zeros((0, 2), np.float32), 8)
    assert r.x.shape == (0, 64) and r.expert_offsets.tolist() == [0] * 9
    assert co.moe_combine(r.x, r).shape == (0, 64)
    out, lse = co.sparse_fp8_decode(np.zeros((0, 4, 512), np.float32), co.pack_kv_fp8(np.zeros((3, 512))),
                                    np.zeros((0, 5), np.int32), np.zeros(4, np.float32), 0.1)
    assert out.shape == (0, 4, 512) and lse.shape == (0, 4)


def test_dispatch_fp8_vector_cast_soc_matches_scalar_encode():
    x, idx, w = moe_case(9, 300, 8, 2)
    x[0, :5] = [448, -449, 1e-6, 3e-3, 1e4]
    with soc("fp8soc", ub_bytes=192 * 1024, vector_cores=4, fp8_vector_cast=True):   # Cast<fp8_e4m3fn_t> path
        check_dispatch(x, idx, w, 8, 2, True)


def test_dispatch_several_blocks():
    x, idx, w = moe_case(600, 64, 16, 2, unique=False)                     # 3 blocks of up to 256 tokens
    r = check_dispatch(x, idx, w, 16, 4, True)
    np.testing.assert_allclose(co.moe_combine(r.dequantized(), r), combine_reference(r.dequantized(), r.slot_of, w),
                               atol=1e-5)
