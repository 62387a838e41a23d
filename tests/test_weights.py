"""Weights in checkpoint format and sparse routed experts, against numpy and the float64 oracle.

- StoredWeight dequantises FP8 / FP4 / bf16 codes in the graph bit-identically to numpy;
- the loaded parameters have the checkpoint's dtypes and bytes (within 10%);
- the checkpoint names derived from the cell tree are exactly the schema's;
- the sparse MoE (expert tiles) equals the oracle's per-expert loop in float64 (1e-12 relative)
  for score and hash routing, a long prefill (tiles of many rows), all tokens on one expert,
  and experts that receive no token.
"""
import ml_dtypes
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from ascend_v4 import oracle, quant

EXACT = 1e-12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.config import load_config
    path = write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("w") / "c"),
                                   weight_format="fp8", seed=5)
    ckpt = open_checkpoint(path)
    model64 = build_model(open_checkpoint(path, overrides={"compute_dtype": "float64"}))
    with oracle.precision("float64"):
        W64 = oracle.dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield ckpt, model64.transformer, W64
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stored_weight_dequantises_exactly(dtype):
    from ascend_v4.weights import StoredWeight
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(200, 256)) * np.exp(rng.normal(size=(200, 1)) * 3)).astype(np.float32)
    w[0, :4] = [0.0, -0.0, 1e-39, -3e-41]                       # zeros and bf16 subnormals
    fp8, fp8_s = quant.quantize_fp8(w)
    fp4, fp4_s = quant.quantize_fp4(w)
    bf16 = w.astype(ml_dtypes.bfloat16)
    cases = [("fp8", fp8, fp8_s, quant.dequantize_fp8(fp8, fp8_s)),
             ("fp4", fp4, fp4_s, quant.dequantize_fp4(fp4, fp4_s)),
             ("bf16", bf16, None, bf16.astype(np.float32))]
    for kind, code, scale, want in cases:
        for lookup in (False, True):
            cell = StoredWeight((200, 256), kind, dtype, row_lookup=lookup)
            cell.set_arrays(*cell.stored_arrays(kind, code, scale))
            got = cell.dequantized().asnumpy()
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want.astype(dtype), err_msg=f"{kind} lookup={lookup}")
            rows = cell.rows(Tensor(np.array([0, 7, 199], np.int32))).asnumpy()
            np.testing.assert_array_equal(rows, want[[0, 7, 199]].astype(dtype))
    ms.set_context(mode=ms.GRAPH_MODE)


def test_parameters_hold_the_checkpoint_bytes(tiny):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    from ascend_v4.weights import StoredWeight
    ckpt = tiny[0]
    model = build_model(open_checkpoint(ckpt.folder))
    weights = model.transformer.checkpoint_weights()
    assert set(weights) == set(ckpt.formats)               # the cell tree spells the schema
    dtypes = {"fp8": {"uint8"}, "fp4": {"uint8"}, "bf16": {"bfloat16", "uint16"}}   # uint16: bf16 bits
    for name, (target, slot) in weights.items():
        kind = ckpt.formats[name]
        if not isinstance(target, StoredWeight):
            continue
        stored = np.asarray(ckpt.raw(name))
        param = target.weight.asnumpy()
        assert param.dtype.name in dtypes[kind], name
        one = param[slot] if slot >= 0 else param
        assert one.shape == stored.shape and one.nbytes == stored.nbytes, name
        if kind in ("fp8", "fp4"):
            np.testing.assert_array_equal(one, stored.view(np.uint8), err_msg=name)
    ckpt_bytes = sum(spec.nbytes for spec in ckpt.schema.values())
    param_bytes = sum(p.asnumpy().nbytes for p in model.transformer.get_parameters())
    assert param_bytes / ckpt_bytes <= 1.1, (param_bytes, ckpt_bytes)


def _oracle_experts(cfg, W, layer: int, x, weights, idx):
    """The oracle's expert loop: sum over the chosen experts of w * expert(x) [T, dim]."""
    p = f"layers.{layer}.ffn.experts."
    y = np.zeros_like(x)
    for e in np.unique(idx):
        rows, slot = np.nonzero(idx == e)
        y[rows] += oracle.moe.expert(x[rows], W, f"{p}{e}", cfg.swiglu_limit, weights[rows, slot, None])
    return y


def _rel(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("tokens,routing", [(40, "random"), (300, "random"), (300, "one expert"),
                                            (3, "random"), (3, "one expert")])   # 3: one-row tiles
def test_sparse_experts_equal_the_oracle_loop(tiny, tokens, routing):
    ckpt, model, W = tiny
    cfg = ckpt.config
    rng = np.random.default_rng(tokens)
    E, k = cfg.n_routed_experts, cfg.n_activated_experts
    x = rng.normal(size=(tokens, cfg.dim))
    if routing == "one expert":                     # every token on experts 5 and 2: a full
        idx = np.tile([5, 2], (tokens, 1))          # tile run and six experts with no token
    else:
        idx = np.stack([rng.choice(E, k, replace=False) for _ in range(tokens)])
    w = rng.uniform(0.1, 1.5, size=(tokens, k))
    cell = model.layers[1].ffn.experts
    got = cell(Tensor(x), Tensor(w), Tensor(idx.astype(np.int32))).asnumpy()
    with oracle.precision("float64"):
        want = _oracle_experts(cfg, W, 1, x, w, idx)
    assert _rel(got, want) <= EXACT


@pytest.mark.parametrize("layer", [0, 1])           # 0: hash-routed, 1: score-routed
def test_moe_layer_equals_the_oracle(tiny, layer):
    ckpt, model, W = tiny
    cfg = ckpt.config
    rng = np.random.default_rng(layer)
    x = rng.normal(size=(2, 70, cfg.dim))
    ids = rng.integers(0, cfg.vocab_size, (2, 70))
    got = model.layers[layer].ffn(Tensor(x), Tensor(ids.astype(np.int32))).asnumpy()
    with oracle.precision("float64"):
        want = oracle.moe.moe_layer(cfg, W, layer, x, ids)
    assert _rel(got, want) <= EXACT


def test_tile_plan_bounds_every_routing():
    """The static tile count holds the tiles of the most uneven routings."""
    from ascend_v4.moe import tile_plan
    for pairs, E in [(12, 8), (12, 256), (600, 8), (1536, 256), (4096, 8), (33, 4)]:
        m, n_tiles = tile_plan(pairs, E)
        assert m & (m - 1) == 0 and n_tiles * m <= 2 * pairs + E * m
        for counts in (np.bincount(np.arange(pairs) % E, minlength=E),      # balanced
                       np.r_[pairs, np.zeros(E - 1, int)],                    # one expert
                       np.r_[np.ones(min(E, pairs) - 1, int), pairs - min(E, pairs) + 1,
                             np.zeros(E - min(E, pairs), int)]):              # many with one row
            assert (-(-counts // m)).sum() <= n_tiles, (pairs, E, m, counts)


def test_custom_ops_refused_where_the_kernels_cannot_serve():
    from ascend_v4.config import ConfigError, load_config
    from ascend_v4.runtime import RuntimeConfig
    cfg = load_config("tiny").replace(head_dim=128)
    with pytest.raises(ConfigError, match="need head_dim 512 with rope_head_dim 64.*head_dim 128"):
        RuntimeConfig.for_model(cfg, custom_ops=True)
    RuntimeConfig.for_model(cfg, custom_ops=False)
