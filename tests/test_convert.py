"""`ascend-v4 convert`: per-SoC plans, streaming atomic conversion, the W8A8 model, verification."""
import json
import os
import shutil

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

from ascend_v4 import quant
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
from ascend_v4.checkpoint.schema import checkpoint_schema, weight_role
from ascend_v4.config import from_dict, load_config
from ascend_v4.safetensors_io import SafeFile, save
from tools.cli import main as cli
from tools.convert import ConvertError
from tools.convert.plan import make_plan
from tools.convert.verify import TOLERANCES, Streams, compare, prompt, run_streams
from tools.convert.writer import DESCRIPTION, OUT_FILE, convert_checkpoint

BENCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools", "bench", "configs")  # = /work/shared/bench
W8A8_ROLES = {"attn": "int8", "expert": "int8", "shared": "int8"}


def reference_config(which: str):
    with open(os.path.join(BENCH, f"reference-tiny-{which}.json"), encoding="utf-8") as fh:
        return from_dict(json.load(fh), name=f"reference-tiny-{which}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def sources(work):
    """Official-format checkpoints: tiny (FP8 + FP4 experts) and the two reference-tiny configs."""
    return {"tiny": write_random_checkpoint(load_config("tiny"), str(work / "tiny"), "fp8"),
            "ref-bf16": write_random_checkpoint(reference_config("bf16"), str(work / "ref-bf16"), "bf16"),
            "ref-fp8": write_random_checkpoint(reference_config("fp8"), str(work / "ref-fp8"), "fp8")}


@pytest.fixture(scope="module")
def converted(sources, work):
    out = {}
    for src in sources:
        for scheme in ("w8a8", "bf16"):
            out[src, scheme] = str(work / f"{src}-{scheme}")
            convert_checkpoint(sources[src], out[src, scheme], "ascend910b", scheme)
    return out


# ---- plans -----------------------------------------------------------------------------------
def test_plan_follows_the_soc_profiles():
    cfg = load_config("tiny")
    p = make_plan(cfg, "Ascend910B")                    # a CANN alias; default scheme w8a8
    assert (p.soc, p.scheme, p.kv_cache, p.indexer_cache) == ("ascend910b", "w8a8", "bf16", "int8")
    assert p.config.quantization == W8A8_ROLES and p.config.dtype == "bf16"
    assert make_plan(cfg, "ascend910_93", kv_cache="int8").kv_cache == "int8"
    assert make_plan(cfg, "ascend950").copy                      # 950: FP8 / FP4 kept
    with pytest.raises(ConvertError, match="ascend910b cannot run it.*mxfp8"):
        make_plan(cfg, "ascend910b", "mxfp8")
    mx = make_plan(cfg, "ascend950", "mxfp8-mxfp4")               # the recipe's spelling
    assert mx.scheme == "mxfp8" and mx.config.quantization == {
        "attn_a": "mxfp8", "attn": "mxfp8", "attn_o": "mxfp8", "shared": "mxfp8", "expert": "mxfp4"}
    with pytest.raises(ConvertError, match="unknown SoC"):
        make_plan(cfg, "ascend310")
    with pytest.raises(ConvertError, match="expected one of"):
        make_plan(cfg, "ascend910b", "w3a3")


def test_roles_agree_with_the_planner_groups():
    from tools.deploy.model_stats import v4_stats
    cfg = load_config("tiny")
    names = checkpoint_schema(cfg, "fp8")
    checked = 0
    for g in v4_stats(cfg).groups:
        if g.role in ("small", "table"):
            continue
        stem, _, leaves = g.name.rpartition(".")
        for leaf in leaves.split("+"):
            name = f"{stem}.{leaf}" if stem else leaf
            name = name if name.endswith(".weight") else name + ".weight"
            name = name.replace(".experts.", ".experts.0.")
            assert name in names and weight_role(name) == g.role, (name, g.role)
            checked += 1
    assert checked > 40


# ---- the numpy W8A8 quantiser and the model's product ----------------------------------------
def test_int8_rows_quantiser():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [1.27, 0.005, -0.015]], np.float32)
    q, s = quant.quantize_int8_rows(w)
    assert q.dtype == np.int8 and s.dtype == np.float32
    np.testing.assert_array_equal(s, np.float32([1.0 / 127, 1.0, 0.01]))
    # 0.5 / (1/127) = 63.5 -> 64 (half to even); 0.005 / 0.01 = 0.5 -> 0; -0.015 / 0.01 -> -2
    np.testing.assert_array_equal(q, [[64, -127, 32], [0, 0, 0], [127, 0, -2]])


