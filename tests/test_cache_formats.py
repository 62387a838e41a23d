"""The 910B/910C cache formats (RuntimeConfig.kv_cache / indexer_cache) against the float64 oracle.

One official-format (FP8/FP4) tiny checkpoint run with the A3 recipe's caches: C16 (bf16 KV) with the
INT8 indexer cache, and C8 (INT8 KV, bf16 RoPE dims) with the INT8 indexer cache. Prefill of 38
tokens (window ring wrapped, 9 ratio-4 entries, top-k 4 of them picked by the INT8 indexer) then
decode steps that complete entry 9 at position 39, teacher-forced, one row;
every call is one compiled extend shape (prefill_chunk 16, decode steps padded into it), so each
format costs one graph compile.
Tolerance as test_model_oracle: float64 on both sides, so every rounding decision matches; relative
error <= 1e-9 (measured 5.5e-16) and identical top-1. The rounding formulas themselves are checked
on exact values (bf16 ties, INT8 tiles) against the oracle's, and the refusals by message.
"""
import numpy as np
import pytest

from ascend_v4.config import ConfigError, load_config
from ascend_v4.oracle import dequantize, forward_all, precision
from ascend_v4.oracle.numerics import bf16_round, int8_quant_dequant, kv_cache_round
from ascend_v4.runtime import RuntimeConfig

REL_TOL = 1e-9
PROMPT, DECODE = 38, 4


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from ascend_v4.checkpoint import write_random_checkpoint
    path = write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("kvfmt") / "ckpt"),
                                   weight_format="fp8", seed=11)
    return path


@pytest.mark.parametrize("kv_cache", ["bf16", "int8"])
def test_cache_formats_match_oracle(checkpoint, kv_cache):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    ckpt = open_checkpoint(checkpoint, overrides={"compute_dtype": "float64", "max_batch_size": 1,
                                                  "max_seq_len": 256, "prefill_chunk": 16,
                                                  "kv_cache": kv_cache, "indexer_cache": "int8"})
    model = build_model(ckpt)
    cfg = ckpt.config
    with precision("float64"):
        W = dequantize({name: np.asarray(ckpt.raw(name)) for name in ckpt.schema}, cfg)
        W["__kv_cache__"], W["__indexer_cache__"] = kv_cache, "int8"
        ids = np.random.default_rng(3).integers(0, cfg.vocab_size, (1, PROMPT + DECODE))
        expected, _ = forward_all(cfg, W, ids)
        W["__kv_cache__"], W["__indexer_cache__"] = "fp8", "fp4"
        official, _ = forward_all(cfg, W, ids[:, :PROMPT])
    got = [model.extend(0, ids[0, :PROMPT], 0)[None]]
    for pos in range(PROMPT, PROMPT + DECODE - 1):
        got.append(model.extend(0, ids[0, pos:pos + 1], pos)[None])
    errors = [rel_err(g, expected[:, PROMPT - 1 + k]) for k, g in enumerate(got)]
    assert max(errors) <= REL_TOL, f"kv {kv_cache}: relative errors {errors}"
    for k, g in enumerate(got):
        assert np.array_equal(g.argmax(-1), expected[:, PROMPT - 1 + k].argmax(-1))
    # the option changes the numbers: the official caches give other logits (not a no-op)
    assert rel_err(got[0], official[:, -1]) > 1e-6


def test_rounding_formulas():
    with precision("float64"):
        # bf16: 8 significant bits, ties to even; float64 is rounded once (1 + 2^-8 + 2^-30 rounds up)
        x = np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -30, -3.0e-39, 0.0])
        assert bf16_round(x).tolist() == [1.0, 1 + 4 * 2.0 ** -8, 1 + 2.0 ** -7, -33 * 2.0 ** -133, 0.0]
        # int8 per 64-dim tile: scale = amax / 127, values rounded half to even
        t = np.zeros((1, 128))
        t[0, 0], t[0, 1], t[0, 64] = 127.0, 2.5, 1e-6            # second tile under the 1e-4 floor
        y = int8_quant_dequant(t, 64, 1e-4)
        assert y[0, 0] == 127.0 and y[0, 1] == 2.0
        assert y[0, 64] == 1 * (1e-4 / 127)                        # 1e-6 / (1e-4 / 127) = 1.27 -> 1
        kv = np.full((1, 128), 1 + 2.0 ** -8)
        out = kv_cache_round(kv, 64, "int8")
        assert (out[0, 64:] == 1.0).all() and np.allclose(out[0, :64], 1 + 2.0 ** -8, rtol=1 / 254)


def test_graph_rounding_matches_oracle():
    """The cells' bf16 and INT8 roundings (kernels.QuantDequant) equal the oracle's on random data
    spanning many binades, including exact ties."""
    import mindspore as ms
    from mindspore import Tensor
    from ascend_v4.kernels import KV_INT8_AMAX_FLOOR, QuantDequant
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 128)) * np.exp2(rng.integers(-20, 20, (8, 1)))
    x[0, :4] = [1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, -(1 + 2.0 ** -8), 2.5]
    rt = RuntimeConfig(compute_dtype="float64")
    with precision("float64"):
        bf = QuantDequant(rt, "bf16", 1)(Tensor(x, ms.float64)).asnumpy()
        assert np.array_equal(bf, bf16_round(x))
        i8 = QuantDequant(rt, "int8", 64, KV_INT8_AMAX_FLOOR)(Tensor(x, ms.float64)).asnumpy()
        assert np.array_equal(i8, int8_quant_dequant(x, 64, float(np.float32(1e-4))))


def test_refusals():
    cfg = load_config("tiny")
    with pytest.raises(ConfigError, match="kv_cache must be one of fp8, bf16, int8"):
        RuntimeConfig.for_model(cfg, kv_cache="int4")
    with pytest.raises(ConfigError, match="indexer_cache must be one of fp4, int8"):
        RuntimeConfig.for_model(cfg, indexer_cache="bf16")
    rt = RuntimeConfig(custom_ops=True, kv_cache="bf16")
    with pytest.raises(ConfigError, match="FP8 MODEL1 KV cache"):
        rt.validate(cfg)
