"""Prefix caching (ascend_v4/engine/prefix_cache.py) on tiny (FP8 linears, FP4 experts, float64).

References: the numpy oracle on the whole sequence (float64, relative error <= 1e-9 as in
test_engine), and the same sequence prefilled without the cache in the same chunks (bit-identical
logits and state: a restored state is exactly the state the prefix left). Tiny's pages are 128
positions (a multiple of its compression ratios 4 and 128).
"""
import numpy as np
import pytest

from ascend_v4.api import build_model
from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
from ascend_v4.config import load_config
from ascend_v4.engine import Engine
from ascend_v4.engine.prefix_cache import PrefixCache, page_tokens_for
from ascend_v4.engine.request import Request, SamplingParams
from ascend_v4.oracle import dequantize, forward_all, precision
from ascend_v4.state import StateSlot, StateSpec, pool_token_rows, write_pool_token_rows

REL = 1e-9


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("prefix") / "ckpt"),
                                   weight_format="fp8", seed=11)
    ckpt = open_checkpoint(path, overrides={"compute_dtype": "float64", "max_seq_len": 512})
    with precision("float64"):
        W = dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    return build_model(ckpt, prefill_chunk=64), ckpt.config, W


def oracle_logits(cfg, W, seq):
    with precision("float64"):
        return forward_all(cfg, W, np.asarray(seq)[None])[0][0]


def cache_sequence(model, cache, slot, tokens):
    """Prefill `tokens` into `slot` in calls of 64 and cache the state after each call, as the
    engine does at chunk ends."""
    for pos in range(0, len(tokens), 64):
        model.extend(slot, tokens[pos:pos + 64], pos)
        end = min(pos + 64, len(tokens))
        first = cache.cached_pages(tokens[:end]) * cache.page_tokens
        cache.insert(tokens[:end], model.row_state(slot, first), first)


def test_restored_prefix_continues_exactly(setup):
    model, cfg, W = setup
    rng = np.random.default_rng(1)
    a = [int(t) for t in rng.integers(0, cfg.vocab_size, 300)]
    b = a[:263] + [int(t) for t in rng.integers(0, cfg.vocab_size, 37)]       # shares 263 tokens
    cache = PrefixCache(model.spec, 1 << 30)
    assert cache.page_tokens == 128
    model.reset()
    cache_sequence(model, cache, 0, a)
    snap = cache.lookup(b)
    assert snap.length == 256                 # the longest cached state inside the shared 263
    model.load_row_state(1, cache.state_of(snap), snap.length)
    hit = model.extend(1, b[256:], 256, all_logits=True)                        # [44, vocab]
    hit_state = model.row_state(1)
    # the same chunks without the cache: bit-identical logits and state
    model.extend(0, b[:256], 0)
    ref = model.extend(0, b[256:], 256, all_logits=True)
    assert np.array_equal(hit, ref)
    for name, array in model.row_state(0).items():
        assert np.array_equal(hit_state[name], array), name
    # the independent oracle on the whole sequence
    assert rel_err(hit, oracle_logits(cfg, W, b)[256:]) <= REL


def test_prefix_ending_inside_compression_blocks(setup):
    """A cached length of 302 ends inside a ratio-4 block (302 % 4 = 2) and a ratio-128 block
    (302 % 128 = 46): the compressors' partial blocks come from the snapshot's tail."""
    model, cfg, W = setup
    rng = np.random.default_rng(2)
    a = [int(t) for t in rng.integers(0, cfg.vocab_size, 302)]
    c = a + [int(t) for t in rng.integers(0, cfg.vocab_size, 21)]
    cache = PrefixCache(model.spec, 1 << 30)
    model.reset()
    cache_sequence(model, cache, 0, a)
    snap = cache.lookup(c)
    assert snap.length == 302 and len(snap.pages) == 2
    model.load_row_state(1, cache.state_of(snap), snap.length)
    hit = model.extend(1, c[302:], 302, all_logits=True)
    assert rel_err(hit, oracle_logits(cfg, W, c)[302:]) <= REL
    model.extend(0, c, 0)                                 # one-shot prefill (other chunks): same state
    for name, array in model.row_state(0).items():
        got, ref = model.row_state(1)[name], array
        finite = np.isfinite(ref)
        assert np.array_equal(finite, np.isfinite(got)), name
        scale = max(1.0, float(np.abs(ref[finite]).max())) if finite.any() else 1.0
        assert np.abs(got[finite] - ref[finite]).max() <= REL * scale, name


