"""Checkpoint schema, random writer and validating loader (converted and HF-release layouts)."""
import json
import os
import time
import tracemalloc

import ml_dtypes
import numpy as np
import pytest

from ascend_v4 import quant
from ascend_v4.checkpoint import (CheckpointError, checkpoint_schema, converted_to_hf,
                                  hf_to_converted, open_checkpoint, write_random_checkpoint)
from ascend_v4.config import load_config
from ascend_v4.safetensors_io import SafeFile, save


@pytest.fixture(scope="module")
def tiny():
    # head_dim 192 (not the preset's 512): wkv's 192 output rows leave a partial 128-row scale block
    return load_config("tiny", head_dim=192)


@pytest.fixture(scope="module")
def fp8_dir(tiny, tmp_path_factory):
    return write_random_checkpoint(tiny, str(tmp_path_factory.mktemp("ck") / "fp8"))


@pytest.fixture(scope="module")
def bf16_dir(tiny, tmp_path_factory):
    return write_random_checkpoint(tiny, str(tmp_path_factory.mktemp("ck") / "bf16"), "bf16")


def spec(schema, name):
    s = schema[name]
    return s.dtype, s.shape


def test_schema_matches_reference_module_tree(tiny):
    # tiny: dim 128, q_lora 128, 4 heads x 192, o_groups 2 x o_lora 64, 8 experts (inter 128),
    # index 8 heads x 128, ratios [0, 4, 128, 4 | mtp 0], 1 hash layer, vocab 512, hc 4
    s = checkpoint_schema(tiny, "fp8")
    assert spec(s, "embed.weight") == ("BF16", (512, 128))
    assert spec(s, "head.weight") == ("BF16", (512, 128))
    assert spec(s, "hc_head_fn") == ("F32", (4, 512))
    assert spec(s, "hc_head_scale") == ("F32", (1,))
    assert spec(s, "layers.0.hc_attn_fn") == ("F32", (24, 512))
    assert spec(s, "layers.0.hc_ffn_scale") == ("F32", (3,))
    assert spec(s, "layers.0.attn.wq_b.weight") == ("F8_E4M3", (768, 128))
    assert spec(s, "layers.0.attn.wq_b.scale") == ("F8_E8M0", (6, 1))
    assert spec(s, "layers.0.attn.wkv.scale") == ("F8_E8M0", (2, 1))          # 192 rows: partial
    assert spec(s, "layers.0.attn.wo_a.weight") == ("BF16", (128, 384))
    assert "layers.0.attn.wo_a.scale" not in s
    assert spec(s, "layers.0.attn.wo_b.weight") == ("F8_E4M3", (128, 128))
    assert spec(s, "layers.0.attn.attn_sink") == ("F32", (4,))
    assert spec(s, "layers.0.attn.q_norm.weight") == ("BF16", (128,))
    assert spec(s, "layers.0.ffn.gate.tid2eid") == ("I32", (512, 2))
    assert "layers.0.ffn.gate.bias" not in s and "layers.1.ffn.gate.tid2eid" not in s
    assert spec(s, "layers.1.ffn.gate.bias") == ("F32", (8,))
    assert spec(s, "layers.1.ffn.gate.weight") == ("BF16", (8, 128))
    assert spec(s, "layers.1.ffn.experts.7.w2.weight") == ("I8", (128, 64))
    assert spec(s, "layers.1.ffn.experts.7.w2.scale") == ("F8_E8M0", (128, 4))
    assert spec(s, "layers.1.ffn.shared_experts.w1.weight") == ("F8_E4M3", (128, 128))
    assert spec(s, "layers.1.attn.compressor.ape") == ("F32", (4, 384))        # overlap: 2 x 192
    assert spec(s, "layers.1.attn.compressor.wkv.weight") == ("BF16", (384, 128))
    assert spec(s, "layers.1.attn.compressor.norm.weight") == ("BF16", (192,))
    assert spec(s, "layers.1.attn.indexer.wq_b.weight") == ("F8_E4M3", (1024, 128))
    assert spec(s, "layers.1.attn.indexer.weights_proj.weight") == ("BF16", (8, 128))
    assert spec(s, "layers.1.attn.indexer.compressor.ape") == ("F32", (4, 256))
    assert spec(s, "layers.2.attn.compressor.ape") == ("F32", (128, 192))      # no overlap
    assert not any(k.startswith("layers.0.attn.compressor") or k.startswith("layers.2.attn.indexer")
                   for k in s)
    # MTP block: window-only, score-routed, own e/h projections and head mix, shares embed/head
    assert spec(s, "mtp.0.e_proj.weight") == ("F8_E4M3", (128, 128))
    assert spec(s, "mtp.0.hnorm.weight") == ("BF16", (128,))
    assert spec(s, "mtp.0.hc_head_base") == ("F32", (4,))
    assert spec(s, "mtp.0.ffn.gate.bias") == ("F32", (8,))
    assert not any(k.startswith(("mtp.0.embed", "mtp.0.head", "mtp.0.attn.compressor")) for k in s)
    b = checkpoint_schema(tiny, "bf16")
    assert not any(k.endswith(".scale") for k in b)
    assert spec(b, "layers.1.ffn.experts.7.w2.weight") == ("BF16", (128, 128))
    assert set(b) == {k for k in s if not k.endswith(".scale")}
    e8 = checkpoint_schema(tiny.replace(expert_dtype="fp8"), "fp8")
    assert spec(e8, "layers.1.ffn.experts.0.w1.scale") == ("F8_E8M0", (1, 1))


