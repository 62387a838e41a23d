"""Engram conditional memory (V4_SPEC 7): host hashing, the graph module and the whole model against
the independent oracle (ascend_v4/oracle/engram.py), tables in host memory vs memory-mapped, chunking,
and the errors a user can cause (config keys, table files).

One tiny-engram checkpoint and one float64 model (extend bucket 16 + decode: two compiles) serve the
file; the disk-backed run swaps the model's tables for memory-mapped ones (the graphs are the same).
"""
import os
import shutil

import numpy as np
import pytest

from ascend_v4 import engram as E
from ascend_v4.config import ConfigError, from_dict, load_config
from ascend_v4.oracle import dequantize, engram as oracle_engram, forward_all, precision

REL_TOL = 1e-9           # float64 on both sides (as tests/test_model_oracle.py)


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    path = write_random_checkpoint(load_config("tiny-engram"), str(tmp_path_factory.mktemp("eng") / "ckpt"),
                                   seed=11)
    return open_checkpoint(path, overrides={"compute_dtype": "float64"})


@pytest.fixture(scope="module")
def model(ckpt):
    from ascend_v4.api import build_model
    return build_model(ckpt)


@pytest.fixture(scope="module")
def oracle_weights(ckpt, model):
    with precision("float64"):
        W = dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    return oracle_engram.attach(W, ckpt.config, ckpt.folder, model.engram.cmap)


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ({"engram_layer_ids": [1, 7]}, "engram_layer_ids"),
    ({"engram_layer_ids": [1, 1]}, "engram_layer_ids"),
    ({"engram_layer_ids": 1}, "engram_layer_ids"),
    ({"engram_max_ngram_size": 1}, "engram_max_ngram_size"),
    ({"engram_head_dim": 0}, "engram_head_dim"),
    ({"engram_n_heads": 2.5}, "engram_n_heads"),
    ({"engram_pad_token_id": 512}, "engram_pad_token_id"),
    ({"engram_compressed_vocab_size": 600}, "engram_compressed_vocab_size"),
    ({"engram": {"layers": [1]}}, "unknown config key.*engram"),
])
def test_config_errors_name_the_key(override, key):
    raw = load_config("tiny-engram").to_dict()
    with pytest.raises(ConfigError, match=key):
        from_dict({**raw, **override})


def test_compressed_map_identity_and_size_check(tmp_path, ckpt):
    cfg = ckpt.config
    assert np.array_equal(E.compressed_map(cfg, str(tmp_path)), np.arange(cfg.vocab_size))
    cmap = E.compressed_map(cfg, ckpt.folder)            # the checkpoint's tokenizer.json
    assert cmap.max() + 1 < cfg.vocab_size and cmap[0] == 0
    with pytest.raises(ConfigError, match="engram_compressed_vocab_size is 7"):
        E.compressed_map(cfg.replace(engram_compressed_vocab_size=7), ckpt.folder)


# ---- hashing --------------------------------------------------------------------------------
def test_geometry_and_multipliers_match_oracle():
    cfg = load_config("tiny-engram")
    geo = E.geometry(cfg)
    assert list(geo.primes) == oracle_engram.table_sizes(cfg) == [1009, 1013, 1019, 1021]
    for layer in (0, 1, 14):
        m = E.multipliers(layer, 4)
        assert [int(x) for x in m] == oracle_engram.layer_multipliers(layer, 4)
        assert all(int(x) & 1 for x in m)
    assert not np.array_equal(E.multipliers(1, 4), E.multipliers(2, 4))


@pytest.mark.parametrize("chunks", [[37], [16, 5, 16], [1] * 6 + [31]])
def test_hashing_matches_oracle_across_chunks(chunks):
    cfg = load_config("tiny-engram").replace(engram_max_ngram_size=4, engram_pad_token_id=3)
    geo = E.geometry(cfg)
    rng = np.random.default_rng(5)
    cmap = rng.integers(0, 300, cfg.vocab_size)              # a many-to-one compressed-id map
    ids = rng.integers(0, cfg.vocab_size, (2, sum(chunks))).astype(np.int32)
    ids[0, :5] = ids[0, 5:10]                                # repeated n-grams hash alike
    for layer in geo.layer_ids:
        history, got, at = np.full((2, 3), 3, np.int32), [], 0
        for c in chunks:
            padded = np.zeros((2, 16 if c < 16 else c), np.int32)   # bucket padding after c tokens
            padded[:, :c] = ids[:, at:at + c]
            got.append(E.table_rows(geo, layer, cmap, history, padded)[:, :c])
            history = E.next_history(history, padded, np.array([c, c]))
            at += c
        expected = oracle_engram.hash_rows(cfg, layer, cmap, ids)
        assert np.array_equal(np.concatenate(got, 1), expected)
    assert np.array_equal(history, ids[:, -3:])