@pytest.mark.parametrize("batched,dtype,k", [(False, np.float64, 256), (True, np.float64, 256),
                                             (False, np.float32, 2304), (True, np.float32, 2304)])
def test_w8a8_linear_equals_numpy_int8_reference(batched, dtype, k):
    """Bit for bit; float32 with k = 2304 crosses the exact-sum chunks (1024) and 2^24."""
    import mindspore as ms
    from mindspore import Tensor, nn
    from ascend_v4.linear import w8a8_product
    ms.set_context(mode=ms.GRAPH_MODE)

    class Net(nn.Cell):
        def construct(self, x, w, s):
            return w8a8_product(x, w, s)

    rng = np.random.default_rng(1)
    n = 3 if batched else 1
    x = (rng.standard_normal((n, 7, k)) * rng.uniform(0.1, 10, (n, 7, 1))).astype(dtype)
    x[0, 2] = np.sign(x[0, 2]) * 3.0                          # every |q| = 127: sums past 2^24
    x[0, 0] = 0.0                                             # an all-zero token
    x[0, 1, :4] = [0.5, 1.5, -2.5, 127.0]                     # ties at 0.5 steps
    w, s = zip(*(quant.quantize_int8_rows(rng.standard_normal((48, k)).astype(np.float32)) for _ in range(n)))
    w, s = np.stack(w), np.stack(s)
    w[0, 0] = np.where(x[0, 2] > 0, 127, -127)                # row 0 . token 2 = 127^2 k > 2^24
    if not batched:
        x, w, s = x[0], w[0], s[0]
    y = Net()(Tensor(x), Tensor(w), Tensor(s)).asnumpy()
    ref = (np.stack([quant.w8a8_matmul(x[i], w[i], s[i]) for i in range(n)]) if batched
           else quant.w8a8_matmul(x, w, s))
    assert y.dtype == ref.dtype == dtype
    np.testing.assert_array_equal(y, ref)                     # bit for bit


# ---- conversion round trips ------------------------------------------------------------------
def test_round_trip_formats_and_description(sources, converted):
    for src in sources:
        ck_src = open_checkpoint(sources[src])
        for scheme in ("w8a8", "bf16"):
            folder = converted[src, scheme]
            ck = open_checkpoint(folder)                      # the loader reads it back, validated
            with open(os.path.join(folder, DESCRIPTION), encoding="utf-8") as fh:
                desc = json.load(fh)
            assert desc["scheme"] == scheme and desc["soc"] == "ascend910b"
            assert desc["source"]["bytes"] == sum(os.path.getsize(os.path.join(sources[src], f))
                                                  for f in os.listdir(sources[src]) if f.endswith(".safetensors"))
            f = SafeFile(os.path.join(folder, OUT_FILE))
            roles = W8A8_ROLES if scheme == "w8a8" else {}
            for name in ck_src.names():
                entry, role = desc["tensors"][name], weight_role(name)
                assert entry["format"] == ck.formats[name]
                if role in roles:
                    assert f.info(name) == ("I8", ck_src.dequantized(name).shape)
                    assert f.info(name[:-7] + ".scale") == ("F32", (f.info(name)[1][0],))
                    assert entry["scale"]["granularity"] == "per-output-channel"
                    q, s = quant.quantize_int8_rows(ck_src.dequantized(name))
                    np.testing.assert_array_equal(f.get(name), q)
                    np.testing.assert_array_equal(f.get(name[:-7] + ".scale"), s)
                elif ck_src.formats[name] in ("fp8", "fp4", "bf16"):
                    assert f.info(name)[0] == "BF16", name
                    # FP8 / FP4 values are exact in bf16: nothing is lost
                    np.testing.assert_array_equal(f.get(name).astype(np.float32), ck_src.dequantized(name))
                else:
                    np.testing.assert_array_equal(f.get(name), ck_src.raw(name))
            assert sorted(f.keys()) == sorted(checkpoint_schema(ck.config, "bf16"))
            if scheme == "w8a8":
                assert any(v["format"] == "int8" and v["source_format"] == ck_src.formats[k]
                           for k, v in desc["tensors"].items())
            assert os.path.exists(os.path.join(folder, "tokenizer.json"))


