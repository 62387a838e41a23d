"""Self-tests of the numpy oracle (ascend_v4/oracle) against hand-derived values from V4_SPEC.md.

Building blocks: fp8/ue8m0 and fp4/e2m1 formats, weight dequantisation, linear's activation
quant, Sinkhorn, YaRN/RoPE, Hadamard, compressor pooling (incl. the reference's decode state
machine), indexer, sparse attention with sink, MoE gate. Whole model on random tiny weights:
shapes, causality, and prefix consistency (all-positions logits == logits of each prefix).
"""
import math

import ml_dtypes
import numpy as np
import pytest

from ascend_v4.config import load_config
from ascend_v4.oracle import (WeightError, attention_layer, compressor_entries, dequantize, e2m1_round, expert, forward_all,
                          fp4_quant_dequant, fp8_quant_dequant, gate, hadamard, hadamard_matrix,
                          hc_head, hc_post, hc_pre, indexer_topk, linear, mtp_forward_all,
                          pool_blocks, rope, rope_frequencies, sinkhorn, sparse_attention,
                          unpack_fp4, visible_mask, window_mask)
from ascend_v4.oracle.numerics import yarn_correction_range
from ascend_v4.oracle.random_weights import quantize_fp4_weight, random_checkpoint

F32 = np.float32


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def weights(cfg):
    return dequantize(random_checkpoint(cfg, seed=0), cfg)


@pytest.fixture(scope="module")
def full_run(cfg, weights):
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 140))
    logits, H = forward_all(cfg, weights, ids)
    return ids, logits, H


# ---- fp8 e4m3 / ue8m0 -----------------------------------------------------------------------

@pytest.mark.parametrize("amax, scale", [(448.0, 1.0), (896.0, 2.0), (897.0, 4.0),
                                         (1000.0, 4.0), (1.0, 2.0 ** -8), (0.0, 2.0 ** -22)])
def test_ue8m0_scale_is_pow2_ceil_of_amax_over_448(amax, scale):
    # 1/448 = 2^-8.81 -> 2^-8; amax 0 is clamped to 1e-4 -> 2.23e-7 -> 2^-22
    x = np.zeros((1, 64), F32)
    x[0, 5] = -amax
    _, s = fp8_quant_dequant(x, 64, "ue8m0", return_scale=True)
    assert s.shape == (1, 1) and s[0, 0] == scale


def test_fp8_rounds_to_nearest_even_and_keeps_448():
    x = np.array([[448.0, 1.0625, 1.1875, -3.3, 0.00207, 17.0, 0.0]], F32)  # amax 448 -> s = 1
    y = fp8_quant_dequant(x, 128)
    # 1.0625: tie between 1.0 and 1.125 -> even 1.0; 1.1875 -> 1.25; [2,4) spacing .25;
    # 2^-9 is the smallest e4m3 subnormal; [16,32) spacing 2
    np.testing.assert_array_equal(y, [[448.0, 1.0, 1.25, -3.25, 2.0 ** -9, 16.0, 0.0]])


def test_fp8_plain_scale_saturates_at_448():
    x = np.array([[1000.0, -1000.0, 3.0]], F32)
    y, s = fp8_quant_dequant(x, 128, None, return_scale=True)
    assert s[0, 0] == F32(1000.0) * F32(1 / 448)
    np.testing.assert_array_equal(y[0, :2], [F32(448) * s[0, 0], F32(-448) * s[0, 0]])  # +-448 s
    assert np.isfinite(y).all()


def test_fp8_tiles_are_independent_and_partial_tile_is_its_own():
    x = np.concatenate([np.full(128, 288.0), np.full(128, 0.013), np.full(40, 5.0)]).astype(F32)
    y, s = fp8_quant_dequant(x[None], 128, return_scale=True)
    np.testing.assert_array_equal(s[0], [1.0, 2.0 ** -15, 2.0 ** -6])
    np.testing.assert_array_equal(y[0, :128], 288.0)        # 288 = 256 + 32 is an e4m3 value
    np.testing.assert_allclose(y[0, 128:256], 0.013, rtol=2 ** -4)
    np.testing.assert_array_equal(y[0, 256:], 5.0)


