"""The fused CPU kernels (ascend_v4/kernels) against the numpy oracle and the composite chains.

Block quant-dequant is exact arithmetic (power-of-two scales, round half to even), so the fused
kernel must equal the oracle and the composite bit for bit in float32 and float64; so must RoPE
(products and sums per element) against the composite. Sinkhorn calls exp: float64 within 1e-13,
float32 within 2e-6 of the oracle (relative to the maximum); RMSNorm sums in another order.
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


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("headed,inverse", [(True, False), (False, False), (True, True)])
def test_fused_rope_is_bit_exact(dtype, headed, inverse):
    """RoPE is a product and a sum per element: the fused kernel equals the composite chain bit
    for bit, and the float64 oracle (angles from positions) to its rounding."""
    from ascend_v4.kernels import Rope
    from ascend_v4.rope import rope_tables
    cfg = load_config("tiny")
    rd, dt = cfg.rope_head_dim, DTYPES[dtype]
    rng = np.random.default_rng(7)
    positions = rng.integers(0, 4000, 6)
    shape = (1, 6, 3, 96) if headed else (1, 6, 96)                  # [b, s, (h,) D], D - rd nope dims
    x = rng.normal(size=shape).astype(dt)
    cos, sin = (t[positions][None].astype(dt) for t in rope_tables(cfg, True, 4096))   # [1, s, rd/2]
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = {k: Rope(_runtime(k, dtype), rd, inverse)(Tensor(x), Tensor(cos), Tensor(sin)).asnumpy()
           for k in ("fused", "composite")}
    ms.set_context(mode=ms.GRAPH_MODE)
    assert got["fused"].dtype == dt and got["fused"].shape == shape
    np.testing.assert_array_equal(got["fused"], got["composite"])
    np.testing.assert_array_equal(got["fused"][..., :-rd], x[..., :-rd])
    with oracle.precision(dtype):
        want = oracle.numerics.rope(x, positions, cfg, True, inverse)
    tol = 1e-14 if dtype == "float64" else 2e-6
    assert np.abs(got["fused"] - want).max() <= tol * np.abs(want).max()


@pytest.mark.parametrize("dtype,tol,composite_tol", [("float64", 1e-15, 1e-11), ("float32", 6e-8, 1e-6)])
@pytest.mark.parametrize("weighted", [True, False])
def test_fused_rms_norm_matches_the_oracle(dtype, tol, composite_tol, weighted):
    """One-kernel RMSNorm against the oracle: the same float64 normalisation rounded once, so
    float32 is within one rounding of each product. The composite's float32 mean differs in the last
    bits; its float64 eps enters as float32(1e-6) (a Python scalar in the graph): 4e-12 relative
    here on rows of small norm."""
    from ascend_v4.numerics import Normalize, RMSNorm
    dt = DTYPES[dtype]
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 5, 256)) * np.exp2(rng.integers(-6, 6, size=(2, 5, 1)))).astype(dt)
    w = rng.uniform(0.5, 1.5, 256).astype(dt)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = {}
    for k in ("fused", "composite"):
        if weighted:
            cell = RMSNorm(256, 1e-6, dt, k)
            cell.weight.set_data(Tensor(w))
        else:
            cell = Normalize(1e-6, dt, k)
        got[k] = cell(Tensor(x)).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        want = oracle.numerics.rms_norm(x, w if weighted else None, 1e-6)
    assert got["fused"].dtype == dt
    assert np.abs(got["fused"] - want).max() <= tol * np.abs(want).max()
    assert np.abs(got["composite"] - want).max() <= composite_tol * np.abs(want).max()


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 2e-6)])
def test_fused_mhc_pre_and_post_match_the_oracle(dtype, tol):
    """mHC pre (mixes, Sinkhorn, stream sum) and post as one kernel each for few tokens, against
    the oracle's hc_pre / hc_post; the composite (more tokens than FUSED_MAX_ROWS) on the same
    values within the same tolerance."""
    from ascend_v4.kernels import FUSED_MAX_ROWS
    from ascend_v4.mhc import HyperConnection
    cfg, dt = load_config("tiny"), DTYPES[dtype]
    n, d = cfg.hc_mult, cfg.dim
    rng = np.random.default_rng(9)
    X = rng.normal(size=(2, 3, n, d)).astype(dt)                     # 6 tokens: the fused path
    f = rng.normal(size=(2, 3, d)).astype(dt)
    fn = (rng.normal(size=(cfg.mix_hc, n * d)) * 0.05).astype(dt)
    scale, base = rng.uniform(0.5, 2.0, 3).astype(dt), rng.normal(size=cfg.mix_hc).astype(dt)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = {}
    for k in ("fused", "composite"):
        hc = HyperConnection(cfg, _runtime(k, dtype), "hc_attn")
        for param, value in ((hc.fn, fn), (hc.scale, scale), (hc.base, base)):
            param.set_data(Tensor(value))
        assert hc._few(Tensor(X)) == (k == "fused") and 6 <= FUSED_MAX_ROWS
        u, post, comb = hc.pre(Tensor(X))
        got[k] = [t.asnumpy() for t in (u, post, comb, hc.post(Tensor(f), Tensor(X), post, comb))]
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        u, post, comb = oracle.hc.hc_pre(X, fn, scale, base, cfg)
        want = [u, post, comb, oracle.hc.hc_post(f, X, post, comb)]
    for name, g, c, w in zip(("u", "post", "comb", "post-mix"), got["fused"], got["composite"], want):
        assert g.dtype == dt and g.shape == w.shape, name
        assert np.abs(g - w).max() <= tol * np.abs(w).max(), name
        assert np.abs(c - w).max() <= tol * np.abs(w).max(), name


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-14), ("float32", 2e-7)])
def test_fused_sink_attention_matches_the_oracle(dtype, tol):
    """Attention with sinks as one kernel (float64 inside, rounded once) against the oracle's
    sparse_attention, with masked keys, a fully masked query (sink only) and a dominant sink;
    the composite on the same inputs within 1e-6 (float32) / 1e-14 relative; the keys cut into
    two or three segments (as the ring, chunk and entries come) give the same bits."""
    from ascend_v4.attention import SinkAttention
    from ascend_v4.kernels import FusedSinkAttention
    dt = DTYPES[dtype]
    rng = np.random.default_rng(4)
    b, s, h, d, n = 2, 3, 4, 64, 40
    q, keys = rng.normal(size=(b, s, h, d)).astype(dt), rng.normal(size=(b, n, d)).astype(dt)
    mask = rng.uniform(size=(b, s, n)) < 0.6
    mask[1, 2] = False                                                # a query that sees no key
    sink = np.array([0.0, -2.0, 1.0, 30.0], dt)                        # head 3: the sink dominates
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = {"fused": FusedSinkAttention(d ** -0.5)(Tensor(q), (Tensor(keys),), (Tensor(mask),), Tensor(sink)).asnumpy(),
           "composite": SinkAttention(d ** -0.5, ms.float64 if dtype == "float64" else ms.float32)(
               Tensor(q), Tensor(keys), Tensor(mask), Tensor(sink)).asnumpy()}
    cuts = ((0, n), (0, 9, n), (0, 9, 10, n))                          # 1-3 segments (ring, chunk, entries)
    segmented = [FusedSinkAttention(d ** -0.5)(
        Tensor(q), tuple(Tensor(keys[:, a:e]) for a, e in zip(c, c[1:])),
        tuple(Tensor(mask[..., a:e]) for a, e in zip(c, c[1:])), Tensor(sink)).asnumpy() for c in cuts]
    ms.set_context(mode=ms.GRAPH_MODE)
    for one in segmented:                                              # the same loop over the same keys
        np.testing.assert_array_equal(one, got["fused"])
    with oracle.precision(dtype):
        want = oracle.attention.sparse_attention(q, keys, mask, sink, d ** -0.5)
    assert got["fused"].dtype == dt
    assert np.abs(got["fused"] - want).max() <= tol * np.abs(want).max()
    assert np.abs(got["composite"] - want).max() <= max(tol, 1e-6 if dtype == "float32" else 1e-14) * np.abs(want).max()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_fused_kv_entry_round_is_bit_exact(dtype):
    """The FP8 KV entry (nope dims e4m3 per 64, rope dims kept) as one kernel over the whole
    entry: equal to the composite (slice, quantise, concat) and the oracle's kv_cache_round."""
    from ascend_v4.kernels import KVEntryRound
    x = _awkward(np.random.default_rng(5), (2, 3, 512), DTYPES[dtype])
    ms.set_context(mode=ms.PYNATIVE_MODE)
    got = {k: KVEntryRound(_runtime(k, dtype), 64, 512)(Tensor(x)).asnumpy() for k in ("fused", "composite")}
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        want = oracle.numerics.kv_cache_round(x, 64, "fp8")
    np.testing.assert_array_equal(got["fused"], want)
    np.testing.assert_array_equal(got["composite"], want)
    np.testing.assert_array_equal(got["fused"][..., -64:], x[..., -64:])