def test_write_is_fast_deterministic_and_sane(tiny, tmp_path):
    t0 = time.perf_counter()
    path = write_random_checkpoint(tiny, str(tmp_path / "a"), seed=3)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    ck = open_checkpoint(path)
    tensors = dict(ck.iter_dequantized())
    t_load = time.perf_counter() - t0
    assert t_write < 1.0 and t_load < 1.0, (t_write, t_load)
    assert sorted(os.listdir(path)) == ["config.json", "model0-mp1.safetensors", "tokenizer.json",
                                        "tokenizer_config.json"]      # tiny's vocab holds the built-in BPE
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]
    assert ck.config == tiny and ck.weight_format == "fp8" and ck.layout == "converted"
    for name, arr in tensors.items():
        assert np.isfinite(arr).all(), name
        assert type(arr) is np.ndarray and arr.flags.writeable, name      # not a file view
        assert arr.dtype == (np.int32 if ck.formats[name] == "int" else np.float32), name
    tid = tensors["layers.0.ffn.gate.tid2eid"]
    assert tid.dtype == np.int32 and tid.min() >= 0 and tid.max() < tiny.n_routed_experts
    assert (np.sort(tid, 1)[:, 1:] != np.sort(tid, 1)[:, :-1]).all()       # distinct per row
    assert abs(tensors["layers.1.attn_norm.weight"].mean() - 1.0) < 0.05
    sc = tensors["layers.1.hc_ffn_scale"]
    assert ((sc >= 0.5) & (sc <= 1.0)).all()
    # linears ~ N(0, 1/in): row norms ~ 1
    wq = tensors["layers.1.attn.wq_b.weight"]
    assert 0.8 < np.sqrt((wq ** 2).sum(1)).mean() < 1.2
    again = write_random_checkpoint(tiny, str(tmp_path / "b"), seed=3)
    other = write_random_checkpoint(tiny, str(tmp_path / "c"), seed=4)
    blob = lambda d: open(os.path.join(d, "model0-mp1.safetensors"), "rb").read()  # noqa: E731
    assert blob(path) == blob(again) and blob(path) != blob(other)