# ---- fp4 e2m1 -------------------------------------------------------------------------------

def test_e2m1_table_and_rounding_match_ml_dtypes():
    codes = np.arange(16, dtype=np.uint8)
    table = unpack_fp4(codes.reshape(1, 16))[0, 0::2]         # low nibbles: codes 0..15
    np.testing.assert_array_equal(table, codes.view(ml_dtypes.float4_e2m1fn).astype(F32))
    np.testing.assert_array_equal(table[:8], [0, .5, 1, 1.5, 2, 3, 4, 6])
    hand = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, -0.26, -5.0], F32)
    np.testing.assert_array_equal(e2m1_round(hand), [0, 1, 1, 2, 2, 4, 4, 6, -0.5, -4])
    grid = np.linspace(-6, 6, 961).astype(F32)                # every tie of the e2m1 grid
    np.testing.assert_array_equal(e2m1_round(grid),
                                  grid.astype(ml_dtypes.float4_e2m1fn).astype(F32))


@pytest.mark.parametrize("amax, scale", [(6.0, 1.0), (7.0, 2.0), (3.0, 0.5), (12.1, 4.0)])
def test_fp4_scale_is_pow2_ceil_of_amax_over_6(amax, scale):
    x = np.zeros((2, 32), F32)
    x[1, 3] = amax
    _, s = fp4_quant_dequant(x, 32, return_scale=True)
    assert s[1, 0] == scale


def test_fp4_quant_dequant_hand_block():
    x = np.zeros(32, F32)
    x[:5] = [12.0, 5.0, -2.6, 0.9, 0.3]                       # s = 2: 6, 2.5->2, -1.3->-1.5, .45->.5, .15->0
    np.testing.assert_array_equal(fp4_quant_dequant(x[None])[0, :5], [12, 4, -3, 1, 0])


def test_fp4_unpack_low_nibble_first_and_dequantize_scales():
    packed = np.array([[0x21, 0xF8] * 16], np.uint8).view(np.int8)   # [1, 32] -> 64 values
    vals = unpack_fp4(packed)
    np.testing.assert_array_equal(vals[0, :4], [0.5, 1.0, -0.0, -6.0])
    cfg = load_config("tiny")
    scale = np.array([[2.0, 0.25]], F32).astype(ml_dtypes.float8_e8m0fnu)
    W = dequantize({"e.weight": packed, "e.scale": scale}, cfg)
    assert W["__formats__"]["e.weight"] == "fp4"
    np.testing.assert_array_equal(W["e.weight"][0, :4], [1.0, 2.0, 0.0, -12.0])
    np.testing.assert_array_equal(W["e.weight"][0, 32:34], [0.125, 0.25])


def test_fp4_weight_roundtrip_equals_fp4_quant_dequant():
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(F32)
    packed, scale = quantize_fp4_weight(w)
    W = dequantize({"x.weight": packed, "x.scale": scale}, load_config("tiny"))
    np.testing.assert_array_equal(W["x.weight"], fp4_quant_dequant(w, 32))


# ---- dequantize / linear --------------------------------------------------------------------

def test_dequantize_fp8_blocks_and_errors():
    cfg = load_config("tiny")
    w = np.ones((130, 200), F32).astype(ml_dtypes.float8_e4m3fn)
    s = np.array([[1.0, 2.0], [4.0, 8.0]], F32).astype(ml_dtypes.float8_e8m0fnu)
    W = dequantize({"a.weight": w, "a.scale": s, "b": np.ones(3, ml_dtypes.bfloat16)}, cfg)
    assert W["__formats__"] == {"a.weight": "fp8", "b": "bf16"}
    got = W["a.weight"]
    assert got.dtype == F32 and got.shape == (130, 200)
    assert got[0, 0] == 1 and got[0, 199] == 2 and got[129, 0] == 4 and got[129, 199] == 8
    with pytest.raises(WeightError, match="a.weight.*scale"):
        dequantize({"a.weight": w}, cfg)
    with pytest.raises(WeightError, match="a.weight.*shape"):
        dequantize({"a.weight": w, "a.scale": s[:1]}, cfg)
    with pytest.raises(WeightError, match="c.scale: scale without"):
        dequantize({"c.scale": s}, cfg)
    with pytest.raises(WeightError, match="d: unsupported stored dtype complex64"):
        dequantize({"d": np.zeros(2, np.complex64)}, cfg)