def test_native_copy_for_the_950(sources, work):
    out = str(work / "tiny-native")
    desc = convert_checkpoint(sources["tiny"], out, "ascend950")
    assert desc["scheme"] == "native" and desc["kv_cache"] == "fp8"
    a, b = SafeFile(os.path.join(sources["tiny"], "model0-mp1.safetensors")), SafeFile(os.path.join(out, OUT_FILE))
    assert sorted(a.keys()) == sorted(b.keys())
    for k in a.keys():
        assert a.info(k) == b.info(k) and np.array_equal(a.get(k).view(np.uint8), b.get(k).view(np.uint8))


def test_cache_formats_recorded_and_loaded(sources, work):
    """--kv-cache int8 (C8): config.json carries kv_cache / indexer_cache, the loader runs them, and
    the FP8-page custom ops are refused on it; the 950's native copy keeps the release's caches."""
    out = str(work / "tiny-c8")
    r = _runs(["convert", sources["tiny"], "--soc", "ascend910b", "--kv-cache", "int8", "--out", out, "--no-verify"])
    assert r.exit_code == 0, r.output
    assert "KV cache int8, indexer cache int8" in r.output
    desc = json.load(open(os.path.join(out, DESCRIPTION)))
    assert desc["kv_cache_rounding"].startswith("C8") and "kv_cache_note" not in desc
    ck = open_checkpoint(out)
    assert (ck.runtime.kv_cache, ck.runtime.indexer_cache) == ("int8", "int8")
    assert open_checkpoint(out, overrides={"kv_cache": "bf16"}).runtime.kv_cache == "bf16"
    with pytest.raises(Exception, match="keep the FP8 MODEL1 KV cache"):
        open_checkpoint(out, overrides={"custom_ops": True})
    assert open_checkpoint(sources["tiny"]).runtime.kv_cache == "fp8"
    convert_checkpoint(sources["tiny"], str(work / "tiny-950"), "ascend950")
    native = open_checkpoint(str(work / "tiny-950"))
    assert (native.runtime.kv_cache, native.runtime.indexer_cache) == ("fp8", "fp4")


# ---- errors leave nothing behind --------------------------------------------------------------
def _runs(args):
    return CliRunner().invoke(cli, args)