def test_unknown_kernels_option_is_refused():
    from ascend_v4.config import ConfigError
    with pytest.raises(ConfigError, match="kernels must be one of fused, composite, got 'fast'"):
        RuntimeConfig.for_model(load_config("tiny"), kernels="fast")


def _stored(kind: str, w: np.ndarray):
    """One float matrix [out, in] in checkpoint format `kind` -> (stored weight, scale | None, its
    exact value by the numpy dequantisers of ascend_v4.quant, float64)."""
    import ml_dtypes
    from ascend_v4 import quant
    if kind == "fp8":
        q, s = quant.quantize_fp8(w)
        return q, s, quant.dequantize_fp8(q, s).astype(np.float64)
    if kind == "fp4":
        q, s = quant.quantize_fp4(w)
        return q, s, quant.dequantize_fp4(q, s).astype(np.float64)
    b = w.astype(ml_dtypes.bfloat16)
    return b, None, b.astype(np.float64)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 3e-6)])
@pytest.mark.parametrize("kind", ["bf16", "fp8", "fp4"])
def test_fused_weight_matmul_matches_numpy(kind, dtype, tol):
    """The weight-quant matmul on the stored bytes (fused_cpu.cpp WeightMatmulAot), for a plain
    weight (decode rows: fused; 40 rows: dequantise + BLAS), its two row groups (wo_a) and
    gathered experts (repeated, out-of-order ids), against x @ W^T with W from the numpy dequantisers. Out dim 130 and (not
    FP4) in dim 200 leave partial 128x128 blocks."""
    from ascend_v4.kernels import FUSED_MAX_ROWS
    from ascend_v4.linear import grouped_product, stacked_product, stored_product
    from ascend_v4.weights import StoredWeight
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(7)
    out, inp, E = 130, 256 if kind == "fp4" else 200, 3
    mats = [rng.normal(size=(out, inp)) * np.exp2(rng.integers(-6, 6, size=(out, 1))) for _ in range(E)]
    stored = [_stored(kind, m) for m in mats]
    plain = StoredWeight((out, inp), kind, DTYPES[dtype], kernels="fused")
    plain.set_arrays(*plain.stored_arrays(kind, stored[0][0], stored[0][1]))
    stack = StoredWeight((E, out, inp), kind, DTYPES[dtype], kernels="fused")
    parts = [stack.stored_arrays(kind, q, s) for q, s, _ in stored]
    stack.set_arrays(np.stack([p[0] for p in parts]), None if parts[0][1] is None else np.stack([p[1] for p in parts]))
    assert plain.matmul is not None and stack.matmul is not None
    got, want = [], []
    for rows in (1, 3, FUSED_MAX_ROWS, 40):                       # fused up to FUSED_MAX_ROWS
        x = rng.normal(size=(rows, inp)).astype(DTYPES[dtype])
        got.append(stored_product(Tensor(x), plain).asnumpy())
        want.append(x.astype(np.float64) @ stored[0][2].T)
    for rows in (3, 40):                                         # 2 row groups of 65 (wo_a): fused, BLAS
        x = rng.normal(size=(rows, 2, inp)).astype(DTYPES[dtype])
        got.append(grouped_product(Tensor(x), plain).asnumpy())
        want.append(np.stack([x[:, i].astype(np.float64) @ stored[0][2][65 * i:65 * (i + 1)].T for i in range(2)], 1))
    index = np.array([2, 0, 2, 1], np.int32)
    x = rng.normal(size=(4, 2, inp)).astype(DTYPES[dtype])
    got.append(stacked_product(Tensor(x), stack, Tensor(index)).asnumpy())
    want.append(np.stack([x[t].astype(np.float64) @ stored[e][2].T for t, e in enumerate(index)]))
    ms.set_context(mode=ms.GRAPH_MODE)
    for g, w in zip(got, want):
        assert g.dtype == DTYPES[dtype] and g.shape == w.shape
        assert np.abs(g - w).max() <= tol * np.abs(w).max()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["bf16", "fp8", "fp4"])