def test_linear_quantises_activations_only_for_fp8_fp4_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 256)).astype(F32) * np.linspace(0.01, 50, 256, dtype=F32)
    w = rng.standard_normal((5, 256)).astype(F32)
    for fmt in ("fp8", "fp4", "bf16", "fp32"):
        W = {"l.weight": w, "__formats__": {"l.weight": fmt}, "__scale_fmt__": "ue8m0"}
        xq = fp8_quant_dequant(x, 128) if fmt in ("fp8", "fp4") else x
        np.testing.assert_allclose(linear(x, W, "l"), xq @ w.T, rtol=1e-5, atol=1e-4)
    assert np.abs(fp8_quant_dequant(x, 128) - x).max() > 1e-3          # the quant is not a no-op


# ---- mHC --------------------------------------------------------------------------------------

def test_sinkhorn_hand_values_single_iteration():
    n = 2
    mixes = np.zeros((1, (2 + n) * n), F32)
    mixes[0, :4] = [1.0, -1.0, 0.5, 0.0]
    mixes[0, 4:] = [0.0, math.log(3.0), 0.0, 0.0]             # comb logits [[0, ln3], [0, 0]]
    pre, post, comb = sinkhorn(mixes, [2.0, 1.0, 1.0], np.zeros(8, F32), n, 1, 1e-6)
    sig = lambda v: 1 / (1 + math.exp(-v))
    np.testing.assert_allclose(pre[0], [sig(2.0) + 1e-6, sig(-2.0) + 1e-6], rtol=1e-6)
    np.testing.assert_allclose(post[0], [2 * sig(0.5), 1.0], rtol=1e-6)
    # rows softmax [[.25, .75], [.5, .5]], then columns / [.75, 1.25] (ends on columns)
    np.testing.assert_allclose(comb[0], [[1 / 3, 0.6], [2 / 3, 0.4]], rtol=1e-5)


def test_sinkhorn_is_doubly_stochastic_ending_on_columns():
    rng = np.random.default_rng(0)
    mixes = rng.standard_normal((200, 24)).astype(F32)
    _, _, comb = sinkhorn(mixes, [1.0, 1.0, 1.0], rng.standard_normal(24), 4, 20, 1e-6)
    assert (comb > 0).all()
    np.testing.assert_allclose(comb.sum(-2), 1.0, atol=2e-6)      # columns: exact up to eps
    np.testing.assert_allclose(comb.sum(-1), 1.0, atol=2e-3)      # rows: close after 20 iters
    assert np.abs(comb.sum(-1) - 1).max() > np.abs(comb.sum(-2) - 1).max()   # last step: columns
    _, _, uni = sinkhorn(np.zeros((1, 24), F32), [1, 1, 1], np.zeros(24), 4, 20, 1e-6)
    np.testing.assert_allclose(uni, 0.25, atol=1e-6)


