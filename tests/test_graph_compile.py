"""Graph compile: artifact folder, manifest, MindIR reload vs the live model, CLI errors."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from graph_compile.artifacts import MANIFEST, sha256
from graph_compile.testing import BUCKET, compiled_tiny, mindspore_run
from tools.cli import main


@pytest.fixture(scope="module")
def artifact():
    return compiled_tiny()


def test_manifest_lists_graphs_hashes_and_versions(artifact):
    folder, manifest, _ = artifact
    with open(os.path.join(folder, MANIFEST)) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(manifest))
    assert manifest["buckets"] == [BUCKET] and manifest["opset"] == 21
    assert manifest["precision"] == "float64" and manifest["weight_format"] == "fp8"
    assert manifest["config"]["expert_dtype"] == "fp4"
    soc = manifest["soc"]                              # the formats the target SoC picks (compile --soc)
    assert (soc["soc"], soc["weights"], soc["kv_cache"], soc["indexer_cache"]) == ("ascend910b", "w8a8", "bf16", "int8")
    assert set(manifest["graphs"]) == {f"extend_{BUCKET}", "decode_b1"}
    for rel, digest in manifest["files"].items():
        assert sha256(os.path.join(folder, rel)) == digest
    for g in manifest["graphs"].values():
        assert g["onnx"] in manifest["files"] and g["mindir"] in manifest["files"]
    assert set(manifest["tool_versions"]) >= {"mindspore", "onnx", "onnxruntime"}
    parent = os.path.dirname(folder)
    assert [n for n in os.listdir(parent) if n.startswith(".")] == []   # no partial/probe leftovers


def test_mindir_reload_matches_live_model(artifact):
    """GraphCell(load(mindir)) == the live cells (the model's own ExtendNet / DecodeNet with layer
    outputs): every output of the prompt's extend and of a decode step, state fed in spec order."""
    import mindspore as ms
    from mindspore import Tensor, nn
    from ascend_v4.state import StateSpec
    folder, manifest, _ = artifact
    steps, _, tokens = mindspore_run()                 # live layerwise cells, prompt of seed 0
    b, s = (int(x) for x in BUCKET.split("x"))
    prompt = np.random.default_rng(0).integers(0, 512, (b, s)).astype(np.int32)
    spec = StateSpec.from_table(manifest["state"])
    i32 = lambda v: Tensor(np.array(v, np.int32))     # noqa: E731
    extend = nn.GraphCell(ms.load(os.path.join(folder, manifest["graphs"][f"extend_{BUCKET}"]["mindir"])))
    out = [o.asnumpy() for o in extend(Tensor(prompt), i32([0]), i32([0]), i32([s]),
                                       *[Tensor(a) for a in spec.initial(b)])]
    live = list(steps[0].values())                     # logits, H, state..., hidden...
    assert list(steps[0]) == manifest["graphs"][f"extend_{BUCKET}"]["outputs"][:2] + \
        ["state." + n for n in spec.names] + [f"hidden.layers.{k}" for k in range(4)]
    assert len(out) == len(live)
    for a, ref in zip(out, live):
        np.testing.assert_array_equal(a, ref)
    n_state = len(spec)
    decode = nn.GraphCell(ms.load(os.path.join(folder, manifest["graphs"]["decode_b1"]["mindir"])))
    dec = decode(Tensor(tokens[0]), i32([s]), *[Tensor(a) for a in out[2:2 + n_state]])
    for a, ref in zip(dec, steps[1].values()):
        np.testing.assert_array_equal(a.asnumpy(), ref)


def _compile(args, out):
    return CliRunner().invoke(main, ["compile", *args, "--out", str(out)])


def test_cli_unknown_bucket(tmp_path):
    res = _compile(["--preset", "tiny", "--buckets", "1y8"], tmp_path / "o")
    assert res.exit_code == 1 and "bucket '1y8' is not of the form BATCHxSEQ" in res.output
    res = _compile(["--preset", "tiny", "--buckets", "3x8"], tmp_path / "o")
    assert res.exit_code == 1 and "batch 3 exceeds max_batch_size 2" in res.output
    assert not (tmp_path / "o").exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_cli_missing_checkpoint(tmp_path):
    res = _compile(["--checkpoint", str(tmp_path / "nope"), "--buckets", "1x8"], tmp_path / "o")
    assert res.exit_code == 1 and "nope does not exist" in res.output
    assert "Traceback" not in res.output


