"""The engine API (`Model.prefill / extend / decode`) on tiny, FP8 linears + FP4 experts.

References are independent of the engine: the numpy oracle in float64 on each row's whole sequence
(forward_all gives the logits of every position), and the same sequence run alone.

* float64: rows at different lengths decode together, one row idle for some steps, a slot refilled
  with a new prompt while the other continues; every row's logits at every step within 1e-9
  (relative, ||got - oracle|| / ||oracle||) and the same top-1. An idle row's state is bit-identical.
  The steps after the first call the compiled graph directly (ascend_v4/graph_call.py).
* A prompt prefilled in chunks of 1, 7, 64 or all at once: the same logits and the same state
  (every dense slot of the row within 1e-9 of its scale, -inf where the one-shot run has -inf).
* A reference-style prefill of 2 rows (one [2, bucket] call per chunk) against each row alone and
  the oracle, 1e-9; the chunk plan's cost against the greedy plan's.
* float32: batched rows vs the same rows alone (measured max relative difference 0: each row's
  arithmetic does not depend on the others; tolerance 1e-5).
"""
import numpy as np
import pytest

from ascend_v4.api import InputError, build_model
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
from ascend_v4.config import load_config
from ascend_v4.oracle import dequantize, forward_all, precision

REL = 1e-9


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("engine") / "ckpt"),
                                   weight_format="fp8", seed=5)


@pytest.fixture(scope="module")
def engine(checkpoint):
    ckpt = open_checkpoint(checkpoint, overrides={"compute_dtype": "float64"})
    with precision("float64"):
        W = dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    return build_model(ckpt, prefill_chunk=64), ckpt.config, W


def oracle_logits(cfg, W, seq):
    with precision("float64"):
        return forward_all(cfg, W, np.asarray(seq)[None])[0][0]          # [len, vocab]


def check(got, ref, what):
    assert rel_err(got, ref) <= REL, f"{what}: relative error {rel_err(got, ref):.2e}"
    assert got.argmax() == ref.argmax(), f"{what}: top-1 differs"


def test_rows_at_mixed_positions_match_the_oracle(engine):
    model, cfg, W = engine
    model.reset()
    rng = np.random.default_rng(0)
    # row 0: 21-token prompt (ratio-4 phase 1), row 1: 30 tokens (phase 2); both wrap the 16-slot
    # window at different steps; row 0 idles for steps 5-7; then row 0 is refilled with a new
    # 9-token prompt while row 1 keeps decoding
    seqs = [list(rng.integers(0, cfg.vocab_size, 21 + 20)), list(rng.integers(0, cfg.vocab_size, 30 + 20))]
    refill = list(rng.integers(0, cfg.vocab_size, 9 + 6))
    lengths = [21, 30]
    for r in range(2):
        check(model.prefill(seqs[r][:lengths[r]], slot=r), oracle_logits(cfg, W, seqs[r][:lengths[r]])[-1],
              f"row {r} prefill")
    ref = [oracle_logits(cfg, W, s) for s in seqs]
    ref_refill = oracle_logits(cfg, W, refill)
    refilled = False
    for step in range(14):
        if step == 9:                                   # refill slot 0 while slot 1 continues
            check(model.prefill(refill[:9], slot=0), ref_refill[8], "slot 0 refill prefill")
            refilled, lengths[0] = True, 9
        idle0 = 5 <= step <= 7
        toks = np.array([(refill if refilled else seqs[0])[lengths[0]], seqs[1][lengths[1]]])
        pos = np.array([-1 if idle0 else lengths[0], lengths[1]])
        before = model.state_arrays()
        logits = model.decode(toks, pos)
        if idle0:
            after = model.state_arrays()
            for slot in model.spec:
                if slot.layout == "dense":
                    np.testing.assert_array_equal(after[slot.name][0], before[slot.name][0], err_msg=slot.name)
        else:
            want = ref_refill if refilled else ref[0]
            check(logits[0], want[lengths[0]], f"step {step} row 0 at position {lengths[0]}")
            lengths[0] += 1
        check(logits[1], ref[1][lengths[1]], f"step {step} row 1 at position {lengths[1]}")
        lengths[1] += 1
    assert list(model.lengths) == lengths
    # every step after the compiling one ran past Cell.__call__ (ascend_v4/graph_call.py)
    assert model._decode.direct_calls >= 13


def test_extend_all_logits_match_the_oracle(engine):
    """extend(slot, n tokens, start) with all_logits (what MTP verification needs): [n, vocab]."""
    model, cfg, W = engine
    model.reset()
    seq = list(np.random.default_rng(3).integers(0, cfg.vocab_size, 30))
    model.prefill(seq[:25], slot=1)
    got = model.extend(1, seq[25:], 25, all_logits=True)
    ref = oracle_logits(cfg, W, seq)
    assert got.shape == (5, cfg.vocab_size)
    for k in range(5):
        check(got[k], ref[25 + k], f"extend token {k}")