def test_hc_post_uses_transposed_comb_and_hc_head_weights(cfg):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1, 1, 4, 8)).astype(F32)
    f = rng.standard_normal((1, 1, 8)).astype(F32)
    post = np.array([[[1.0, 0.0, 0.0, 0.5]]], F32)
    comb = np.zeros((1, 1, 4, 4), F32)
    comb[0, 0, 2, 0] = 1.0                                         # C[i=2, j=0]: stream 2 -> 0
    y = hc_post(f, X, post, comb)
    np.testing.assert_allclose(y[0, 0, 0], f[0, 0] + X[0, 0, 2], rtol=1e-6)
    np.testing.assert_allclose(y[0, 0, 3], 0.5 * f[0, 0], rtol=1e-6)
    # hc_head with fn = 0: weights sigmoid(base) + eps
    base = np.array([0.0, 100.0, -100.0, 0.0], F32)
    y = hc_head(X, np.zeros((4, 32), F32), [1.0], base, cfg)
    want = 0.5 * X[0, 0, 0] + 1.0 * X[0, 0, 1] + 0.5 * X[0, 0, 3] + cfg.hc_eps * X[0, 0].sum(0)
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-5, atol=1e-6)
    u, _, _ = hc_pre(X, np.zeros((24, 32), F32), np.ones(3, F32),
                     np.array([0.0, 100, -100, 0] + [0] * 20, F32), cfg)
    np.testing.assert_allclose(u[0, 0], want, rtol=1e-5, atol=1e-6)


# ---- RoPE / YaRN ------------------------------------------------------------------------------

def test_yarn_correction_range_hand_values(cfg):
    # tiny: 64*ln(64/(32*2pi))/(2 ln 160000) < 0 -> 0; 64*ln(64/(2pi))/(2 ln 160000) = 6.2 -> 7
    assert yarn_correction_range(64, 160000.0, 32, 1, 64) == (0, 7)
    # Flash: original_seq_len 65536 -> 15.45 -> 15 and 24.71 -> 25
    assert yarn_correction_range(64, 160000.0, 32, 1, 65536) == (15, 25)


def test_rope_frequencies_window_and_yarn(cfg):
    i = np.arange(32)
    np.testing.assert_allclose(rope_frequencies(cfg, False), 10000.0 ** (-2 * i / 64), rtol=1e-12)
    f = rope_frequencies(cfg, True)
    base = 160000.0 ** (-2 * i / 64)
    assert f[0] == 1.0                                           # smooth = 1 below `low`
    np.testing.assert_allclose(f[7:], base[7:] / 16, rtol=1e-12)  # fully interpolated from `high`
    r = 3 / 7                                                    # ramp at i = 3 between 0 and 7
    np.testing.assert_allclose(f[3], base[3] / 16 * r + base[3] * (1 - r), rtol=1e-12)
    no_yarn = rope_frequencies(cfg.replace(original_seq_len=0), True)
    np.testing.assert_allclose(no_yarn, base, rtol=1e-12)


def test_rope_rotates_interleaved_pairs_of_last_dims(cfg):
    x = np.zeros((1, 3, 2, 192), F32)
    x[:, :, :, 128] = 1.0                                        # pair 0 of the rope part: (1, 0)
    x[:, :, :, 131] = 1.0                                        # pair 1: (0, 1)
    x[:, :, :, 5] = 7.0                                          # a non-rope dim
    y = rope(x, np.array([0, 1, 5]), cfg, compressed=False)
    f1 = 10000.0 ** (-2 / 64)
    np.testing.assert_allclose(y[0, 0], x[0, 0], atol=1e-7)     # position 0: identity
    np.testing.assert_allclose(y[0, 2, 0, 128:130], [math.cos(5), math.sin(5)], atol=1e-6)
    np.testing.assert_allclose(y[0, 2, 0, 130:132], [-math.sin(5 * f1), math.cos(5 * f1)], atol=1e-6)
    assert (y[..., 5] == 7.0).all()
    np.testing.assert_allclose(rope(y, np.array([0, 1, 5]), cfg, False, inverse=True), x, atol=1e-6)


# ---- Hadamard ---------------------------------------------------------------------------------