def test_paired_product_equals_the_two_products(kind, dtype):
    """Two Linears of one format on the same x in one kernel (WeightMatmulPairAot, with FP8/FP4's
    activation quantised once) equal the two Linears called apart bit for bit, and the x @ W^T of
    the numpy dequantisers (of the oracle's FP8 activations) within the products' rounding; two
    expert stacks through gathered experts equal two stacked_product calls; past FUSED_MAX_ROWS
    rows the pair is the two calls. Out dims 130 / 64 leave partial 128-row blocks."""
    from ascend_v4.kernels import FUSED_MAX_ROWS
    from ascend_v4.linear import Linear, paired_product, stacked_product, weight_pair
    from ascend_v4.weights import StoredWeight
    rt = RuntimeConfig.for_model(load_config("tiny"), compute_dtype=dtype)
    rng = np.random.default_rng(29)
    inp = 256
    lins, exact = [], []
    for out in (130, 64):
        lin = Linear(inp, out, kind, rt)
        q, sc, value = _stored(kind, rng.normal(size=(out, inp)) * np.exp2(rng.integers(-4, 4, size=(out, 1))))
        lin.set_arrays(*lin.stored_arrays(kind, q, sc))
        lins.append(lin)
        exact.append(value)
    pair = weight_pair(*lins)
    assert pair is not None and weight_pair(lins[0], Linear(inp, 64, "fp8" if kind != "fp8" else "bf16", rt)) is None
    stacks = []                                                   # two expert stacks [3, out, in] (w1 / w3)
    for out in (130, 64):
        stack = StoredWeight((3, out, inp), kind, DTYPES[dtype], kernels="fused")
        parts = [stack.stored_arrays(kind, *_stored(kind, rng.normal(size=(out, inp)))[:2]) for _ in range(3)]
        scales = None if parts[0][1] is None else np.stack([p[1] for p in parts])
        stack.set_arrays(np.stack([p[0] for p in parts]), scales)
        stacks.append(stack)
    stack_pair = weight_pair(*stacks)
    assert stack_pair is not None and weight_pair(stacks[0], lins[1]) is None
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        for rows in (2, FUSED_MAX_ROWS + 1):
            x = Tensor(rng.normal(size=(4, rows, inp)).astype(DTYPES[dtype]))
            index = Tensor(np.array([2, 0, 2, 1], np.int32))
            got = [y.asnumpy() for y in paired_product(stack_pair, x, *stacks, index)]
            apart = [stacked_product(x, stack, index).asnumpy() for stack in stacks]
            for g, a in zip(got, apart):
                assert g.shape == (4, rows, a.shape[-1])
                np.testing.assert_array_equal(g, a)
        for shape in ((1, 2, inp), (3, inp), (FUSED_MAX_ROWS + 4, inp)):
            x = Tensor(rng.normal(size=shape).astype(DTYPES[dtype]))
            got = [y.asnumpy() for y in paired_product(pair, x, *lins)]
            apart = [lin(x).asnumpy() for lin in lins]
            xs = x.asnumpy().astype(np.float64)
            if kind != "bf16":                                   # the release's FP8 activations (1x128)
                with oracle.precision(dtype):
                    xs = oracle.numerics.fp8_quant_dequant(x.asnumpy()).astype(np.float64)
            for g, a, w in zip(got, apart, exact):
                np.testing.assert_array_equal(g, a)
                want = xs @ w.T
                tol = 1e-13 if dtype == "float64" else 3e-6
                assert np.abs(g - want).max() <= tol * np.abs(want).max()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["bf16", "fp8", "fp4"])