def test_fp8_fp4_tensors_are_block_quantised_draws(fp8_dir, bf16_dir):
    """Same seed: the FP8/FP4 checkpoint holds the quantised form of the bf16 one's draws."""
    q, b = open_checkpoint(fp8_dir), open_checkpoint(bf16_dir)
    assert b.weight_format == "bf16" and b.config.routed_expert_dtype == "bf16"
    for name in ("layers.1.attn.wq_b.weight", "layers.3.ffn.shared_experts.w2.weight",
                 "layers.2.ffn.experts.5.w1.weight", "layers.1.attn.wo_a.weight", "mtp.0.h_proj.weight"):
        x, y = q.dequantized(name), b.dequantized(name)
        err = np.linalg.norm(x - y) / np.linalg.norm(y)
        bound = 0.15 if q.formats[name] == "fp4" else 0.04    # e2m1 / e4m3 rms error of N(0,1)
        assert err < bound, (name, err)
        if q.formats[name] == "fp4":    # dequantised values sit on the grid: re-quantise exactly
            np.testing.assert_array_equal(quant.dequantize_fp4(*quant.quantize_fp4(x)), x)
        if q.formats[name] == "fp8":    # stored bytes are exactly quantize_fp8 of the dequantised
            w, s = quant.quantize_fp8(x)
            np.testing.assert_array_equal(q.raw(name).view(np.uint8), w.view(np.uint8))
    # wo_a went through FP8: its bf16 values re-quantise losslessly
    wo_a = q.dequantized("layers.1.attn.wo_a.weight")
    np.testing.assert_array_equal(quant.dequantize_fp8(*quant.quantize_fp8(wo_a)), wo_a)
    # identical non-quantised tensors (same draws, same storage)
    np.testing.assert_array_equal(q.dequantized("embed.weight"), b.dequantized("embed.weight"))


def test_mp_shards_split_like_converter_and_merge_back(tiny, tmp_path):
    cfg = tiny.replace(o_lora_rank=128)          # wo_b input 256: two 128-column scale blocks
    one = open_checkpoint(write_random_checkpoint(cfg, str(tmp_path / "mp1")))
    d2 = write_random_checkpoint(cfg, str(tmp_path / "mp2"), mp=2)
    r1 = SafeFile(os.path.join(d2, "model1-mp2.safetensors"))
    assert r1.info("layers.1.attn.wq_b.weight")[1] == (384, 128)
    assert r1.info("layers.1.attn.wq_b.scale")[1] == (3, 1)
    assert r1.info("layers.1.attn.wo_b.weight")[1] == (128, 128)
    assert r1.info("layers.1.attn.wo_b.scale")[1] == (1, 1)
    assert r1.info("embed.weight")[1] == (256, 128)
    assert r1.info("layers.1.attn.attn_sink")[1] == (2,)
    assert r1.info("layers.1.attn.indexer.weights_proj.weight")[1] == (4, 128)
    assert r1.info("layers.1.attn.wq_a.weight")[1] == (128, 128)              # replicated
    experts = {int(k.split(".")[4]) for k in r1.keys() if ".experts." in k}
    assert experts == {4, 5, 6, 7}
    two = open_checkpoint(d2)
    for name in one.formats:
        np.testing.assert_array_equal(np.asarray(two.raw(name)).view(np.uint8),
                                      np.asarray(one.raw(name)).view(np.uint8), err_msg=name)
    # tiny itself: wo_b has one 128-wide scale column, which cannot be split in two
    with pytest.raises(CheckpointError, match="wo_b"):
        write_random_checkpoint(tiny, str(tmp_path / "bad"), mp=2)
    with pytest.raises(CheckpointError, match="mp=3"):
        write_random_checkpoint(tiny, str(tmp_path / "bad"), mp=3)
    with pytest.raises(CheckpointError, match="weight_format must be one of fp8, bf16, got 'fp4'"):
        write_random_checkpoint(tiny, str(tmp_path / "bad"), "fp4")
    assert not os.path.exists(tmp_path / "bad")
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]
    os.remove(os.path.join(d2, "model1-mp2.safetensors"))
    with pytest.raises(CheckpointError, match="model1-mp2.safetensors"):
        open_checkpoint(d2)


def _rewrite(path, edit):
    f = SafeFile(path)
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    edit(tensors)
    del f
    save(tensors, path)