def test_hadamard_sylvester_order_and_orthogonality():
    np.testing.assert_array_equal(hadamard_matrix(2), [[1, 1], [1, -1]])
    H = hadamard_matrix(128)
    ij = np.bitwise_and(np.arange(128)[:, None], np.arange(128)[None, :])
    popc = np.vectorize(lambda v: bin(v).count("1"))(ij)
    np.testing.assert_array_equal(H, (-1.0) ** popc)
    np.testing.assert_allclose(H @ H.T / 128, np.eye(128), atol=1e-12)
    x = np.random.default_rng(0).standard_normal((3, 128)).astype(F32)
    np.testing.assert_allclose(hadamard(hadamard(x)), x, atol=1e-5)
    e0 = np.zeros(128, F32)
    e0[0] = 1
    np.testing.assert_allclose(hadamard(e0), np.full(128, 128 ** -0.5), rtol=1e-6)


# ---- compressor -------------------------------------------------------------------------------

def test_overlap_pooling_hand_example():
    t = np.arange(10, dtype=F32)                                 # 10 tokens -> 2 complete blocks
    kv = np.stack([10 + t, 100 + t], -1)[None]                   # head_dim 1: ch0 overlap, ch1 own
    g = np.zeros_like(kv)
    ape = np.zeros((4, 2), F32)
    out = pool_blocks(kv, g, ape, 4, 1)
    # entry 0: own block only (predecessor slots -inf); entry 1: block 0 ch0 + block 1 ch1
    np.testing.assert_allclose(out[0, :, 0], [101.5, (10 + 11 + 12 + 13 + 104 + 105 + 106 + 107) / 8])
    g2 = g.copy()
    g2[0, 5, 1] = 60.0                                           # token 5 dominates entry 1's own half
    np.testing.assert_allclose(pool_blocks(kv, g2, ape, 4, 1)[0, 1, 0], 105.0, rtol=1e-6)
    ape2 = ape.copy()
    ape2[2, 0] = 60.0                                            # slot 2 of the overlap half
    out2 = pool_blocks(kv, g, ape2, 4, 1)
    np.testing.assert_allclose(out2[0, :, 0], [101.5, 12.0], rtol=1e-6)
    # no overlap (c = 1): plain mean over each block of `ratio` tokens
    np.testing.assert_allclose(pool_blocks(kv[..., 1:], g[..., 1:], ape[:, 1:], 4, 1)[0, :, 0],
                               [101.5, 105.5])


def _decode_pool(kv, g, ape, ratio, d):
    """The reference Compressor's decode branch, token by token (state buffers)."""
    b, s, width = kv.shape
    overlap = width == 2 * d
    c = 2 if overlap else 1
    kv_state = np.zeros((b, c * ratio, width))
    sc_state = np.full((b, c * ratio, width), -np.inf)
    out = []
    for pos in range(s):
        score = g[:, pos] + ape[pos % ratio]
        slot = (ratio if overlap else 0) + pos % ratio
        kv_state[:, slot], sc_state[:, slot] = kv[:, pos], score
        if (pos + 1) % ratio:
            continue
        if overlap:
            k = np.concatenate([kv_state[:, :ratio, :d], kv_state[:, ratio:, d:]], 1)
            z = np.concatenate([sc_state[:, :ratio, :d], sc_state[:, ratio:, d:]], 1)
        else:
            k, z = kv_state, sc_state
        p = np.exp(z - z.max(1, keepdims=True))
        out.append((k * p / p.sum(1, keepdims=True)).sum(1))
        if overlap:
            kv_state[:, :ratio], sc_state[:, :ratio] = kv_state[:, ratio:], sc_state[:, ratio:]
    return np.stack(out, 1)


@pytest.mark.parametrize("ratio, c", [(4, 2), (8, 1)])
def test_pooling_matches_reference_decode_state_machine(ratio, c):
    rng = np.random.default_rng(ratio)
    d, s = 6, 5 * ratio + 3
    kv, g = rng.standard_normal((2, 2, s, c * d)).astype(F32)
    ape = rng.standard_normal((ratio, c * d)).astype(F32)
    np.testing.assert_allclose(pool_blocks(kv, g, ape, ratio, d), _decode_pool(kv, g, ape, ratio, d),
                               rtol=1e-5, atol=1e-6)


