"""The model with cfg.custom_ops (kv_pack_fp8 + sparse_fp8_decode on FP8 MODEL1 page pools, plus the
sinkhorn_mhc / MoE kernels) against the default path on the tiny preset.

Prefill 20 tokens (batch 2, one extend per row), then 16 teacher-forced decode steps (positions 20..35: four ratio-4 entry
emissions and the window wrap at 32).  The one lossy step of the FP8 cache is the bf16 rounding of the
64 RoPE dims (the 448 other dims are already fp8-simulated, so packing them is lossless).

* bf16 checkpoint, whole model: per-step logits within 2e-2 relative (measured max 1.3e-2, seed 3) except
  at most two steps where a near-tie flips (measured 0.26 and 0.097), same top-1 where the margin is clear.
* FP8 checkpoint, float64, one CSA attention layer: with the RoPE dims of keys and entries rounded to bf16 on
  the default path too, the kernel path's outputs are equal (measured difference 0).  Whole-model FP8
  comparisons are not tight: the float32 kernels inside a float64 model flip FP8 activation roundings that a
  random-weight network amplifies (measured up to 0.65 relative logits, top-1 differs), and even with the
  bf16 rounding on both sides the sinkhorn / MoE kernels alone flip one by step 14 (8e-2).
"""
import os

import ml_dtypes
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn, ops  # noqa: E402

import ascend_v4.attention as attention_mod  # noqa: E402
import ascend_v4.compressor as compressor_mod  # noqa: E402
from ascend_v4.api import build_model  # noqa: E402
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint  # noqa: E402
from ascend_v4.config import load_config  # noqa: E402
from custom_ops.sparse_fp8_decode.reference import unpack_kv_fp8  # noqa: E402

PROMPT, STEPS, BATCH = 20, 16, 2
# bf16 checkpoint, per step: max|on - off| / max|off| (measured <= 1.3e-2). Prefill is an extend too, so
# it attends the FP8 pages (bf16 RoPE dims on every key) where it used to attend dense fp32 keys (4.0e-3).
LOGIT_RTOL = 2e-2
SAME_ROUNDING_RTOL = 1e-6  # FP8 float64 with bf16 RoPE keys on both paths (measured 0)
FLIPPED_STEPS, FLIP_RTOL = 2, 0.5   # steps allowed past LOGIT_RTOL by a near-tie flip, and their bound


def run(path, overrides, ids):
    """Prefill ids[:, :PROMPT], decode the rest one by one -> (logits [1+STEPS, b, vocab], prefill state)."""
    model = build_model(open_checkpoint(path, overrides=overrides))
    out = [model(ids[:, :PROMPT], 0)]
    state = model.state_arrays()
    for p in range(PROMPT, PROMPT + STEPS):
        out.append(model(ids[:, p:p + 1], p))
    return np.stack(out), state, model