def test_one_error_lists_missing_unexpected_and_misshaped(tiny, tmp_path):
    d = write_random_checkpoint(tiny, str(tmp_path / "ck"))
    shard = os.path.join(d, "model0-mp1.safetensors")

    def edit(t):
        del t["layers.2.attn.compressor.ape"]
        t["layers.2.attn.indexer.wq_b.weight"] = np.zeros((4, 4), np.float32)
        t["layers.1.attn.attn_sink"] = np.zeros((5,), np.float32)
        t["mtp.0.e_proj.scale"] = t["mtp.0.e_proj.scale"].astype(np.float32)   # accepted alternative
    _rewrite(shard, edit)
    with pytest.raises(CheckpointError) as exc:
        open_checkpoint(d)
    msg = str(exc.value)
    assert "3 problem(s)" in msg
    assert "missing    layers.2.attn.compressor.ape: expected F32 [128, 192]" in msg
    assert "unexpected layers.2.attn.indexer.wq_b.weight: found F32 [4, 4]" in msg
    assert "mismatch   layers.1.attn.attn_sink: expected F32 [4], found F32 [5]" in msg


def test_truncated_file_and_other_config(tiny, fp8_dir, tmp_path):
    with pytest.raises(CheckpointError, match="(?s)for another model config.*vocab_size"):
        open_checkpoint(fp8_dir, cfg=tiny.replace(vocab_size=1024))
    # runtime options may differ: hints come from the requested config, overrides on top
    assert open_checkpoint(fp8_dir, cfg=tiny.replace(max_seq_len=512)).runtime.max_seq_len == 512
    ck = open_checkpoint(fp8_dir, overrides={"max_batch_size": 3, "compute_dtype": "float64"})
    assert (ck.runtime.max_batch_size, ck.runtime.compute_dtype, ck.runtime.max_seq_len) == (3, "float64", 256)
    assert ck.config == tiny                          # the model config does not carry them
    assert not hasattr(ck.config, "max_seq_len") and not hasattr(ck.config, "compute_dtype")
    with pytest.raises(CheckpointError, match="compute_dtype must be float32 or float64"):
        open_checkpoint(fp8_dir, overrides={"compute_dtype": "float16"})
    with pytest.raises(CheckpointError, match="cannot override dim"):
        open_checkpoint(fp8_dir, overrides={"dim": 256, "max_seq_len": 512})
    d = write_random_checkpoint(tiny, str(tmp_path / "ck"))
    cfg_path = os.path.join(d, "config.json")
    raw = json.load(open(cfg_path))
    json.dump({**raw, "n_routed_experts": 16}, open(cfg_path, "w"))
    with pytest.raises(CheckpointError, match="missing    layers.1.ffn.experts.15.w1.weight"):
        open_checkpoint(d)
    json.dump(raw, open(cfg_path, "w"))
    shard = os.path.join(d, "model0-mp1.safetensors")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as fh:
        fh.truncate(size - 1000)
    with pytest.raises(CheckpointError, match="model0-mp1.safetensors: truncated"):
        open_checkpoint(d)
    with pytest.raises(CheckpointError, match="no such"):
        open_checkpoint(str(tmp_path / "absent"))


def write_hf_fixture(ckpt_dir, out_dir, cfg):
    """HF-release layout from a converted checkpoint: HF names (inverse renames), FP8 wo_a with
    weight_scale_inv, MTP copies of embed/head, two shards + model.safetensors.index.json."""
    src = SafeFile(os.path.join(ckpt_dir, "model0-mp1.safetensors"))
    tensors = {}
    for name in src.keys():
        arr = np.array(src.get(name))
        if name.endswith("wo_a.weight"):
            w, s = quant.quantize_fp8(arr.astype(np.float32))
            tensors[converted_to_hf(name)] = w
            tensors[converted_to_hf(name[:-7] + ".scale")] = s
        else:
            tensors[converted_to_hf(name)] = arr
    tensors["model.mtp.0.embed_tokens.weight"] = tensors["model.embed_tokens.weight"]
    tensors["mtp.0.lm_head.weight"] = tensors["lm_head.weight"]
    os.makedirs(out_dir)
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, keys in halves.items():
        save({k: tensors[k] for k in keys}, os.path.join(out_dir, fname))
        weight_map.update({k: fname for k in keys})
    json.dump({"metadata": {}, "weight_map": weight_map},
              open(os.path.join(out_dir, "model.safetensors.index.json"), "w"))
    inverse = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
               "rope_head_dim": "qk_rope_head_dim", "moe_inter_dim": "moe_intermediate_size",
               "n_activated_experts": "num_experts_per_tok", "route_scale": "routed_scaling_factor",
               "score_func": "scoring_func", "n_hash_layers": "num_hash_layers",
               "n_mtp_layers": "num_nextn_predict_layers", "norm_eps": "rms_norm_eps",
               "window_size": "sliding_window"}
    hf_cfg = {inverse.get(k, k): v for k, v in cfg.to_dict().items()
              if k not in ("dtype", "scale_fmt", "rope_factor", "beta_fast", "beta_slow",
                           "original_seq_len")}
    hf_cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                                     "weight_block_size": [128, 128]}
    hf_cfg["rope_scaling"] = {"type": "yarn", "factor": cfg.rope_factor, "beta_fast": cfg.beta_fast,
                              "beta_slow": cfg.beta_slow,
                              "original_max_position_embeddings": cfg.original_seq_len}
    hf_cfg["torch_dtype"] = "bfloat16"
    json.dump(hf_cfg, open(os.path.join(out_dir, "config.json"), "w"))
    return names