def test_compressor_entries_rope_position_and_quant_grids(cfg, weights):
    x = np.random.default_rng(7).standard_normal((1, 24, cfg.dim)).astype(F32)
    p, rd = "layers.1.attn.compressor", cfg.rope_head_dim
    ent = compressor_entries(cfg, weights, p, x, 4, cfg.head_dim, rotate=False)       # [1, 6, 192]
    assert ent.shape == (1, 6, cfg.head_dim)
    pooled = pool_blocks(x @ weights[p + ".wkv.weight"].T, x @ weights[p + ".wgate.weight"].T,
                         weights[p + ".ape"], 4, cfg.head_dim)
    normed = pooled / np.sqrt((pooled ** 2).mean(-1, keepdims=True) + cfg.norm_eps) \
        * weights[p + ".norm.weight"]
    back = rope(ent, np.arange(6) * 4, cfg, compressed=True, inverse=True)             # RoPE at 4j
    np.testing.assert_allclose(back[..., -rd:], normed[..., -rd:], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(fp8_quant_dequant(ent[..., :-rd], 64), ent[..., :-rd])
    assert np.abs(ent[..., :-rd] - normed[..., :-rd]).max() > 1e-4                    # fp8 applied
    k = compressor_entries(cfg, weights, "layers.1.attn.indexer.compressor", x, 4,
                           cfg.index_head_dim, rotate=True)
    np.testing.assert_array_equal(fp4_quant_dequant(k, 32), k)                        # FP4 grid


# ---- indexer / attention / gate ---------------------------------------------------------------

def test_masks_hand_values():
    np.testing.assert_array_equal(window_mask(4, 2), [[1, 0, 0, 0], [1, 1, 0, 0],
                                                      [0, 1, 1, 0], [0, 0, 1, 1]])
    # entry j visible to query t iff j < (t+1)//4
    np.testing.assert_array_equal(visible_mask(9, 2, 4).sum(-1), [0, 0, 0, 1, 1, 1, 1, 2, 2])


def test_indexer_keeps_top_min_k_visible(cfg, weights):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 40, cfg.dim)).astype(F32)
    qr = rng.standard_normal((2, 40, cfg.q_lora_rank)).astype(F32)
    sel, score = indexer_topk(cfg, weights, "layers.1.attn.indexer", x, qr)
    vis = visible_mask(40, 10, 4)
    assert sel.shape == (2, 40, 10)
    np.testing.assert_array_equal(sel.sum(-1), np.minimum(cfg.index_topk, vis.sum(-1))[None].repeat(2, 0))
    assert not (sel & ~vis[None]).any()
    worst_kept = np.where(sel, score, np.inf).min(-1)
    best_dropped = np.where(~sel & vis[None], score, -np.inf).max(-1)
    assert (worst_kept >= best_dropped).all()
    assert np.isfinite(score[:, 3:, 0]).all() and np.isinf(score[:, :3]).all()


def test_sparse_attention_sink_only_enlarges_denominator():
    q = np.zeros((1, 1, 2, 4), F32)
    keys = np.array([[[1.0, 2, 3, 4], [5, 6, 7, 8]]], F32)
    mask = np.array([[[True, False]]])
    o = sparse_attention(q, keys, mask, np.array([0.0, math.log(3.0)]), 0.5)
    np.testing.assert_allclose(o[0, 0, 0], keys[0, 0] / 2, rtol=1e-6)     # 1 / (1 + e^0)
    np.testing.assert_allclose(o[0, 0, 1], keys[0, 0] / 4, rtol=1e-6)     # 1 / (1 + 3)


