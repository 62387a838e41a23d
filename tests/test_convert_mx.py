"""`convert --quant mxfp8-mxfp4` (ascend950): the MXFP8 requantisation, MXFP8 activations, the
converted model against the float64 oracle, its accuracy, a wrong conversion, the planner's bytes."""
import json
import os

import ml_dtypes
import numpy as np
import pytest

from ascend_v4 import oracle, quant
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
from ascend_v4.checkpoint.schema import weight_name, weight_role
from ascend_v4.config import load_config
from ascend_v4.safetensors_io import SafeFile
from tools.convert.verify import TOLERANCES, Streams, block_names, compare, prompt, run_streams
from tools.convert.writer import DESCRIPTION, OUT_FILE, convert_checkpoint

MX_ROLES = {"attn_a": "mxfp8", "attn": "mxfp8", "attn_o": "mxfp8", "shared": "mxfp8", "expert": "mxfp4"}


# ---- the requantisation against an independent formula -----------------------------------------
def _ocp_exponent(amax: np.ndarray) -> np.ndarray:
    """floor(log2 amax) - 8 per block, from float64 frexp (amax = m 2^e, m in [0.5, 1))."""
    _, e = np.frexp(amax.astype(np.float64))
    return e - 1 - 8


def test_fp8_blocks_requantise_to_mxfp8_exactly():
    """An FP8 128x128-block weight -> MXFP8 1x32: every value kept. The scale is the OCP one,
    2^(floor(log2 amax) - 8), except for blocks whose largest code would land on 480 (> 448), which
    take the next power up; the strict OCP scale would saturate exactly those elements to 448."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 384)).astype(np.float32) * np.exp2(rng.integers(-6, 6, (256, 1)))
    q8, s8 = quant.quantize_fp8(w)
    src = quant.dequantize_fp8(q8, s8)                              # on the FP8 grid
    src[0, :32] = 0.0                                               # an all-zero block
    src[1, :32] = src[1, 0] = 0.0
    src[1, 5] = 1.875 * 2.0 ** -3                                   # amax mantissa 1.875: would saturate
    src[1, 6] = 2.0 ** -9 * 2.0 ** -3                               # an e4m3 subnormal code of the same block
    codes, scale = quant.quantize_mxfp8(src)
    assert codes.dtype == scale.dtype == np.uint8 and scale.shape == (256, 384 // 32)
    back = quant.dequantize_mxfp8(codes, scale)
    np.testing.assert_array_equal(back, src)                        # exact, every weight
    blocks = np.abs(src.astype(np.float64)).reshape(256, -1, 32)
    amax = blocks.max(-1)
    exp = _ocp_exponent(np.where(amax > 0, amax, 1.0))
    bump = amax / np.exp2(exp) > 448                                # the strict scale would saturate
    want = np.where(amax > 0, exp + bump, -127) + 127               # ue8m0 exponent bytes
    np.testing.assert_array_equal(scale, want)
    assert bump[1, 0] and 0 < bump.mean() < 0.5
    # the strict OCP rule: values over 448 x scale saturate, the rest stay exact
    strict = np.repeat(np.exp2(exp), 32, 1)
    sat = np.abs(src) / strict > 448
    strict_back = np.clip(src / strict, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64) * strict
    assert np.array_equal(strict_back != src, sat & (amax[:, :, None].repeat(32, 2).reshape(src.shape) > 0))
    assert sat.sum() >= bump.sum() > 0


def test_mxfp8_rounds_generic_values_half_to_even():
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [448.0, 1.0625, 1.1875, -0.5]                        # scale 1: 1.0625 -> 1.0, 1.1875 -> 1.25
    codes, scale = quant.quantize_mxfp8(x)
    assert scale[0, 0] == 127
    np.testing.assert_array_equal(quant.dequantize_mxfp8(codes, scale)[0, :4], [448.0, 1.0, 1.25, -0.5])


def test_mxfp8_activations_saturate_with_the_ocp_scale():
    """amax 1.9: scale 2^(0 - 8), 1.9 * 256 = 486.4 saturates to 448 (1.75); a tie rounds to even."""
    x = np.zeros((2, 32))
    x[0, :3] = [1.9, 1.0 + 1.0 / 16, 0.0]
    x[1, 0] = 3.0
    with oracle.precision("float64"):
        y = oracle.numerics.mxfp8_quant_dequant(x)
    np.testing.assert_array_equal(y[0, :3], [1.75, 1.0, 0.0])
    np.testing.assert_array_equal(y[1], x[1])


# ---- the converted model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert_mx")
    src = write_random_checkpoint(load_config("tiny"), str(folder / "tiny"), "fp8")
    out = str(folder / "tiny-mx")
    desc = convert_checkpoint(src, out, "ascend950", "mxfp8-mxfp4")
    return {"src": src, "out": out, "desc": desc, "dir": folder}


def _oracle_streams(folder: str, change=None) -> Streams:
    ck = open_checkpoint(folder)
    tensors = {k: np.array(ck.raw(k)) for k in ck.schema}
    if change:
        change(tensors)
    with oracle.precision("float64"):
        W = oracle.dequantize(tensors, ck.config)
        logits, H = oracle.forward_layers(ck.config, W, prompt(ck.config.vocab_size)[None])
    return Streams(logits[0], [h[0] for h in H])


@pytest.fixture(scope="module")
def model_streams(work):
    """The converted checkpoint through the MindSpore model, float64 (one compile)."""
    return run_streams(work["out"], prompt(512), "float64")


@pytest.fixture(scope="module")
def source_streams(work):
    return _oracle_streams(work["src"])


def test_converted_layout_and_description(work):
    ck, src = open_checkpoint(work["out"]), open_checkpoint(work["src"])
    assert ck.config.quantization == MX_ROLES
    desc = work["desc"]
    assert (desc["soc"], desc["scheme"], desc["kv_cache"]) == ("ascend950", "mxfp8", "fp8")
    assert desc["weights_changed"] == 0 and "1x32" in desc["activations_mxfp8"]
    f, g = SafeFile(os.path.join(work["out"], OUT_FILE)), SafeFile(os.path.join(work["src"], "model0-mp1.safetensors"))
    n_mx = 0
    for name in src.names():
        fmt, entry = MX_ROLES.get(weight_role(name)), desc["tensors"][name]
        scale = name[:-7] + ".scale"
        if fmt == "mxfp4":                                          # the FP4 bytes, copied
            assert entry["format"] == "mxfp4" and entry["changed"] == 0
            for k in (name, scale):
                assert f.info(k) == g.info(k) and np.array_equal(f.get(k).view(np.uint8), g.get(k).view(np.uint8))
        elif fmt == "mxfp8":
            out_f, in_f = src.dequantized(name).shape
            assert f.info(name) == ("F8_E4M3", (out_f, in_f)) and f.info(scale) == ("F8_E8M0", (out_f, in_f // 32))
            assert entry["scale"]["granularity"] == "1x32 blocks" and entry["changed"] == 0
            np.testing.assert_array_equal(ck.dequantized(name), src.dequantized(name))
            n_mx += 1
    assert n_mx > 20
    with open(os.path.join(work["out"], DESCRIPTION), encoding="utf-8") as fh:
        assert json.load(fh)["role_formats"]["expert"] == "mxfp4"


def test_model_equals_the_oracle_on_the_converted_format(work, model_streams):
    """Float64: the MindSpore model (MXFP8 weights, MXFP8 1x32 activations) = the numpy oracle."""
    ref = _oracle_streams(work["out"])
    np.testing.assert_allclose(model_streams.logits, ref.logits, rtol=0, atol=1e-12 * np.abs(ref.logits).max())
    for got, want in zip(model_streams.hidden, ref.hidden):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_accuracy_against_the_official_format(model_streams, source_streams):
    report = compare(model_streams, source_streams, "mxfp8", block_names(load_config("tiny")))
    assert report.passed, report.table()
    assert 0 < report.logits and max(report.steps) > 0


def _shift_scales(t):
    """The layer-1 shared expert's w2 MXFP8 scales moved one 1x32 block along the input dim."""
    k = "layers.1.ffn.shared_experts.w2.scale"
    t[k] = np.roll(t[k], 1, axis=1)