def test_fused_dequantisation_is_bit_exact(kind, dtype):
    """The one-kernel dequantisation (fused_cpu.cpp DequantAot) of a plain weight and of gathered
    experts equals the numpy dequantisers of ascend_v4.quant bit for bit (exact values)."""
    from ascend_v4.weights import StoredWeight
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(11)
    out, inp, E = 130, 256 if kind == "fp4" else 200, 3
    stored = [_stored(kind, rng.normal(size=(out, inp)) * 2.0 ** rng.integers(-6, 6)) for _ in range(E)]
    stack = StoredWeight((E, out, inp), kind, DTYPES[dtype], kernels="fused")
    parts = [stack.stored_arrays(kind, q, s) for q, s, _ in stored]
    stack.set_arrays(np.stack([p[0] for p in parts]), None if parts[0][1] is None else np.stack([p[1] for p in parts]))
    assert stack.dequant is not None
    index = np.array([1, 2, 1], np.int32)
    whole = stack.dequantized().asnumpy()
    taken = stack.take(Tensor(index)).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    assert whole.dtype == taken.dtype == DTYPES[dtype]
    np.testing.assert_array_equal(whole, np.stack([v for _, _, v in stored]).astype(DTYPES[dtype]))
    np.testing.assert_array_equal(taken, np.stack([stored[e][2] for e in index]).astype(DTYPES[dtype]))