def test_gate_hash_and_biased_selection(cfg, weights):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, cfg.dim)).astype(F32)
    ids = rng.integers(0, cfg.vocab_size, 6)
    w, idx = gate(cfg, weights, 0, x, ids)                       # layer 0 is a hash layer
    np.testing.assert_array_equal(idx, weights["layers.0.ffn.gate.tid2eid"][ids])
    np.testing.assert_allclose(w.sum(-1), cfg.route_scale, rtol=1e-6)
    W2 = dict(weights)
    W2["layers.1.ffn.gate.bias"] = np.zeros(cfg.n_routed_experts, F32)
    W2["layers.1.ffn.gate.bias"][7] = 100.0                      # bias forces expert 7 ...
    w2, idx2 = gate(cfg, W2, 1, x, ids)
    assert (idx2[:, 0] == 7).all()
    z = x @ weights["layers.1.ffn.gate.weight"].T
    s = np.sqrt(np.log1p(np.exp(z)))                             # ... but weights are unbiased
    ws = np.take_along_axis(s, idx2, -1)
    np.testing.assert_allclose(w2, ws / ws.sum(-1, keepdims=True) * cfg.route_scale, rtol=1e-5)


def test_gate_softmax_weights_are_not_renormalised(cfg, weights):
    c = cfg.replace(score_func="softmax")
    x = np.random.default_rng(3).standard_normal((6, cfg.dim)).astype(F32)
    w, idx = gate(c, weights, 1, x, np.zeros(6, np.int64))
    z = x @ weights["layers.1.ffn.gate.weight"].T
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(w, np.take_along_axis(p, idx, -1) * cfg.route_scale, rtol=1e-5)
    assert (w.sum(-1) < cfg.route_scale).all()


def test_routing_weight_multiplies_before_w2(cfg, weights):
    x = np.random.default_rng(5).standard_normal((5, cfg.dim)).astype(F32) * 8
    p, lim, rw = "layers.1.ffn.experts.0", cfg.swiglu_limit, np.float32(0.37)
    h, u = linear(x, weights, p + ".w1"), linear(x, weights, p + ".w3")
    assert (h > lim).any() and (u < -lim).any() and (u > lim).any()   # the clamps are exercised
    a = (np.minimum(h, lim) / (1 + np.exp(-np.minimum(h, lim)))) * np.clip(u, -lim, lim)
    got = expert(x, weights, p, lim, rw)
    np.testing.assert_allclose(got, linear(rw * a, weights, p + ".w2"), rtol=1e-5, atol=1e-5)
    # with an fp4 w2 (activation quant) the order matters
    assert np.abs(got - rw * linear(a, weights, p + ".w2")).max() > 1e-4


# ---- whole model on random tiny weights -------------------------------------------------------

def test_forward_shapes_finite_and_formats(cfg, weights, full_run):
    ids, logits, H = full_run
    assert logits.shape == (2, 140, cfg.vocab_size) and logits.dtype == F32
    assert H.shape == (2, 140, cfg.hc_mult, cfg.dim) and H.dtype == F32
    assert np.isfinite(logits).all() and np.isfinite(H).all()
    fm = weights["__formats__"]
    assert fm["layers.1.attn.wq_b.weight"] == "fp8" and fm["layers.1.attn.wo_a.weight"] == "bf16"
    assert fm["layers.1.ffn.experts.3.w2.weight"] == "fp4"
    assert fm["layers.1.attn.attn_sink"] == "fp32" and fm["layers.0.ffn.shared_experts.w2.weight"] == "fp8"


def test_forward_is_causal(cfg, weights, full_run):
    ids, logits, _ = full_run
    ids2 = ids.copy()
    ids2[:, 100:] = (ids2[:, 100:] + 1) % cfg.vocab_size
    logits2, _ = forward_all(cfg, weights, ids2)
    np.testing.assert_allclose(logits2[:, :100], logits[:, :100], atol=1e-5)
    assert np.abs(logits2[:, 100:] - logits[:, 100:]).max(-1).min() > 1e-3


