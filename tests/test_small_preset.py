"""The `small` preset (issue 9: a real-proportion V4 a 24 GiB CPU machine can load) and the
streaming random-checkpoint writer. Fast: nothing here builds or writes the small model."""
import hashlib
import os

import numpy as np
import pytest

from ascend_v4.checkpoint import (CheckpointError, checkpoint_schema, random_tensors,
                                  write_random_checkpoint)
from ascend_v4.checkpoint import writer
from ascend_v4.config import load_config
from ascend_v4.params import count_params, weight_memory
from ascend_v4.safetensors_io import SafeFile, StreamWriter, save


def test_small_preset_has_v4_structure_at_real_proportions():
    cfg = load_config("small")
    n = count_params(cfg)
    assert 2e9 <= n["total"] <= 6e9, n["total"]
    assert n["active"] < n["total"] / 4 and n["mtp"] > 0
    assert 1024 <= cfg.dim <= 2048 and cfg.moe_inter_dim == cfg.dim // 2
    assert 64 <= cfg.n_routed_experts <= 256 and cfg.n_activated_experts == 6 and cfg.n_shared_experts == 1
    assert cfg.n_hash_layers == 3 and cfg.n_mtp_layers == 1
    assert (cfg.head_dim, cfg.rope_head_dim, cfg.window_size, cfg.vocab_size) == (512, 64, 128, 129280)
    main = cfg.compress_ratios[:cfg.n_layers]
    assert main[:2] == (0, 0) and set(main[2:]) == {4, 128} and cfg.compress_ratios[-1] == 0
    assert (cfg.dtype, cfg.expert_dtype, cfg.scale_fmt) == ("fp8", "fp4", "ue8m0")
    # 2.5 GB on disk: FP4 experts, FP8 linears (the checkpoint must stay near 3 GB or below)
    mem = weight_memory(cfg)
    assert mem["total"] < 3e9 and mem["fp4"] > mem["bf16"] > mem["fp8"] > 0
    schema = checkpoint_schema(cfg)
    assert schema["layers.5.ffn.experts.127.w1.weight"].dtype == "I8"
    assert schema["layers.5.attn.wq_b.weight"].dtype == "F8_E4M3"
    assert "layers.2.ffn.gate.tid2eid" in schema and "layers.3.ffn.gate.bias" in schema
    assert "layers.2.attn.indexer.wq_b.weight" in schema and "layers.3.attn.indexer.wq_b.weight" not in schema


# sha256 of model*.safetensors written by the writer before it streamed (the in-memory
# implementation of commit d2dfcd1: every shard built as a dict, then safetensors_io.save);
# the streaming writer must reproduce these bytes exactly.
OLD_WRITER = {
    ("tiny", (), "fp8", 1, 0): ["8147e8d1d18dac2e827ed33a57ec0d1f1b5aa8dc008d52ccd5472b14320dbc87"],
    ("tiny", (), "fp8", 1, 3): ["6c82e97b26b4bc2d2da2fb64c8f30242b5240f7b83575c5eb3791bb469a61d1c"],
    ("tiny", (), "bf16", 1, 0): ["5c6c173670485967166efe9b94d5405cb05c092c1da5181a067bdd12f527718a"],
    ("tiny", (), "bf16", 2, 0): ["08eab74343e3e51cc46119dd6d4ffe1ea2786950198815c7faaeb93da2dd7449",
                                 "aaa4f09f89e4521870b0281dfc90020daa6ec9133a2d3863e58263f4b818ced4"],
    ("tiny", (("o_lora_rank", 128),), "fp8", 2, 0): [
        "993d2129c144d79254d2b2b033cec5dab4afd6eeccaa9e214e5fdeca0757e580",
        "13e01006100e77e278dc7465917263ff36ff621cdf45330eefe085f66a42278a"],
    ("tiny", (("head_dim", 192),), "fp8", 1, 0): [
        "1713d772092f8d2d1488c916982ff4a8b3d78df0feb23cf76d9b82b57e896350"],
}


def _hashes(path):
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    return [hashlib.sha256(open(os.path.join(path, f), "rb").read()).hexdigest() for f in files]


@pytest.mark.parametrize("chunk", [None, 1000])       # 1000: embed/head (and bf16 linears) in row blocks
@pytest.mark.parametrize("case", list(OLD_WRITER))
def test_streaming_writer_bytes_equal_the_old_writer(case, chunk, tmp_path, monkeypatch):
    preset, overrides, fmt, mp, seed = case
    if chunk:
        monkeypatch.setattr(writer, "CHUNK_ELEMENTS", chunk)
    path = write_random_checkpoint(load_config(preset, **dict(overrides)), str(tmp_path / "ck"),
                                   weight_format=fmt, seed=seed, mp=mp)
    assert _hashes(path) == OLD_WRITER[case]


def test_written_tensors_are_random_tensors(tmp_path):
    """Independent of the recorded hashes: every stored tensor reads back as random_tensors'."""
    cfg = load_config("tiny", o_lora_rank=128)
    path = write_random_checkpoint(cfg, str(tmp_path / "ck"), mp=2)
    files = [SafeFile(os.path.join(path, f"model{r}-mp2.safetensors")) for r in range(2)]
    n = 0
    for name, arr in random_tensors(cfg, "fp8", 0):
        parts = [f.get(name) for f in files if name in f.header]
        if len(parts) == 2 and parts[0].shape != arr.shape:        # split tensor: merge back
            axis = 1 if ".wo_b." in name else 0
            parts = [np.concatenate(parts, axis)]
        assert parts, name
        for p in parts:
            assert p.dtype == arr.dtype and p.shape == arr.shape, name
            assert p.tobytes() == arr.tobytes(), name
        n += 1
    assert n == sum(1 for _ in random_tensors(cfg, "fp8", 0)) == len(checkpoint_schema(cfg))


def test_writer_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    cfg = load_config("tiny")
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) > 20:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    real = StreamWriter.write
    monkeypatch.setattr(StreamWriter, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_random_checkpoint(cfg, str(tmp_path / "ck"))
    assert os.listdir(tmp_path) == []
    # a split the converter cannot do is refused before any tensor is drawn
    monkeypatch.setattr(StreamWriter, "write", real)
    with pytest.raises(CheckpointError, match="wo_b"):
        write_random_checkpoint(cfg, str(tmp_path / "bad"), mp=2)
    assert os.listdir(tmp_path) == []


def test_stream_writer_checks_tensors_and_equals_save(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"b": rng.standard_normal((5, 3)).astype(np.float32), "a": np.arange(4, dtype=np.int32)}
    save(tensors, str(tmp_path / "ref.safetensors"), metadata={"k": "v"})
    layout = {"a": ("I32", (4,)), "b": ("F32", (5, 3))}
    with StreamWriter(str(tmp_path / "s.safetensors"), layout, {"k": "v"}) as out:
        out.write("b", tensors["b"][2:], row=2)
        out.write("a", tensors["a"])
        out.write("b", tensors["b"][:2])
    assert open(tmp_path / "s.safetensors", "rb").read() == open(tmp_path / "ref.safetensors", "rb").read()
    out = StreamWriter(str(tmp_path / "x.safetensors"), layout)
    with pytest.raises(ValueError, match="F32"):
        out.write("b", tensors["b"].astype(np.float64))
    out.write("a", tensors["a"])
    with pytest.raises(ValueError, match="not written in full: b"):
        out.close()
    assert sorted(os.listdir(tmp_path)) == ["ref.safetensors", "s.safetensors"]