# ---- the graph module and the whole model ---------------------------------------------------
def test_gate_and_value_match_oracle(model, oracle_weights):
    """One Engram block on given streams: the cell (GRAPH_MODE, float64) vs the oracle."""
    from mindspore import Tensor
    cfg, block = model.cfg, model.transformer.layers[1]
    rng = np.random.default_rng(2)
    ids = rng.integers(0, cfg.vocab_size, (1, 9)).astype(np.int32)
    X = rng.standard_normal((1, 9, cfg.hc_mult, cfg.dim))
    rows = model.engram.rows(model.engram.initial_history(1), ids)[:, :, 0]
    got = block.engram(Tensor(X), Tensor(rows)).asnumpy()
    with precision("float64"):
        expected = oracle_engram.engram_layer(cfg, oracle_weights, 1, X, ids)
    assert rel_err(got - X, expected - X) <= 1e-12


def test_writer_keeps_the_other_weights(ckpt, tmp_path):
    """tiny-engram = tiny + Engram: with one seed every other tensor is tiny's (the bench's off run)."""
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    plain = open_checkpoint(write_random_checkpoint(ckpt.config.replace(engram_layer_ids=[]),
                                                    str(tmp_path / "plain"), seed=11))
    assert set(plain.schema) == {n for n in ckpt.schema if ".engram." not in n}
    for name in ("layers.3.attn.wq_b.weight", "layers.2.ffn.experts.5.w1.weight", "head.weight"):
        assert np.array_equal(np.asarray(plain.raw(name)), np.asarray(ckpt.raw(name)))


def test_cell_paths_equal_schema(model, ckpt):
    assert set(model.transformer.checkpoint_weights()) == set(ckpt.formats)
    assert {f"layers.{i}.engram.key_proj.weight" for i in (1, 2)} <= set(ckpt.formats)


def _run(model, ids, prompt_len, split=None):
    """Prefill rows 0 and 1 (optionally in pieces), then teacher-forced decode -> logits per step."""
    model.reset()
    out = []
    for r in range(ids.shape[0]):
        if split:
            at = 0
            for c in split:
                last = model.extend(r, ids[r, at:at + c], at)
                at += c
        else:
            last = model.prefill(ids[r, :prompt_len], r)
        out.append(last)
    steps = [np.stack(out)]
    for pos in range(prompt_len, ids.shape[1] - 1):
        tok = ids[:, pos]
        positions = np.full(2, pos)
        model.prefetch(tok, positions)
        steps.append(model.decode(tok, positions))
    return steps, model.state_arrays()


PROMPT, TOTAL = 20, 25


def test_prefill_and_decode_match_oracle(model, oracle_weights):
    cfg = model.cfg
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, TOTAL))
    with precision("float64"):
        expected, _ = forward_all(cfg, oracle_weights, ids)
    steps, state = _run(model, ids, PROMPT)
    for k, logits in enumerate(steps):
        ref = expected[:, PROMPT - 1 + k]
        assert rel_err(logits, ref) <= REL_TOL, f"position {PROMPT - 1 + k}"
        assert np.array_equal(logits.argmax(-1), ref.argmax(-1))
    assert np.array_equal(state["engram.history"], ids[:, TOTAL - 3:TOTAL - 1])
    # without Engram the same weights give other logits: the module is live
    W = {k: v for k, v in oracle_weights.items()}
    with precision("float64"):
        plain, _ = forward_all(cfg.replace(engram_layer_ids=[]), W, ids[:, :PROMPT])
    assert rel_err(plain[:, -1], expected[:, PROMPT - 1]) > 1e-3


