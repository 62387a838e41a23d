"""`convert --quant w4a8` (910B/910C): INT4 per-channel routed experts, the rest W8A8. No model
compile here: the integer product is W8A8's (test_convert.py, bit for bit); these check the INT4
quantiser and packing, the layout, what the model loads, the oracle's accuracy and a wrong packing."""
import os

import numpy as np
import pytest

from ascend_v4 import quant
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
from ascend_v4.checkpoint.schema import weight_name, weight_role
from ascend_v4.config import load_config
from ascend_v4.safetensors_io import SafeFile
from tests.test_convert_mx import _oracle_streams
from tools.convert.verify import TOLERANCES, block_names, compare
from tools.convert.writer import OUT_FILE, convert_checkpoint

W4A8_ROLES = {"attn": "int8", "shared": "int8", "expert": "int4"}


def test_int4_rows_quantiser_and_packing():
    w = np.array([[0.7, -0.35, 0.05, -0.7], [0.0, 0.0, 0.0, 0.0], [1.4, 0.3, -1.0, 0.1]], np.float32)
    packed, scale = quant.quantize_int4_rows(w)
    np.testing.assert_array_equal(scale, np.float32([0.1, 1.0, 0.2]))
    # 0.7/0.1 -> 7, -0.35/0.1 = -3.5 -> -4 (half to even), 0.05/0.1 = 0.5 -> 0; 0.3/0.2 = 1.5 -> 2
    want = np.array([[7, -4, 0, -7], [0, 0, 0, 0], [7, 2, -5, 0]])
    low, high = want[:, 0::2] & 15, want[:, 1::2] & 15              # two's complement nibbles
    np.testing.assert_array_equal(packed.view(np.uint8), (low | high << 4).astype(np.uint8))
    np.testing.assert_array_equal(quant.unpack_int4(packed), want)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    q = quant.unpack_int4(quant.quantize_int4_rows(x)[0]).astype(np.float64)
    s = np.abs(x).max(1, keepdims=True).astype(np.float64) / 7
    assert np.abs(q * s - x).max() <= s.max() / 2 * (1 + 1e-6) and q.min() >= -7 and q.max() <= 7


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert_w4")
    src = write_random_checkpoint(load_config("tiny"), str(folder / "tiny"), "fp8")
    out = str(folder / "tiny-w4")
    return {"src": src, "out": out, "desc": convert_checkpoint(src, out, "ascend910_93", "w4a8")}


def test_layout_and_what_the_model_loads(work):
    from ascend_v4.api import build_model
    ck, src = open_checkpoint(work["out"]), open_checkpoint(work["src"])
    assert ck.config.quantization == W4A8_ROLES and work["desc"]["scheme"] == "w4a8"
    assert "two per byte" in work["desc"]["weights_int4"]
    f = SafeFile(os.path.join(work["out"], OUT_FILE))
    for e in (0, 5):
        name = f"layers.1.ffn.experts.{e}.w2.weight"
        out_f, in_f = src.dequantized(name).shape
        assert f.info(name) == ("I8", (out_f, in_f // 2)) and f.info(name[:-7] + ".scale") == ("F32", (out_f,))
        packed, scale = quant.quantize_int4_rows(src.dequantized(name))
        np.testing.assert_array_equal(f.get(name), packed)
        np.testing.assert_array_equal(f.get(name[:-7] + ".scale"), scale)
    assert f.info("layers.1.ffn.shared_experts.w2.weight")[0] == "I8"
    assert f.info("layers.1.attn.wq_a.weight")[0] == "BF16"
    model = build_model(ck)                                         # loads; no graph compile
    experts = model.transformer.layers[1].ffn.experts.w2
    assert experts.kind == "int8"
    for e in (0, 5):
        name = f"layers.1.ffn.experts.{e}.w2.weight"
        np.testing.assert_array_equal(experts.weight.asnumpy()[e], quant.unpack_int4(f.get(name)))
        np.testing.assert_array_equal(experts.scale.asnumpy()[e], f.get(name[:-7] + ".scale"))


def _swap_nibbles(t):
    """Layer 2's experts packed high nibble first."""
    for e in range(8):
        for w in ("w1", "w2", "w3"):
            b = t[f"layers.2.ffn.experts.{e}.{w}.weight"].view(np.uint8)
            t[f"layers.2.ffn.experts.{e}.{w}.weight"] = ((b >> 4) | (b << 4)).astype(np.uint8).view(np.int8)


def test_accuracy_and_a_wrong_packing(work):
    """Oracle, float64: W4A8 within tolerance of the official format; swapped nibbles flagged at
    their block (measured: good steps <= 0.111, swapped 0.33 at layers.2)."""
    names = block_names(load_config("tiny"))
    ref = _oracle_streams(work["src"])
    good = compare(_oracle_streams(work["out"]), ref, "w4a8", names)
    assert good.passed, good.table()
    wrong = compare(_oracle_streams(work["out"], _swap_nibbles), ref, "w4a8", names)
    assert wrong.first_failure == "layers.2", wrong.table()
    assert TOLERANCES["w4a8"]["step"] < 0.33


def test_planner_bytes_equal_the_converted_checkpoint(work):
    from tools.deploy.model_stats import v4_stats
    ck = open_checkpoint(work["out"])
    got, want = {}, {}
    for name in SafeFile(os.path.join(work["out"], OUT_FILE)).keys():
        role = weight_role(weight_name(name))
        if role and len(ck.schema[weight_name(name)].shape) == 2:
            got[role] = got.get(role, 0) + ck.schema[name].nbytes
    for g in v4_stats(load_config("tiny")).groups:
        if g.role not in ("small", "table"):
            want[g.role] = want.get(g.role, 0) + g.nbytes("w4a8")
    assert got == want