def test_engine_reports_cached_tokens_and_matches_generate(setup):
    model, cfg, W = setup
    rng = np.random.default_rng(3)
    system = [int(t) for t in rng.integers(0, cfg.vocab_size, 200)]
    prompts = [system + [int(t) for t in rng.integers(0, cfg.vocab_size, 9)] for _ in range(2)]
    model.reset()
    alone = [model.generate([p], 4)[0] for p in prompts]
    engine = Engine(model, prefix_cache=PrefixCache(model.spec, 1 << 30))
    model.reset()
    done = []
    for p in prompts:                       # one after the other: the second finds the first's pages
        r = engine.submit(Request(p, SamplingParams(max_tokens=4)))
        for _ in range(50):
            if r.finish_reason:
                break
            engine.step()
        done.append(r)
    assert [r.output for r in done] == alone
    assert done[0].cached_tokens == 0 and done[1].cached_tokens == 128     # the shared 200 hold one page
    # the first conversation continued: its whole state (prompt + 3 fed outputs) is cached at finish
    follow = prompts[0] + done[0].output + [5, 6]
    r = engine.submit(Request(follow, SamplingParams(max_tokens=2)))
    for _ in range(50):
        if r.finish_reason:
            break
        engine.step()
    assert r.cached_tokens == len(prompts[0]) + 3
    model.reset()
    assert r.output == model.generate([follow], 2)[0]


def tiny_spec():
    return StateSpec([StateSlot("ring", (4, 2), np.float64), StateSlot("entries", (64, 2), np.float64, per_tokens=4)])


def state_for(tokens, spec):
    """A synthetic row state: entries rows hold their position block's token sum."""
    L = len(tokens)
    rows = -(-L // 4)
    entries = np.array([[sum(tokens[4 * i:4 * i + 4])] * 2 for i in range(rows)], np.float64)
    return {"ring": np.full((4, 2), float(L)), "entries": entries}


def test_pages_are_shared_and_evicted_least_recently_used():
    spec = tiny_spec()
    cache = PrefixCache(spec, budget_bytes=10_000, page_tokens=16)
    base = list(range(40))
    assert cache.insert(base[:32], state_for(base[:32], spec))          # 2 pages, empty tail
    pages_bytes = cache.nbytes - 64
    assert cache.insert(base[:37], state_for(base[:37], spec))          # shares both pages
    assert len(cache.pages) == 2 and cache.nbytes == pages_bytes + 64 + 64 + 2 * 16
    snap = cache.lookup(base[:37] + [99])
    assert snap.length == 37
    state = cache.state_of(snap)
    assert np.array_equal(state["entries"], state_for(base[:37], spec)["entries"])
    assert cache.lookup(base[:37]).length == 32          # a run needs one token: never the whole prompt
    assert cache.lookup([7] + base[1:37]) is None         # first page differs
    assert cache.lookup(base[:33] + [1, 1, 1, 1]).length == 32   # tail differs: the page-aligned one
    # budget: the least recently used snapshot goes first; pages live while a snapshot uses them
    small = PrefixCache(spec, budget_bytes=cache.nbytes + 143, page_tokens=16)   # 288 + 143
    small.insert(base[:32], state_for(base[:32], spec))
    small.insert(base[:37], state_for(base[:37], spec))
    small.lookup(base[:32] + [1])                         # touch the 32 one
    other = [9] * 20
    assert small.insert(other, state_for(other, spec))
    assert small.lookup(base[:37] + [1]).length == 32     # the 37 one was evicted
    assert small.nbytes <= small.budget
    assert not small.insert(list(range(200)), state_for(list(range(200)), spec))   # larger than the budget


def test_page_tokens_cover_every_compression_ratio(setup):
    model = setup[0]
    assert page_tokens_for(model.spec) == 128
    assert page_tokens_for(tiny_spec()) == 64


def test_model1_pool_token_rows_round_trip():
    rng = np.random.default_rng(4)
    pool = rng.integers(0, 256, (3, 64 * 584), dtype=np.uint8)
    rows = pool_token_rows(pool[1:], 70, 100)             # pool slots 70..169: blocks 1 and 2
    assert rows.shape == (100, 584)
    assert np.array_equal(rows[0, :576], pool[1, 6 * 576:7 * 576])
    assert np.array_equal(rows[0, 576:], pool[1, 64 * 576 + 6 * 8:64 * 576 + 7 * 8])
    copy = np.zeros_like(pool)
    write_pool_token_rows(copy, 70, rows)
    assert np.array_equal(pool_token_rows(copy[1:], 70, 100), rows)
    assert np.array_equal(rows[99, :576], pool[2, 41 * 576:42 * 576])
    assert not copy[0].any()                              # nothing outside the slots is written


def test_budget_sizes_parse_binary_and_decimal_units():
    from ascend_v4.config import ConfigError
    from ascend_v4.sizes import parse_bytes
    assert parse_bytes("512MiB", "--prefix-cache") == 512 << 20
    assert parse_bytes("2G", "--prefix-cache") == 2 << 30
    assert parse_bytes("500MB", "--prefix-cache") == 500_000_000
    assert parse_bytes("0", "--prefix-cache") == 0
    with pytest.raises(ConfigError, match="--prefix-cache 'lots': expected a size"):
        parse_bytes("lots", "--prefix-cache")