@pytest.mark.parametrize("kind", ["bf16", "fp8", "fp4"])
def test_vector_weight_paths_equal_the_scalar_loops_bit_for_bit(kind):
    """float32 weight kernels take AVX2 paths (codes decoded by their bits, 8 lanes as one vector)
    where the CPU has them: on every code value (all 256 e4m3 bytes, all e2m1 pairs, bf16 bits of
    every exponent), in dims that leave vector tails (in 200) and partial row blocks (out 130),
    the dequantised weight equals the numpy dequantiser, and the product equals the scalar loops
    (SetVectorPaths(0)) bit for bit."""
    import ctypes
    import ml_dtypes
    from ascend_v4 import quant
    from ascend_v4.kernels import library_path
    from ascend_v4.linear import stacked_product, stored_product
    from ascend_v4.weights import StoredWeight
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(5)
    out, inp = 130, 256 if kind == "fp4" else 200
    if kind == "bf16":
        codes = rng.integers(0, 1 << 16, size=(out, inp), dtype=np.uint16)
        codes[(codes >> 7 & 0xFF) >= 0xF0] &= 0x807F                  # finite values of every exponent
        scale, want_w = None, (codes.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        codes = codes.view(ml_dtypes.bfloat16)
    elif kind == "fp8":                                          # the two NaN codes hold 0
        codes = (np.arange(out * inp) % 256).astype(np.uint8).reshape(out, inp).view(quant.E4M3)
        scale = rng.integers(118, 136, size=((out + 127) // 128, (inp + 127) // 128)).astype(np.uint8)
        scale = scale.view(quant.E8M0)
        want_w = np.nan_to_num(quant.dequantize_fp8(codes, scale), nan=0.0).astype(np.float64)
    else:
        codes = (np.arange(out * inp // 2) % 256).astype(np.uint8).reshape(out, inp // 2)
        scale = rng.integers(118, 136, size=(out, inp // 32)).astype(np.uint8).view(quant.E8M0)
        want_w = quant.dequantize_fp4(codes, scale).astype(np.float64)
    plain = StoredWeight((out, inp), kind, np.float32, kernels="fused")
    plain.set_arrays(*plain.stored_arrays(kind, codes, scale))
    stack = StoredWeight((2, out, inp), kind, np.float32, kernels="fused")
    parts = plain.stored_arrays(kind, codes, scale)
    stack.set_arrays(np.stack([parts[0]] * 2), None if parts[1] is None else np.stack([parts[1]] * 2))
    x = rng.normal(size=(3, inp)).astype(np.float32)
    xs = rng.normal(size=(2, 2, inp)).astype(np.float32)
    index = Tensor(np.array([1, 0], np.int32))
    lib = ctypes.CDLL(library_path())
    runs = {}
    try:
        for vector in (0, 1):
            lib.SetVectorPaths(vector)
            runs[vector] = (plain.dequantized().asnumpy(), stored_product(Tensor(x), plain).asnumpy(),
                            stacked_product(Tensor(xs), stack, index).asnumpy())
    finally:
        lib.SetVectorPaths(1)
        ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_array_equal(runs[1][0], want_w.astype(np.float32))
    for scalar, vector in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(vector, scalar)
    want = x.astype(np.float64) @ want_w.T
    assert np.abs(runs[1][1] - want).max() <= 3e-6 * np.abs(want).max()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("score_func", ["sqrtsoftplus", "sigmoid", "softmax"])
@pytest.mark.parametrize("hash_routed", [False, True])
def test_fused_route_matches_the_oracle_gate(dtype, score_func, hash_routed):
    """The one-kernel routing (RouteAot) against oracle.moe.gate on the same logits (an identity
    gate weight): the same experts in the same order, including exact ties (equal logits: the
    lower expert first), weights within 2 ulp (both round a float64 value; softmax sums in
    another order)."""
    import dataclasses
    from ascend_v4.kernels import FusedRoute
    from ascend_v4.oracle.moe import gate
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(13)
    E, k, T = 16, 4, 9
    cfg = dataclasses.replace(load_config("tiny"), n_routed_experts=E, n_activated_experts=k, score_func=score_func,
                              route_scale=1.5, n_hash_layers=1 if hash_routed else 0)
    z = (rng.normal(size=(T, E)) * 3).astype(DTYPES[dtype])
    z[0, 3] = z[0, 7] = z[0, 12] = z[0].max() + 1.0                      # a three-way tie for the top
    z[1] = 0.5                                                           # every expert tied
    bias = rng.normal(size=E).astype(DTYPES[dtype]) * 0.1
    bias[[3, 7, 12]] = 0.0                                               # the tie survives the bias
    ids = rng.integers(0, 50, T)
    tid2eid = np.stack([rng.permutation(E)[:k] for _ in range(50)]).astype(np.int32)
    W = {"layers.0.ffn.gate.weight": np.eye(E), "layers.0.ffn.gate.bias": bias, "layers.0.ffn.gate.tid2eid": tid2eid}
    with oracle.precision(dtype):
        want_w, want_idx = gate(cfg, W, 0, z, ids)
    route = FusedRoute(k, 1.5, score_func, hash_routed, E, DTYPES[dtype])
    if hash_routed:
        w, idx = route(Tensor(z), experts=Tensor(tid2eid[ids]))
    else:
        w, idx = route(Tensor(z), Tensor(bias))
    ms.set_context(mode=ms.GRAPH_MODE)
    assert idx.dtype == ms.int32 and w.asnumpy().dtype == DTYPES[dtype]
    np.testing.assert_array_equal(idx.asnumpy(), want_idx)
    np.testing.assert_allclose(w.asnumpy(), want_w, rtol=2 * np.finfo(DTYPES[dtype]).eps, atol=0)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("limit,weighted", [(10.0, True), (0.0, False)])
def test_fused_swiglu_matches_the_oracle(dtype, limit, weighted):
    """The one-kernel SwiGLU (SwiGluAot) equals the oracle's expert activation bit for bit:
    min / clamp at the limit (values past it on both sides), silu in float64 rounded once, the
    products (and the routing weight) in the dtype."""
    from ascend_v4.kernels import FusedSwiGlu
    from ascend_v4.oracle.numerics import silu
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(17)
    g = (rng.normal(size=(3, 5, 64)) * 8).astype(DTYPES[dtype])
    u = (rng.normal(size=(3, 5, 64)) * 8).astype(DTYPES[dtype])
    w = rng.random(size=(3, 5)).astype(DTYPES[dtype])
    cell = FusedSwiGlu(limit)
    got = (cell(Tensor(g), Tensor(u), Tensor(w)) if weighted else cell(Tensor(g), Tensor(u))).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    with oracle.precision(dtype):
        h, up = (np.minimum(g, limit), np.clip(u, -limit, limit)) if limit > 0 else (g, u)
        want = silu(h) * up
        want = w[..., None] * want if weighted else want
    assert (np.abs(g) > limit).any() if limit > 0 else True
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n,window", [(1, 8), (5, 4), (16, 32)])
def test_fused_window_geometry_equals_the_primitives(n, window):
    """The step's window geometry as one kernel (WindowGeometryAot) equals
    attention.window_geometry's primitives in every output: rows at position 0, inside the first
    window, past it by non-multiples of the window, idle (count 0) and partly padded; chunks
    longer than the window (n 5, W 4) wrap the ring."""
    from ascend_v4.attention import window_geometry
    from ascend_v4.kernels import FusedWindowGeometry
    start = np.array([0, 3, window - 1, window + 2, 7 * window + 5, 40], np.int32)
    count = np.array([n, n, 0, max(n - 2, 1), n, 1], np.int32)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        got = FusedWindowGeometry(window)(Tensor(start), Tensor(count), Tensor(np.zeros((6, n), np.int32)))
        want = window_geometry(Tensor(start), Tensor(count), n, window)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    names = ("pos", "ring_vis", "chunk_vis", "ring_src", "ring_hit")
    for name, g, w in zip(names, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_array_equal(g.asnumpy(), w.asnumpy(), err_msg=name)
    assert got[1].asnumpy().any() and got[4].asnumpy().any() and not got[4].asnumpy()[2].any()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_fused_topk_mask_matches_a_stable_sort_and_the_composite(dtype):
    """The indexer's top-k selection as one kernel (TopKMaskAot) against the oracle's rule (a
    stable descending sort of the visible scores keeps the first min(k, visible)) and against
    selected_mask's primitives, exactly: rows full of ties (ReLU zeros, repeated values, the k-th
    value shared by entries on both sides of the cut), fewer visible entries than k, none."""
    from ascend_v4.indexer import selected_mask
    from ascend_v4.kernels import FusedTopKMask
    rng = np.random.default_rng(23)
    R, n, k = 40, 48, 8
    scores = np.maximum(rng.normal(size=(R, n)), 0).astype(DTYPES[dtype])     # ~half exact zeros
    scores[5:10] = rng.integers(0, 3, size=(5, n))                              # three values only
    scores[10] = 1.0                                                            # all equal
    visible = rng.random((R, n)) < 0.8
    visible[20:25] = np.arange(n) < np.array([[0], [1], [5], [8], [9]])        # prefixes around k
    visible[25] = False
    order = np.argsort(-np.where(visible, scores, -np.inf), axis=-1, kind="stable")
    want = np.zeros((R, n), bool)
    for r in range(R):
        want[r, order[r, :min(k, visible[r].sum())]] = True
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        got = FusedTopKMask(k)(Tensor(scores.reshape(4, 10, n)), Tensor(visible.reshape(4, 10, n))).asnumpy()
        composite = selected_mask(Tensor(scores), Tensor(visible), k).asnumpy()
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    np.testing.assert_array_equal(got.reshape(R, n), want)
    np.testing.assert_array_equal(composite, want)
    assert want[5:11].sum() == 6 * k                    # the tie rows do cut through their ties


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-14), ("float32", 2e-7)])
@pytest.mark.parametrize("ratio,head_dim,coff", [(4, 64, 2), (8, 32, 1)])
def test_fused_compressor_step_matches_the_oracle(dtype, tol, ratio, head_dim, coff):
    """The compressor's one-token step as one kernel, stepped through 3+ blocks for two rows at
    different offsets, row 1 idle for a block's worth of steps (its state must not change): the
    pooled entry of every block a step completes against the oracle's pool_blocks over the whole
    sequence (relative to the maximum), with overlap (coff 2) and without."""
    from ascend_v4.kernels import FusedCompressorDecode
    dt = DTYPES[dtype]
    rng = np.random.default_rng(6)
    w, rows, steps = coff * head_dim, coff * ratio, 3 * ratio + 2
    kv_seq = rng.normal(size=(2, steps + ratio, w)).astype(dt)
    g_seq = rng.normal(size=(2, steps + ratio, w)).astype(dt)
    ape = rng.normal(size=(ratio, w)).astype(dt)
    state = [np.zeros((2, rows, w), dt), np.full((2, rows, w), -np.inf, dt)]
    lengths, pooled_at = [0, 0], ({}, {})
    ms.set_context(mode=ms.PYNATIVE_MODE)
    step = FusedCompressorDecode(head_dim)
    for i in range(steps + ratio - 1):
        # row 1 starts ratio - 1 tokens later, then idles for `ratio` steps in its second block
        count = np.array([int(i < steps), int(i >= ratio - 1 and not 2 * ratio <= i < 3 * ratio)], np.int32)
        kv = np.stack([kv_seq[r, lengths[r]] for r in (0, 1)])[:, None]
        g = np.stack([g_seq[r, lengths[r]] for r in (0, 1)])[:, None]
        pooled, ks, ss = (t.asnumpy() for t in step(
            Tensor(kv), Tensor(g), Tensor(ape), Tensor(state[0]), Tensor(state[1]),
            Tensor(np.array(lengths, np.int32)), Tensor(count)))
        assert pooled.dtype == dt and pooled.shape == (2, 1, head_dim)
        for r in (0, 1):
            if not count[r]:
                np.testing.assert_array_equal(ks[r], state[0][r])
                np.testing.assert_array_equal(ss[r], state[1][r])
            elif (lengths[r] + 1) % ratio == 0:
                pooled_at[r][lengths[r] // ratio] = pooled[r, 0]
            lengths[r] += int(count[r])
        state = [ks, ss]
    ms.set_context(mode=ms.GRAPH_MODE)
    for r in (0, 1):
        with oracle.precision(dtype):
            want = oracle.pool_blocks(kv_seq[r:r + 1, :lengths[r]], g_seq[r:r + 1, :lengths[r]], ape,
                                      ratio, head_dim)[0]
        assert sorted(pooled_at[r]) == list(range(len(want))) and len(want) >= 2
        got = np.stack([pooled_at[r][j] for j in range(len(want))])
        assert np.abs(got - want).max() <= tol * np.abs(want).max()


def _random_parameters(cell, rng):
    """Normal values in every parameter of `cell` (bf16 codes for uint16 storage)."""
    import ml_dtypes
    for _, p in cell.parameters_and_names():
        shape, dtype = p.shape, p.asnumpy().dtype
        values = rng.normal(size=shape) * 0.1
        if dtype == np.uint16:
            values = values.astype(ml_dtypes.bfloat16).view(np.uint16)
        p.set_data(Tensor(values.astype(dtype)))


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-13), ("float32", 2e-5)])
@pytest.mark.parametrize("ratio,rotate", [(4, False), (4, True), (16, False)])
def test_compressor_one_token_step_equals_the_general_path(dtype, tol, ratio, rotate):
    """Compressor.extend of one token per row: the fused step against the general block-buffer
    path (the same cell type and weights with its step kernel removed), stepped from position 0
    with one row idle at times: the same state bit for bit, the same `complete`, and the entries
    of completed blocks within tol (relative; the kernel pools with a float64 softmax)."""
    from ascend_v4.compressor import Compressor
    cfg = load_config("tiny")
    hd = cfg.index_head_dim if rotate else cfg.head_dim
    dt = DTYPES[dtype]
    rng = np.random.default_rng(7)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cells = {k: Compressor(cfg, _runtime("fused", dtype), ratio, hd, rotate) for k in ("fused", "composite")}
    _random_parameters(cells["fused"], rng)
    for (_, a), (_, b) in zip(cells["fused"].parameters_and_names(), cells["composite"].parameters_and_names()):
        b.set_data(Tensor(a.asnumpy()))
    assert cells["fused"].step is not None
    cells["composite"].step = None                  # the general path, all else the same
    spec = Compressor.spec_for(ratio, hd, dt)
    state = {k: [Tensor(a) for a in spec.initial(2)] for k in cells}
    cos = Tensor(rng.normal(size=(4 * ratio, cfg.rope_head_dim // 2)).astype(dt))
    sin = Tensor(rng.normal(size=(4 * ratio, cfg.rope_head_dim // 2)).astype(dt))
    lengths, completed = [0, 0], 0
    for i in range(3 * ratio + 3):
        count = np.array([1, int(i % 3 != 1)], np.int32)
        x = Tensor(rng.normal(size=(2, 1, cfg.dim)).astype(dt))
        out = {k: cells[k].extend(x, Tensor(np.array(lengths, np.int32)), Tensor(count), *state[k], cos, sin)
               for k in cells}
        entries, complete = ({k: out[k][j].asnumpy() for k in cells} for j in (0, 1))
        np.testing.assert_array_equal(complete["fused"], complete["composite"])
        for k in cells:
            state[k] = list(out[k][2:])
        for a, b in zip(state["fused"], state["composite"]):
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
        done = complete["fused"][:, 0]
        if done.any():
            want = entries["composite"][done]
            assert np.abs(entries["fused"][done] - want).max() <= tol * np.abs(want).max()
            completed += int(done.sum())
        lengths = [n + int(c) for n, c in zip(lengths, count)]
    ms.set_context(mode=ms.GRAPH_MODE)
    assert completed >= 2