def test_disk_table_equals_host_and_chunking(model, ckpt):
    ids = np.random.default_rng(4).integers(0, model.cfg.vocab_size, (2, TOTAL))
    host_steps, host_state = _run(model, ids, PROMPT)
    chunked, chunked_state = _run(model, ids, PROMPT, split=[5, 7, 8])
    for a, b in zip(host_steps, chunked):
        assert rel_err(a, b) <= 1e-12
    assert np.array_equal(host_state["engram.history"], chunked_state["engram.history"])
    host = model.engram
    disk = ckpt.engram_host("disk")
    assert all(t.on_disk for t in disk.tables) and not any(t.on_disk for t in host.tables)
    try:
        model.use_engram_tables(disk)
        disk_steps, disk_state = _run(model, ids, PROMPT)
        # every graph call took its rows once: 2 rows x 2 prefill chunks (16 + 4), then the decodes
        assert model.prefetcher.hits + model.prefetcher.misses == 2 * 2 + (TOTAL - 1 - PROMPT)
    finally:
        model.use_engram_tables(host)
    for a, b in zip(host_steps, disk_steps):
        assert np.array_equal(a, b)                          # bit for bit
    for name in host_state:
        assert np.array_equal(host_state[name], disk_state[name]), name


def test_step_matches_oracle(model, oracle_weights):
    """StepNet (MTP verification, the speculative engine): 2 tokens on row 0, 1 on row 1."""
    ids = np.random.default_rng(6).integers(0, model.cfg.vocab_size, (2, 12))
    with precision("float64"):
        expected, _ = forward_all(model.cfg, oracle_weights, ids)
    model.reset()
    for r in range(2):
        model.prefill(ids[r, :10], r)
    logits, _ = model.step(ids[:, 10:12], np.array([10, 10]), np.array([2, 1]))
    assert rel_err(logits[0], expected[0, 10:12]) <= REL_TOL
    assert rel_err(logits[1, 0], expected[1, 10]) <= REL_TOL
    assert np.array_equal(model.state_arrays()["engram.history"], [ids[0, 10:12], ids[1, 9:11]])


def test_generate_and_engine_agree_with_engram(model):
    """generate and the serving engine (continuous batching; the second request arrives while the
    first decodes) give the same greedy tokens on an Engram model."""
    from ascend_v4.engine import Engine, Request, SamplingParams
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    expected = [model.generate([p], max_new_tokens=4)[0] for p in prompts]
    engine = Engine(model)
    first = engine.submit(Request(prompts[0], SamplingParams(max_tokens=4)))
    engine.step()
    second = engine.submit(Request(prompts[1], SamplingParams(max_tokens=4)))
    while engine.has_work():
        engine.step()
    assert [first.output, second.output] == expected


# ---- bad table files -------------------------------------------------------------------------
def test_wrong_size_table_file_is_a_clear_error(ckpt, tmp_path):
    from ascend_v4.checkpoint import CheckpointError, open_checkpoint
    geo = E.geometry(ckpt.config)
    folder = tmp_path / "bad"
    shutil.copytree(ckpt.folder, folder)
    path = E.table_file(str(folder), 2)
    with open(path, "r+b") as fh:
        fh.truncate(geo.table_bytes - geo.row_bytes)
    with pytest.raises(ConfigError, match=rf"engram.layers.2.table.bin: .* {geo.table_bytes - geo.row_bytes} "
                                          rf"bytes; expected {geo.table_bytes}"):
        E.EngramTable.open(path, geo, "disk")
    with pytest.raises(CheckpointError, match=rf"engram.layers.2.table.bin: {geo.table_bytes - geo.row_bytes} bytes"):
        open_checkpoint(str(folder))
    os.remove(path)
    with pytest.raises(CheckpointError, match="engram.layers.2.table.bin: missing"):
        open_checkpoint(str(folder))
    with pytest.raises(ConfigError, match=r"uint8 \[4062, 33\]"):
        E.EngramTable(np.zeros((4062, 33), np.float32), geo)


def test_inspect_shows_table_sizes():
    from tools.cmd_inspect import render, report
    rep = report("tiny-engram")
    assert rep["engram"]["total_bytes"] == 2 * 4062 * 33 and rep["engram"]["table_rows"] == [1009, 1013, 1019, 1021]
    assert "engram tables" in render(rep) and report("tiny")["engram"] is None


def test_graph_export_refuses_engram(tmp_path):
    from graph_compile.compiler import CompileError, compile_model
    with pytest.raises(CompileError, match="Engram models"):
        compile_model(str(tmp_path / "out"), "1x16", "onnx", preset="tiny-engram", log=lambda *a: None)