def _dense_row(model, slot):
    return {s.name: model.state_arrays()[s.name][slot] for s in model.spec if s.layout == "dense"}


def test_chunked_prefill_equals_one_shot(engine):
    model, cfg, W = engine
    prompt = list(np.random.default_rng(4).integers(0, cfg.vocab_size, 135))   # HCA emits at 127
    runs = {}
    try:
        for chunk in (135, 64, 7, 1):          # chunks of 64: 64 + 64 + 7 (the 7 in the 7-bucket)
            model.set_prefill_chunk(chunk, buckets=[7, 64] if chunk == 64 else None)
            model.reset()
            runs[chunk] = model.prefill(prompt, slot=1), _dense_row(model, 1)
    finally:
        model.set_prefill_chunk(64)
    logits, state = runs[135]
    check(logits, oracle_logits(cfg, W, prompt)[-1], "one-shot prefill")
    assert np.abs(state["layers.2.attn.entries"][0]).max() > 0          # the HCA entry is there
    for chunk in (64, 7, 1):
        got_logits, got_state = runs[chunk]
        check(got_logits, logits, f"chunks of {chunk}")
        _same_state(got_state, state, f"chunks of {chunk}")


def _same_state(got, ref, what):
    """Dense slot rows equal within REL of their scale, -inf where ref has -inf."""
    for name, r in ref.items():
        g, inf = got[name], np.isinf(r)
        np.testing.assert_array_equal(np.isinf(g), inf, err_msg=f"{what}: {name}")
        scale = max(np.abs(r[~inf]).max(initial=0.0), 1e-300)
        assert np.abs(g[~inf] - r[~inf]).max(initial=0.0) <= REL * scale, f"{what}: {name}"


def test_reference_style_prefill_runs_the_rows_together(engine):
    """model(ids, 0) with 2 rows prefills them in one [2, bucket] call per chunk (75 tokens: 64 +
    11 in the 16-bucket): each row's logits match the oracle on that row alone, and each row's state
    equals the row prefilled by itself, within 1e-9 (float64)."""
    model, cfg, W = engine
    ids = np.random.default_rng(6).integers(0, cfg.vocab_size, (2, 75))
    model.reset()
    together = model(ids, 0)
    rows = [_dense_row(model, r) for r in range(2)]
    model.reset()
    for r in range(2):
        check(together[r], oracle_logits(cfg, W, ids[r])[-1], f"row {r} prefilled with the other")
        alone = model.extend(r, ids[r], 0)
        check(together[r], alone, f"row {r}: together vs alone")
        _same_state(rows[r], _dense_row(model, r), f"row {r}: together vs alone")


@pytest.mark.parametrize("nb", [1, 3])
def test_write_entries_puts_complete_entries_only(nb):
    """compressor.write_entries (nb = 1: the decode scatter; 3: the general select) against numpy:
    complete entries land at first_block + j, incomplete ones and blocks past the cache are
    dropped, every other row is untouched, bit for bit."""
    import mindspore as ms
    from mindspore import Tensor
    from ascend_v4.compressor import write_entries
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(8)
    b, N, d = 4, 6, 5
    cache = rng.normal(size=(b, N, d))
    entries = rng.normal(size=(b, nb, d))
    complete = np.array([[True] * nb, [False] * nb, [True] * nb, [True, False, True][:nb]])
    # row 2 starts at the last entry (nb 3: the rest past the end); row 3 past the end (nb 1) or
    # with an incomplete entry between complete ones (nb 3)
    first = np.array([2, 3, N - 1, 0 if nb > 1 else N], np.int32)
    got = write_entries(Tensor(cache), Tensor(entries), Tensor(complete), Tensor(first)).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    want = cache.copy()
    for i in range(b):
        for j in range(nb):
            if complete[i, j] and first[i] + j < N:
                want[i, first[i] + j] = entries[i, j]
    np.testing.assert_array_equal(got, want)