def rel_err(a, b):
    """Per step: max|a - b| / max|b| over everything else."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, 512, (BATCH, PROMPT + STEPS)).astype(np.int32)


def test_bf16_checkpoint_kernels_match_default(tmp_path, ids):
    path = write_random_checkpoint(load_config("tiny"), os.path.join(tmp_path, "ckpt"), weight_format="bf16", seed=3)
    # the AscendC kernels against the composite primitives, composite on both sides: the fused CPU
    # kernels (Sinkhorn, weight-quant matmul) differ from BLAS and the primitives in float32 ulps,
    # enough to flip an FP8 rounding or a routing near-tie (measured: a prefill step at 0.26 with
    # the fused matmul on one side only); they are checked against the oracle on their own
    # (test_kernels.py)
    off, off_state, _ = run(path, {"kernels": "composite"}, ids)
    on, on_state, model = run(path, {"custom_ops": True, "kernels": "composite"}, ids)
    err = rel_err(on, off)
    # a step whose inputs sit at a near-tie (an FP8 rounding, an expert's routing score) takes the
    # other side of it on one path: one or two steps of 17 well above the rest (measured 0.26 and
    # 0.097 at seed 3 after the composite sums moved to BLAS products; 0.26 before with the fused
    # matmul on one side); every other step within LOGIT_RTOL
    assert (err > LOGIT_RTOL).sum() <= FLIPPED_STEPS and err.max() <= FLIP_RTOL, err
    # the same top-1 wherever the default path's top-2 margin exceeds twice the row's difference (a
    # near-tie may flip under the bf16 RoPE rounding; measured: 1 of 34 rows, margin below the bound)
    top2 = np.sort(off, -1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) > 2 * np.abs(on - off).max(-1)
    assert clear.mean() >= 0.8, clear.mean()
    np.testing.assert_array_equal(on.argmax(-1)[clear], off.argmax(-1)[clear])
    # state layout: the spec says which slots are page pools; after prefill they hold the dense state, rounded
    spec = {slot.name: slot for slot in model.spec}
    assert list(on_state) == list(off_state) == list(spec)
    for name, slot in spec.items():
        assert on_state[name].shape == slot.batch_shape(BATCH) and on_state[name].dtype == slot.dtype
    paged = [name for name, slot in spec.items() if slot.layout == "model1_pages"]
    assert sorted(paged) == sorted(n for n in spec if n.endswith(".window") or n.endswith("attn.entries"))
    hd = model.cfg.head_dim
    # layer 0's window is written from kv whose inputs differ only by the sinkhorn kernel (~1e-7); later
    # layers' inputs also carry the FP8-page attention of the layers before them (checked loosely)
    for name in paged:
        n = spec[name].shape[0]
        ref = off_state[name].reshape(BATCH * n, hd)
        got = unpack_kv_fp8(on_state[name])[:BATCH * n]
        if not name.startswith("layers.0."):
            assert np.linalg.norm(got - ref) <= 5e-2 * np.linalg.norm(ref), name
            continue
        rope = ref[:, 448:].astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_allclose(got[:, 448:], rope, rtol=2 ** -7, atol=1e-6)   # prefill inputs differ ~1e-7
        # fp8 dims: lossless, except where the prefill inputs' ~1e-7 difference (sinkhorn / MoE kernels)
        # flipped an fp8 rounding (one e4m3 step, at most 1/8 relative)
        close = np.isclose(got[:, :448], ref[:, :448], rtol=1e-6, atol=0)
        assert close.mean() >= 0.999, close.mean()
        np.testing.assert_allclose(got[:, :448], ref[:, :448], rtol=1 / 8, atol=2 ** -9 * np.abs(ref).max())


# --- the same comparison with the bf16 RoPE rounding applied on the default path as well -------------
def _qkv_bf16_rope(self, x, cos, sin):
    q, qr, kv = self._qkv_exact(x, cos, sin)
    return q, qr, ops.concat((kv[..., :-self.rd], kv[..., -self.rd:].astype(ms.bfloat16).astype(kv.dtype)), -1)


def _finish_bf16_rope(self, entry, cos, sin):
    entry = self._finish_exact(entry, cos, sin)
    if self.rotate:                                     # indexer keys: not stored in the FP8 cache
        return entry
    return ops.concat((entry[..., :-self.rd], entry[..., -self.rd:].astype(ms.bfloat16).astype(entry.dtype)), -1)


class _LayerExtend(nn.Cell):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def construct(self, x, rows, start, count, *state):
        out, state = self.attn.extend(x, rows, start, count, state)
        return (out,) + state


def _layer_outputs(attn, xs):
    """Prefill xs[:, :PROMPT] (one extend from 0), then extend one token at a time through one attention
    layer -> (outputs [1+STEPS, b, 1, dim], final state)."""
    i32 = lambda v: ms.Tensor(np.full(BATCH, v, np.int32))   # noqa: E731
    rows = ms.Tensor(np.arange(BATCH, dtype=np.int32))
    ext = _LayerExtend(attn)
    state = [ms.Tensor(a) for a in attn.state_spec().initial(BATCH)]
    out = ext(ms.Tensor(xs[:, :PROMPT]), rows, i32(0), i32(PROMPT), *state)
    outs, state = [out[0].asnumpy()[:, -1:]], out[1:]
    for p in range(PROMPT, PROMPT + STEPS):
        out = ext(ms.Tensor(xs[:, p:p + 1]), rows, i32(p), i32(1), *state)
        outs.append(out[0].asnumpy())
        state = out[1:]
    return np.stack(outs), [a.asnumpy() for a in state]


def test_fp8_float64_layer_differs_only_by_bf16_rope(tmp_path, monkeypatch):
    """FP8 checkpoint, float64: one attention layer's prefill + 16 decode outputs, kernel path vs default
    path with the RoPE dims of keys / entries rounded to bf16 on both paths."""
    monkeypatch.setattr(attention_mod.Attention, "_qkv_exact", attention_mod.Attention._qkv, raising=False)
    monkeypatch.setattr(attention_mod.Attention, "_qkv", _qkv_bf16_rope)
    monkeypatch.setattr(compressor_mod.Compressor, "_finish_exact", compressor_mod.Compressor.finish, raising=False)
    monkeypatch.setattr(compressor_mod.Compressor, "finish", _finish_bf16_rope)
    path = write_random_checkpoint(load_config("tiny"), os.path.join(tmp_path, "ckpt"), weight_format="fp8", seed=3)
    layer = 1                                       # CSA: window ring + ratio-4 entries + indexer selection
    xs = np.random.default_rng(1).standard_normal((BATCH, PROMPT + STEPS, 128))
    outs, dtypes = [], []
    for on in (False, True):
        model = build_model(open_checkpoint(path, overrides={"compute_dtype": "float64", "custom_ops": on}))
        out, state = _layer_outputs(model.transformer.layers[layer].attn, xs)
        outs.append(out)
        dtypes.append([a.dtype for a in state])
    err = rel_err(outs[1], outs[0])
    assert err.max() <= SAME_ROUNDING_RTOL, err
    assert dtypes[1][:4] == [np.uint8, np.float64, np.float64, np.uint8]   # the kernel path ran