def _block_scales_of(source: str):
    """Layer 2's wo_b given the source's 128x128 scale for every 1x32 block (codes unchanged)."""
    stem, src = "layers.2.attn.wo_b", open_checkpoint(source)

    def change(t):
        out, blocks = t[stem + ".scale"].shape
        t[stem + ".scale"] = np.repeat(np.repeat(np.asarray(src.raw(stem + ".scale")), 128, 0), 4, 1)[:out, :blocks]
    return change


def test_wrong_conversions_are_flagged(work, source_streams):
    """Measured (tiny, float64 oracle): good steps <= 0.099; shifted scales add 0.20 at layers.1,
    128-block scales 0.48 at layers.2."""
    names = block_names(load_config("tiny"))
    for change, layer in ((_shift_scales, "layers.1"), (_block_scales_of(work["src"]), "layers.2")):
        report = compare(_oracle_streams(work["out"], change), source_streams, "mxfp8", names)
        assert report.first_failure == layer, report.table()


def test_planner_bytes_equal_the_converted_checkpoint(work):
    """`plan --soc ascend950 --weights mxfp8`: its weight bytes per role = the converted file's."""
    from tools.deploy.model_stats import v4_stats
    cfg = load_config("tiny")
    f = SafeFile(os.path.join(work["out"], OUT_FILE))
    ck = open_checkpoint(work["out"])
    got = {}
    for name in f.keys():
        role, spec = weight_role(weight_name(name)), ck.schema[weight_name(name)]
        if role and len(spec.shape) == 2:                           # matrices and their scales
            got[role] = got.get(role, 0) + ck.schema[name].nbytes
    want = {}
    for g in v4_stats(cfg).groups:
        if g.role not in ("small", "table"):
            want[g.role] = want.get(g.role, 0) + g.nbytes("mxfp8")
    assert got == want