@pytest.mark.parametrize("t", [0, 3, 4, 16, 17, 126, 127, 128])
def test_prefix_last_logits_equal_full_run(cfg, weights, full_run, t):
    # t = 3: first ratio-4 entry; 16/17: past the window (16); 127: first ratio-128 entry
    ids, logits, H = full_run
    lp, Hp = forward_all(cfg, weights, ids[:, :t + 1])
    np.testing.assert_allclose(lp[:, -1], logits[:, t], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(Hp[:, -1], H[:, t], atol=2e-5, rtol=1e-5)


def test_compressed_entries_matter_only_once_visible(cfg, weights):
    x = np.random.default_rng(4).standard_normal((1, 130, cfg.dim)).astype(F32)
    for layer, first in ((1, 3), (2, 127)):                      # ratio 4 and ratio 128
        W2 = dict(weights)
        name = f"layers.{layer}.attn.compressor.norm.weight"
        W2[name] = weights[name] * 3.0
        a, b = attention_layer(cfg, weights, layer, x), attention_layer(cfg, W2, layer, x)
        np.testing.assert_allclose(a[:, :first], b[:, :first], atol=1e-6)
        assert np.abs(a[:, first:] - b[:, first:]).max(-1).min() > 1e-6


def test_mtp_shapes_and_prefix_consistency(cfg, weights, full_run):
    ids, _, H = full_run
    m = mtp_forward_all(cfg, weights, H, ids)
    assert m.shape == (2, 140, cfg.vocab_size) and np.isfinite(m).all()
    mp = mtp_forward_all(cfg, weights, H[:, :20], ids[:, :20])
    np.testing.assert_allclose(mp, m[:, :20], atol=2e-5, rtol=1e-5)
    W2 = dict(weights)
    W2["mtp.0.norm.weight"] = weights["mtp.0.norm.weight"] * 2.0   # the MTP block's own norm
    W2["norm.weight"] = weights["norm.weight"] * 0.0                 # is used, not the final one
    m2 = mtp_forward_all(cfg, W2, H[:, :20], ids[:, :20])
    np.testing.assert_allclose(m2, 2.0 * m[:, :20], rtol=1e-4, atol=1e-4)


def test_bf16_checkpoint_runs_without_act_quant(cfg):
    c16 = cfg.replace(dtype="bf16", expert_dtype="bf16")
    W = dequantize(random_checkpoint(c16, seed=5), c16)
    assert set(W["__formats__"].values()) <= {"bf16", "fp32"}
    ids = np.random.default_rng(6).integers(0, c16.vocab_size, (1, 24))
    logits, H = forward_all(c16, W, ids)
    assert logits.shape == (1, 24, c16.vocab_size) and np.isfinite(logits).all()
    lp, _ = forward_all(c16, W, ids[:, :9])
    np.testing.assert_allclose(lp[:, -1], logits[:, 8], atol=2e-5, rtol=1e-5)


def test_bad_ids_are_rejected(cfg, weights):
    with pytest.raises(ValueError, match="vocab_size"):
        forward_all(cfg, weights, np.array([[0, cfg.vocab_size]]))
    with pytest.raises(ValueError, match="batch, seq"):
        forward_all(cfg, weights, np.array([1, 2]))


def test_e4m3_round_in_float64_has_no_double_rounding():
    """float64 values round to e4m3 directly: every code maps to itself, float32-exact values match
    ml_dtypes, and a value just above a midpoint rounds up (ml_dtypes goes through float32 and
    lands on the midpoint, then on the even code below)."""
    import ml_dtypes
    from ascend_v4.oracle.numerics import e4m3_round
    codes = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    codes = codes[np.isfinite(codes)]
    np.testing.assert_array_equal(e4m3_round(codes), codes)
    rng = np.random.default_rng(0)
    x = (rng.uniform(-448, 448, 20000) * 2.0 ** rng.integers(-12, 0, 20000)).astype(np.float32)
    np.testing.assert_array_equal(e4m3_round(x.astype(np.float64)),
                                  x.astype(ml_dtypes.float8_e4m3fn).astype(np.float64))
    np.testing.assert_array_equal(e4m3_round(np.array([21.000000715381354, 21.0, 23.0, -21.0000001])),
                                  [22.0, 20.0, 24.0, -22.0])