def test_bad_inputs_give_clear_errors_and_no_output(sources, work, tmp_path):
    out = str(tmp_path / "out")
    # truncated safetensors
    bad = tmp_path / "truncated"
    shutil.copytree(sources["tiny"], bad)
    path = bad / "model0-mp1.safetensors"
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    # foreign: a tensor the schema does not know
    foreign = tmp_path / "foreign"
    shutil.copytree(sources["ref-bf16"], foreign)
    f = SafeFile(str(foreign / "model0-mp1.safetensors"))
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((4, 4), ml_dtypes.bfloat16)
    os.remove(foreign / "model0-mp1.safetensors")
    save(tensors, str(foreign / "model0-mp1.safetensors"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [([str(bad)], "truncated"), ([str(foreign)], "unexpected +model.layers.0.mlp.up_proj"),
             ([str(empty)], "no .safetensors"), ([str(tmp_path / "absent")], "not a checkpoint folder"),
             ([sources["tiny"], "--soc", "ascend999"], "unknown SoC"),
             ([sources["tiny"], "--soc", "ascend910b", "--quant", "mxfp8"], "cannot run it"),
             ([sources["tiny"], "--soc", "ascend910b", "--kv-cache", "fp8"], "no fp8 KV cache"),
             ([sources["tiny"], "--soc", "ascend910b", "--out", str(work)], "exists")]
    for args, message in cases:
        full = args + (["--soc", "ascend910b"] if "--soc" not in args else []) + \
            (["--out", out] if "--out" not in args else [])
        r = _runs(["convert"] + full + ["--no-verify"])
        assert r.exit_code == 1, (args, r.output)
        assert "Traceback" not in r.output and __import__("re").search(message, r.output), (message, r.output)
        assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def test_failure_mid_conversion_removes_the_temporary_folder(sources, tmp_path, monkeypatch):
    import tools.convert.writer as writer

    def broken(ckpt, schema, changed=None):
        yield from []
        raise OSError("disk full")
    monkeypatch.setattr(writer, "convert_tensors", broken)
    with pytest.raises(OSError):
        convert_checkpoint(sources["tiny"], str(tmp_path / "out"), "ascend910b")
    assert os.listdir(tmp_path) == []


# ---- whole-model verification -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_streams(sources, converted):
    """Streams of the tiny source (official path), its bf16 and w8a8 conversions."""
    ids = prompt(512)
    return {k: run_streams(f, ids) for k, f in (("src", sources["tiny"]), ("bf16", converted["tiny", "bf16"]),
                                                  ("w8a8", converted["tiny", "w8a8"]))}


def test_verification_within_tolerance(tiny_streams):
    names = [f"layers.{i}" for i in range(4)]
    for scheme in ("bf16", "w8a8"):
        report = compare(tiny_streams[scheme], tiny_streams["src"], scheme, names)
        assert report.passed, report.table()
        assert 0 < report.logits and report.top1 > 0


def _broken_copy(folder, to, change):
    shutil.copytree(folder, to)
    f = SafeFile(str(to / OUT_FILE))
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    change(tensors)
    os.remove(to / OUT_FILE)
    save(tensors, str(to / OUT_FILE))
    return str(to)


def _double_scales(t):
    t["layers.1.ffn.shared_experts.w2.scale"] *= 2


def _permute_rows(t):
    rows = np.random.default_rng(0).permutation(t["layers.2.attn.wq_b.weight"].shape[0])
    for k in ("layers.2.attn.wq_b.weight", "layers.2.attn.wq_b.scale"):
        t[k] = t[k][rows]


def test_wrong_conversion_is_flagged(sources, converted, tmp_path):
    """One tensor's per-channel scales doubled: the CLI verification fails, naming its layer."""
    wrong = _broken_copy(converted["tiny", "w8a8"], tmp_path / "wrong", _double_scales)
    r = _runs(["parity", wrong, "--against", sources["tiny"]])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "FAIL: layers.1 over tolerance" in r.output
    report = json.load(open(os.path.join(wrong, "verify_report.json")))
    assert report["first_failure"] == "layers.1" and report["steps"]["layers.0"] <= TOLERANCES["w8a8"]["step"]


def test_permuted_rows_are_flagged(converted, tiny_streams, tmp_path):
    wrong = _broken_copy(converted["tiny", "w8a8"], tmp_path / "perm", _permute_rows)
    report = compare(run_streams(wrong, prompt(512)), tiny_streams["src"], "w8a8",
                     [f"layers.{i}" for i in range(4)])
    assert report.first_failure == "layers.2", report.table()
    assert report.logits > TOLERANCES["w8a8"]["logits"] and report.top1 < TOLERANCES["w8a8"]["top1"]


def test_convert_verifies_by_default(sources, tmp_path):
    """`convert` on the reference-tiny bf16 checkpoint: W8A8 for the 910C, verified within tolerance."""
    out = str(tmp_path / "ref-bf16-w8a8")
    r = _runs(["convert", sources["ref-bf16"], "--soc", "ascend910_93", "--out", out])
    assert r.exit_code == 0, r.output
    assert "ascend910_93 w8a8" in r.output and "w8a8: PASS" in r.output
    report = json.load(open(os.path.join(out, "verify_report.json")))
    assert report["passed"] and 0 < report["logits_rel_err"] <= TOLERANCES["w8a8"]["logits"]
    assert open_checkpoint(out).config.quantization == W8A8_ROLES


def test_cli_convert_and_help(sources, tmp_path):
    r = _runs(["convert", "--help"])
    assert r.exit_code == 0 and "--quant" in r.output and "ascend910b: w8a8" in r.output
    out = str(tmp_path / "c")
    r = _runs(["convert", sources["ref-fp8"], "--soc", "ascend910b", "--quant", "bf16", "--out", out, "--no-verify"])
    assert r.exit_code == 0, r.output
    assert "ascend910b bf16" in r.output and "PASS" not in r.output and os.path.exists(os.path.join(out, OUT_FILE))
    assert open_checkpoint(out).config.quantization == {}


def test_streams_compare_counts_positions():
    a = Streams(np.eye(4), [np.ones((4, 2, 3))])
    b = Streams(np.eye(4)[[0, 1, 3, 2]], [np.ones((4, 2, 3)) * 2])
    r = compare(a, b, "w8a8", ["layers.0"])
    assert r.top1 == 0.5 and r.layers == [0.5] and r.first_failure == "layers.0"