def test_hf_release_layout_loads_identically(tiny, fp8_dir, tmp_path):
    assert hf_to_converted("model.layers.3.self_attn.q_b_proj.weight_scale_inv") == "layers.3.attn.wq_b.scale"
    assert hf_to_converted("model.layers.0.mlp.gate.e_score_correction_bias") == "layers.0.ffn.gate.bias"
    assert hf_to_converted("model.layers.0.post_attention_layernorm.weight") == "layers.0.ffn_norm.weight"
    assert hf_to_converted("lm_head.weight") == "head.weight"
    assert hf_to_converted("mtp.0.embed_tokens.weight") is None
    hf_dir = str(tmp_path / "hf")
    names = write_hf_fixture(fp8_dir, hf_dir, tiny)
    assert "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv" in names
    assert "model.layers.0.input_layernorm.weight" in names
    hf, conv = open_checkpoint(hf_dir), open_checkpoint(fp8_dir)
    assert hf.layout == "hf" and hf.config == tiny
    assert list(hf.formats) == list(conv.formats)
    n = 0
    for (na, a), (nb, b) in zip(hf.iter_dequantized(), conv.iter_dequantized()):
        assert na == nb
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b, err_msg=na)
        n += 1
    assert n == len(conv.formats)
    wo_a = hf.raw("layers.0.attn.wo_a.weight")
    assert wo_a.dtype == ml_dtypes.bfloat16 and wo_a.shape == (128, 384)
    # a tensor the index lists but its shard lacks -> named
    idx_path = os.path.join(hf_dir, "model.safetensors.index.json")
    idx = json.load(open(idx_path))
    idx["weight_map"]["model.layers.0.extra.weight"] = "model-00001-of-00002.safetensors"
    json.dump(idx, open(idx_path, "w"))
    with pytest.raises(CheckpointError, match="model.layers.0.extra.weight"):
        open_checkpoint(hf_dir)


def test_streaming_peak_memory_is_one_tensor_not_the_model(fp8_dir):
    ck = open_checkpoint(fp8_dir)
    full = sum(int(np.prod(s.shape)) * 4 * (2 if s.kind == "fp4" else 1)
               for s in ck.schema.values() if not s.is_scale)
    largest = max(int(np.prod(s.shape)) * 4 * (2 if s.kind == "fp4" else 1)
                  for s in ck.schema.values() if not s.is_scale)
    tracemalloc.start()
    for _name, arr in ck.iter_dequantized():
        del arr
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # a few temporaries of the largest tensor, far below one full float32 copy of the model
    assert peak < 6 * largest < full / 3, (peak, largest, full)


def test_safetensors_f4_dtype_reads_as_packed_int8(tmp_path):
    """A release shard stores FP4 experts as dtype F4 with the logical [out, in] shape."""
    import json
    import struct
    from ascend_v4.safetensors_io import SafeFile
    packed = np.arange(12, dtype=np.uint8).reshape(2, 6)          # logical e2m1 shape [2, 12]
    header = json.dumps({"w": {"dtype": "F4", "shape": [2, 12], "data_offsets": [0, 12]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "f4.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + packed.tobytes())
    f = SafeFile(str(path))
    assert f.info("w") == ("I8", (2, 6))
    np.testing.assert_array_equal(f.get("w").view(np.uint8), packed)