def test_chunk_plan_costs_least_and_pads_only_the_last_call():
    from ascend_v4.api import CALL_OVERHEAD_TOKENS, chunk_plan, extend_buckets
    buckets = extend_buckets(512)                                       # 16, 64, 256, 512
    assert chunk_plan(300, buckets) == [(256, 256), (44, 64)]
    for n in list(range(1, 700)) + [1100, 5000]:
        plan = chunk_plan(n, buckets)
        assert sum(c for c, _ in plan) == n and all(b in buckets and 0 < c <= b for c, b in plan)
        assert all(c == b for c, b in plan[:-1]), f"{n}: only the last call is padded: {plan}"
        if len(plan) > 1:                                   # resumed at its first chunk end: the same rest
            assert chunk_plan(n - plan[0][0], buckets) == plan[1:], f"{n}: {plan}"
        greedy, left = [], n                                           # largest fitting bucket first
        while left > 0:
            b = max([b for b in buckets if b <= left], default=buckets[0])
            greedy.append(b)
            left -= min(b, left)
        cost = sum(b + CALL_OVERHEAD_TOKENS for _, b in plan)
        assert cost <= sum(b + CALL_OVERHEAD_TOKENS for b in greedy), f"{n}: {plan} costs more than {greedy}"


def test_bad_engine_input_names_the_slot(engine):
    model, cfg, _ = engine
    model.reset()
    with pytest.raises(InputError, match="slot 2 is out of range"):
        model.prefill([1, 2, 3], slot=2)
    with pytest.raises(InputError, match="slot 0 holds no sequence"):
        model.decode(np.array([5, 0]), np.array([3, -1]))
    with pytest.raises(InputError, match="slot 1 holds no sequence"):
        model.extend(1, [4, 5], 3)
    model.prefill([1, 2, 3], slot=0)
    with pytest.raises(InputError, match="slot 0: start_pos 5 does not continue its sequence"):
        model.extend(0, [4], 5)
    with pytest.raises(InputError, match="slot 0: position 4 does not continue|slot 0: start_pos 4"):
        model.decode(np.array([5, 0]), np.array([4, -1]))
    with pytest.raises(InputError, match=f"slot 0: 300 tokens from position 3 run past max_seq_len {model.max_seq_len}"):
        model.extend(0, [1] * 300, 3)
    with pytest.raises(InputError, match="slot 0: token id 999"):
        model.decode(np.array([999, 0]), np.array([3, -1]))
    with pytest.raises(InputError, match=r"shape \[2\]"):
        model.decode(np.array([5]), np.array([3]))
    assert list(model.lengths) == [3, -1]                # nothing above touched the state


def test_float32_batched_rows_equal_solo_rows(checkpoint):
    from tools.bench.engine import batched_and_solo
    model = build_model(open_checkpoint(checkpoint), prefill_chunk=64)
    rng = np.random.default_rng(9)
    seqs = [list(rng.integers(0, 512, 19 + 8)), list(rng.integers(0, 512, 26 + 8))]
    batched, solo = batched_and_solo(model, seqs, 8)
    for r in range(2):
        got = batched[r]
        err = np.abs(got - solo[r]).max() / np.abs(solo[r]).max()
        assert err <= 1e-5, f"row {r}: batched vs solo {err:.2e}"
        np.testing.assert_array_equal(got.argmax(-1), solo[r].argmax(-1))


def test_state_spec_names_layouts_and_graph_io():
    """One spec owns the state: with and without custom_ops the slots have the same names, the kernel
    path turns exactly the window and entry slots into MODEL1 page pools, and graph I/O names and
    initial arrays derive from the spec."""
    from ascend_v4.model import Transformer
    from ascend_v4.runtime import RuntimeConfig
    from graph_compile.capture import io_names
    cfg = load_config("tiny")
    specs = {c: Transformer.spec_for(cfg, RuntimeConfig.for_model(cfg, custom_ops=c)) for c in (False, True)}
    assert specs[False].names == specs[True].names
    assert specs[False].names[:4] == ["layers.0.attn.window", "layers.1.attn.window",
                                      "layers.1.attn.compressor.kv", "layers.1.attn.compressor.score"]
    for dense, paged in zip(specs[False], specs[True]):
        kind = dense.name.rsplit(".", 1)[1]
        assert paged.layout == ("model1_pages" if kind in ("window", "entries") and ".indexer." not in dense.name
                                else "dense"), dense.name
        assert dense.layout == "dense" and dense.initial(2).shape == dense.batch_shape(2)
        if paged.layout == "model1_pages":
            assert paged.bytes_per_sequence == dense.shape[0] * 584 and paged.initial(2).dtype == np.uint8
    rt = RuntimeConfig.for_model(cfg)
    net = Transformer(cfg, rt)
    inputs, outputs = io_names(net, "decode")
    assert inputs == ["ids", "positions"] + ["state." + n for n in specs[False].names]
    assert outputs[1:1 + len(specs[False])] == ["next_state." + n for n in specs[False].names]
    assert specs[False].bytes_per_sequence() == sum(a.nbytes for a in specs[False].initial(1))