def test_cli_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    res = _compile(["--preset", "tiny"], tmp_path / "file" / "out")
    assert res.exit_code == 1 and "cannot create output folder" in res.output
    if os.geteuid() == 0:
        target = "/sys/ascend_v4_out"                 # root bypasses mode bits; /sys refuses
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = str(ro / "out")
    res = CliRunner().invoke(main, ["compile", "--preset", "tiny", "--out", target])
    assert res.exit_code == 1 and "cannot write output folder" in res.output


def test_cli_non_empty_output_and_bad_format(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = _compile(["--preset", "tiny"], out)
    assert res.exit_code == 1 and "not empty" in res.output and (out / "keep.txt").exists()
    res = _compile(["--preset", "tiny", "--format", "onnx,tflite"], tmp_path / "p")
    assert res.exit_code == 1 and "unknown format tflite" in res.output


def test_interrupted_compile_leaves_no_folder(tmp_path, monkeypatch):
    import graph_compile.compiler as compiler

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(compiler, "compile_graph", boom)
    with pytest.raises(KeyboardInterrupt):
        compiler.compile_model(str(tmp_path / "o"), "1x8", preset="tiny", log=lambda m: None)
    assert os.listdir(tmp_path) == []


def test_cli_parity_errors(artifact, tmp_path):
    folder, _, _ = artifact
    res = CliRunner().invoke(main, ["parity", folder, "--bucket", "2x16"])
    assert res.exit_code == 1 and "unknown bucket '2x16'" in res.output
    res = CliRunner().invoke(main, ["parity", str(tmp_path)])
    assert res.exit_code == 1 and "no manifest.json" in res.output
    res = CliRunner().invoke(main, ["parity", folder, "--steps", "500"])
    assert res.exit_code == 1 and "max_seq_len" in res.output


def test_mindir_parameters_are_the_checkpoint_bytes(artifact):
    """weight_storage 'checkpoint': the MindIR parameters are the stored arrays (FP8 / FP4 codes and
    ue8m0 scale bytes as uint8, the checkpoint's bytes; bf16 as bf16 or its uint16 bits), and the
    parameter bytes are within 10% of the checkpoint bytes of the tensors the graph holds."""
    import ml_dtypes
    from ascend_v4.checkpoint import open_checkpoint
    from graph_compile.mindir import read_mindir, short_name
    folder, manifest, _ = artifact
    ckpt = open_checkpoint(os.path.join(folder, "checkpoint"))
    g = read_mindir(os.path.join(folder, manifest["graphs"]["decode_b1"]["mindir"]))
    params = {short_name(k).replace(".inner.", ".").removeprefix("model."): v for k, v in g.params.items()}
    kinds = {}
    for name, kind in ckpt.formats.items():
        if name not in params:
            continue
        kinds[kind] = kinds.get(kind, set()) | {params[name].dtype}
        if kind == "fp8":
            np.testing.assert_array_equal(params[name], np.asarray(ckpt.raw(name)).view(np.uint8))
    assert kinds["fp8"] == {np.dtype(np.uint8)}
    assert kinds["bf16"] <= {np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16),       # uint16: gathered bits
                             np.dtype(np.float64)}                                 # norms: compute dtype
    experts = params["layers.2.ffn.experts.w2.weight"]                                # packed FP4 [E, out, in/2]
    assert experts.dtype == np.uint8 and experts.shape[-1] * 2 == manifest["config"]["moe_inter_dim"]
    np.testing.assert_array_equal(experts[5], np.asarray(ckpt.raw("layers.2.ffn.experts.5.w2.weight")).view(np.uint8))
    assert params["layers.2.ffn.experts.w2.scale"].dtype == np.uint8
    assert params["embed.weight"].dtype == np.uint16                                  # gathered bf16: bits
    for entry in manifest["graphs"].values():
        assert entry["mindir_bytes"] == os.path.getsize(os.path.join(folder, entry["mindir"]))
    # the checkpoint tensors the graphs hold (all but the MTP layer's); float64 parameters are the
    # fp32 tensors and norms in the compute dtype, counted at float32 width
    in_graph = sum(np.asarray(ckpt.raw(n)).nbytes for n in ckpt.schema if not n.startswith("mtp."))
    as_f32 = sum(v.nbytes // (2 if v.dtype == np.float64 else 1) for v in g.params.values())
    assert abs(as_f32 / in_graph - 1) <= 0.10, (as_f32, in_graph)
    assert sum(v.nbytes for v in g.params.values() if v.dtype == np.float64) < 0.25 * in_graph
