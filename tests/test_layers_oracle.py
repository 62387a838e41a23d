"""Every layer of the MindSpore model (float32, FP8/FP4 checkpoint of `tiny`) against the oracle.

Each piece gets identical inputs on both sides, so FP8 rounding flips cannot compound; the
tolerance is a relative error (||ms - oracle|| / ||oracle||) of at most 1e-3 per sublayer output
(1e-5 for the mHC maps, which contain no quantisation). A whole block chains two quantised
sublayers, where a float32 rounding flip in one token moves that token by a few percent; blocks
are therefore checked with the cells and the oracle both in float64 (every rounding decision
then matches), every token within 1e-5. Runs the cells op by op (PyNative).
"""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ascend_v4 import oracle

SEQ = 132            # crosses 33 ratio-4 blocks, one ratio-128 block and the 16-token window
REL_TOL = 1e-3


def fresh(batch: int, seq: int, spec=None):
    """(rows, start, count) int32 tensors for `batch` new sequences of `seq` tokens, and the initial
    state of `spec`: a prefill is an extend from position 0."""
    i32 = lambda v: Tensor(np.asarray(v, np.int32))   # noqa: E731
    state = tuple(Tensor(a) for a in spec.initial(batch)) if spec is not None else ()
    return i32(np.arange(batch)), i32(np.zeros(batch)), i32(np.full(batch, seq)), state


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def token_errors(a, b):
    """Relative error of each token [b, s] of outputs shaped [b, s, ...]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    axes = tuple(range(2, a.ndim))
    return np.sqrt(((a - b) ** 2).sum(axes) / (b ** 2).sum(axes))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.config import load_config
    path = write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("layers") / "c"),
                                   weight_format="fp8", seed=3)
    ckpt = open_checkpoint(path)
    W = oracle.dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    model = build_model(ckpt)
    model64 = build_model(open_checkpoint(path, overrides={"compute_dtype": "float64"}))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, SEQ, ckpt.config.dim)).astype(np.float32)
    ids = rng.integers(0, ckpt.config.vocab_size, (2, SEQ))
    with oracle.precision("float64"):
        W64 = oracle.dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    yield model.transformer, ckpt.config, W, x, ids, model64.transformer, W64
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("layer", range(4))
def test_attention_layer(setup, layer):
    net, cfg, W, x, _, _, _ = setup
    attn = net.layers[layer].attn
    rows, start, count, state = fresh(x.shape[0], SEQ, attn.state_spec())
    got = attn.extend(Tensor(x), rows, start, count, state)[0].asnumpy()
    assert rel_err(got, oracle.attention_layer(cfg, W, layer, x)) <= REL_TOL


@pytest.mark.parametrize("layer", range(4))
def test_moe_layer(setup, layer):
    net, cfg, W, x, ids, _, _ = setup
    got = net.layers[layer].ffn(Tensor(x), Tensor(ids.astype(np.int32))).asnumpy()
    assert rel_err(got, oracle.moe_layer(cfg, W, layer, x, ids)) <= REL_TOL


def test_hash_layer_routes_by_token_table(setup):
    net, cfg, W, x, ids, _, _ = setup
    assert net.layers[0].ffn.hash and not net.layers[1].ffn.hash
    _, idx = net.layers[0].ffn.route(Tensor(x[0]), Tensor(ids[0].astype(np.int32)))
    np.testing.assert_array_equal(idx.asnumpy(), W["layers.0.ffn.gate.tid2eid"][ids[0]])


def test_mhc_pre_maps(setup):
    net, cfg, W, x, _, _, _ = setup
    X = np.random.default_rng(5).normal(size=(2, 9, cfg.hc_mult, cfg.dim)).astype(np.float32)
    u, post, comb = net.layers[2].hc_ffn.pre(Tensor(X))
    p = "layers.2.hc_ffn_"
    ref = oracle.hc_pre(X, W[p + "fn"], W[p + "scale"], W[p + "base"], cfg)
    for got, want in zip((u, post, comb), ref):
        assert rel_err(got.asnumpy(), want) <= 1e-5
    # the Sinkhorn output ends on a column normalisation: columns sum to 1
    np.testing.assert_allclose(comb.asnumpy().sum(-2), 1.0, atol=1e-5)


@pytest.mark.parametrize("layer,rotate", [(1, False), (2, False), (1, True)])
def test_compressor_entries(setup, layer, rotate):
    net, cfg, W, x, _, _, _ = setup
    attn = net.layers[layer].attn
    comp = attn.indexer.compressor if rotate else attn.compressor
    prefix = f"layers.{layer}.attn." + ("indexer.compressor" if rotate else "compressor")
    _, start, count, _ = fresh(x.shape[0], SEQ)
    kv, score = (Tensor(a) for a in comp.state_spec().initial(x.shape[0]))
    entries, complete, _, _ = comp.extend(Tensor(x), start, count, kv, score, attn.cos, attn.sin)
    n = SEQ // comp.ratio
    assert complete.asnumpy()[:, :n].all() and not complete.asnumpy()[:, n:].any()
    got = entries.asnumpy()[:, :n]
    want = oracle.compressor_entries(cfg, W, prefix, x, comp.ratio, comp.head_dim, rotate)
    assert got.shape == want.shape
    assert rel_err(got, want) <= REL_TOL


def test_indexer_selection(setup):
    net, cfg, W, x, _, _, _ = setup
    attn = net.layers[1].attn
    qr = attn.q_norm(attn.wq_a(Tensor(x)))
    _, start, count, state = fresh(x.shape[0], SEQ, attn.indexer.state_spec())
    pos = Tensor(np.broadcast_to(np.arange(SEQ, dtype=np.int32), (x.shape[0], SEQ)).copy())
    cos, sin = ms.ops.gather(attn.cos, pos, 0), ms.ops.gather(attn.sin, pos, 0)
    sel = attn.indexer.extend(Tensor(x), qr, start, count, pos, cos, sin, *state, attn.cos, attn.sin)[0].asnumpy()
    want, _ = oracle.indexer_topk(cfg, W, 1, x, qr.asnumpy())
    n = want.shape[-1]
    assert not sel[..., n:].any()          # entries beyond the prompt's are never selected
    sel = sel[..., :n]
    assert sel.shape == want.shape
    # a near-tie can swap one selected entry; demand >= 99.5% identical decisions and the
    # exact per-query count min(index_topk, visible)
    assert np.mean(sel == want) >= 0.995
    np.testing.assert_array_equal(sel.sum(-1), want.sum(-1))


@pytest.mark.parametrize("layer", range(4))
def test_block_on_oracle_inputs(setup, layer):
    _, cfg, _, _, ids, net64, W64 = setup
    X = np.random.default_rng(layer).normal(size=(2, SEQ, cfg.hc_mult, cfg.dim)).astype(np.float32)
    block = net64.layers[layer]
    rows, start, count, state = fresh(X.shape[0], SEQ, block.attn.state_spec())
    got, _ = block.extend(Tensor(X.astype(np.float64)), Tensor(ids.astype(np.int32)), rows, start, count, state)
    with oracle.precision("float64"):
        want = oracle.block_forward(cfg, W64, layer, X.astype(np.float64), ids)
    err = token_errors(got.asnumpy(), want)
    assert err.max() <= 1e-5, f"worst token {err.max():.2e}"
