"""Tiered FP8 KV cache (ascend_v4/kv_tiers): budget parsing and refusals, page moves between the
tiers (byte-identical MODEL1 blocks, LRU order), and a decode across a context that spills to host
and disk against the untiered custom_ops path (bit-identical logits and greedy tokens)."""
import numpy as np
import pytest

from ascend_v4.config import ConfigError, load_config
from ascend_v4.kv_tiers.budget import KvBudget, parse_kv_budget, tier_plan
from ascend_v4.runtime import RuntimeConfig

MAX_SEQ, BATCH, CHUNK = 4096, 2, 256
PROMPTS, STEPS = (2560, 2048), 12       # 11 + 9 pages of 256 tokens: more than the 18 the device holds


def runtime(budget, **kw):
    opts = dict(custom_ops=True, max_seq_len=MAX_SEQ, max_batch_size=BATCH, kv_budget=budget)
    opts.update(kw)
    return RuntimeConfig.for_model(load_config("tiny"), **opts)


def device_bytes(pages, batch=BATCH):
    """A device budget that leaves exactly `pages` page groups after the hot state."""
    plan = tier_plan(load_config("tiny"), runtime("device=inf", max_batch_size=batch))
    return plan.hot_bytes + pages * plan.group_bytes


# ---- budgets ---------------------------------------------------------------------------------------
def test_parse_budget():
    assert parse_kv_budget("device=64MiB,host=1GiB") == KvBudget(64 << 20, 1 << 30, None)
    assert parse_kv_budget(" device = 1.5K , disk=2MB, host=inf") == KvBudget(1536, None, 2_000_000)
    assert parse_kv_budget("device=4096") == KvBudget(4096)


@pytest.mark.parametrize("text, match", [
    ("host=1GiB", "device tier's budget is required"),
    ("device=64MiB,gpu=1G", "'gpu=1G' is not tier=size"),
    ("device=64MiB,host", "'host' is not tier=size"),
    ("device=lots", "device='lots' is not a size"),
    ("device=64XB", "device='64XB' is not a size"),
    ("device=1M,device=2M", "given twice"),
    ("", "must be text"),
])
def test_parse_budget_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_kv_budget(text)


def test_device_budget_below_hot_state_is_refused():
    plan = tier_plan(load_config("tiny"), runtime("device=inf"))
    assert plan.min_pages == BATCH * (1 + 2 * 4) and plan.max_pages == MAX_SEQ // 4 // 64
    assert tier_plan(load_config("tiny"), runtime(f"device={device_bytes(18)}")).device_pages == 18
    with pytest.raises(ConfigError, match=r"device=.* is too small: the always-hot state of 2 row\(s\)"
                                          r".*give at least device=5MiB"):
        runtime(f"device={device_bytes(17)}")
    with pytest.raises(ConfigError, match="too small"):
        runtime("device=1MiB")


def test_tiering_needs_the_kernel_path():
    with pytest.raises(ConfigError, match="turn custom_ops on"):
        runtime("device=64MiB", custom_ops=False)


def test_spec_declares_the_tiers():
    from ascend_v4.model import Transformer
    rt = runtime(f"device={device_bytes(20)}")
    spec = {s.name: s for s in Transformer.spec_for(load_config("tiny"), rt)}
    pool = spec["layers.1.attn.entries"]
    assert pool.layout == "model1_tiered" and pool.batch_shape(BATCH) == (20, 64 * 584)
    assert pool.bytes_per_sequence == MAX_SEQ // 4 * 584          # counted over all tiers
    assert spec["layers.3.attn.entries_table"].batch_shape(BATCH) == (BATCH, 16)
    assert spec["layers.2.attn.entries"].layout == "model1_pages"   # HCA stays in device memory
    assert "layers.2.attn.entries_table" not in spec


# ---- moves between tiers -----------------------------------------------------------------------------
class HostArray:
    """Stands in for a MindSpore tensor of the state tuple (the manager reads it with asnumpy)."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def asnumpy(self):
        return self.array


def test_moves_are_byte_identical_and_lru():
    from ascend_v4.kv_tiers.manager import TierManager
    from ascend_v4.model import Transformer
    from custom_ops.sparse_fp8_decode.reference import pack_kv_fp8
    cfg = load_config("tiny")
    rt = runtime(f"device={device_bytes(9, 1)},host={2 * 2 * 64 * 584}", max_batch_size=1)
    spec = Transformer.spec_for(cfg, rt)
    tiers = TierManager(spec, tier_plan(cfg, rt), parse_kv_budget(rt.kv_budget), 1)
    try:
        state = tuple(HostArray(a) for a in spec.initial(1))
        rng = np.random.default_rng(1)
        # each logical page: one real MODEL1 block per CSA layer
        pages = {p: np.stack([pack_kv_fp8(rng.normal(size=(64, 512)).astype(np.float32))[0] for _ in range(2)])
                 for p in range(12)}
        pools = TierManager._Pools(state, tiers.pool_pos)
        for p in range(9):                              # fill the device tier (as the graph's writes would)
            tiers._ensure((0, p), pools, set())
            pools.group()[:, tiers.device[(0, p)]] = pages[p]
        tiers._ensure((0, 0), pools, set())             # touch page 0: page 1 is now the oldest
        for p in (9, 10, 11):                           # evicts 1, 2 to host, then host's oldest (1) to disk, 3 in
            tiers._ensure((0, p), pools, {(0, 9), (0, 10), (0, 11)})
            pools.group()[:, tiers.device[(0, p)]] = pages[p]
        assert [tiers.where((0, p)) for p in (0, 1, 2, 3, 4)] == ["device", "disk", "host", "host", "device"]
        assert (tiers.table[0] >= 0).sum() == 9 and tiers.table[0, 1] == -1
        # back to the device: 1 from disk (evicting 4 to host, host's oldest 2 to disk), then 3 from host
        for p in (1, 3):
            tiers._ensure((0, p), pools, {(0, 1), (0, 3)})
            np.testing.assert_array_equal(pools.group()[:, tiers.device[(0, p)]], pages[p])
        assert [tiers.where((0, p)) for p in (1, 2, 3, 4, 5)] == ["device", "disk", "device", "host", "host"]
        c = tiers.counters
        assert (c["fetched_disk"], c["fetched_host"]) == (1, 1)
        assert c["evicted_to_host"] == 5 and c["evicted_to_disk"] == 2
        for p in range(12):                             # wherever a page lives, its bytes are unchanged
            where = tiers.where((0, p))
            held = pools.group()[:, tiers.device[(0, p)]] if where == "device" else \
                tiers.host.pages[(0, p)] if where == "host" else tiers.disk.file[tiers.disk.index[(0, p)]]
            np.testing.assert_array_equal(held, pages[p], err_msg=f"page {p} in {where}")
        with pytest.raises(ConfigError, match="all needed by this call"):
            tiers._ensure((0, 20), pools, set(tiers.device))
        tiers.release(0)
        assert not tiers.device and not tiers.host.pages and not tiers.disk.index and len(tiers.free) == 9
    finally:
        path = tiers.disk.path
        tiers.close()
    import os
    assert not os.path.exists(path)


# ---- the model ------------------------------------------------------------------------------------
def decode_run(budget):
    """Prefill two rows (different lengths), decode STEPS greedy tokens -> (logits, tokens, model)."""
    import ascend_v4
    model = ascend_v4.load("tiny", max_seq_len=MAX_SEQ, max_batch_size=BATCH, custom_ops=True,
                           prefill_chunk=CHUNK, kv_budget=budget)
    ids = np.random.default_rng(0).integers(0, 512, (BATCH, max(PROMPTS)))
    logits = [np.stack([model.prefill(ids[r, :n], r) for r, n in enumerate(PROMPTS)])]
    pos = np.array(PROMPTS)
    tokens = []
    for _ in range(STEPS):
        tok = logits[-1].argmax(-1)
        tokens.append(tok)
        logits.append(model.decode(tok, pos))
        pos = pos + 1
    return np.stack(logits), np.stack(tokens), model


@pytest.fixture(scope="module")
def runs():
    import gc
    plain, plain_tokens, model = decode_run(None)
    del model
    unbounded, unbounded_tokens, model = decode_run("device=inf")     # every page resident
    unbounded_stats = model.tiers.stats()
    model.close()
    del model
    gc.collect()
    budget = f"device={device_bytes(18)},host={2 * 64 * 584}"     # 18 pages on device, 1 in host memory
    tiered, tiered_tokens, model = decode_run(budget)
    yield plain, plain_tokens, tiered, tiered_tokens, model, (unbounded, unbounded_tokens, unbounded_stats)
    model.close()


def test_spilling_decode_equals_unbounded_and_untiered(runs):
    plain, plain_tokens, tiered, tiered_tokens, model, (unbounded, unbounded_tokens, unbounded_stats) = runs
    assert unbounded_stats["device_pages"] == BATCH * MAX_SEQ // 4 // 64 and unbounded_stats["pages_missed"] == 0
    stats = model.tiers.stats()
    # the run really spilled to host and disk, missed, and re-ran
    assert stats["evicted_to_host"] > 0 and stats["evicted_to_disk"] > 0, stats
    assert stats["fetched_host"] > 0 and stats["fetched_disk"] > 0, stats
    assert stats["pages_missed"] > 0 and stats["reruns"] > 0, stats
    assert stats["resident"] == 18
    np.testing.assert_array_equal(tiered, unbounded)
    np.testing.assert_array_equal(tiered_tokens, unbounded_tokens)
    # compact top-k indices in mask order: the kernel folds the same bytes in the same order as untiered
    np.testing.assert_array_equal(tiered, plain)
    np.testing.assert_array_equal(tiered_tokens, plain_tokens)


def test_restore_after_tier_moves(runs):
    """MTP rollback: snapshot, row 0's resident pages spilled, a step that fetches them back into
    other device slots, restore, the same step again: the restored state reads the pages where they
    now live (restoring the snapshot's pools would read another page's bytes there)."""
    from mindspore import Tensor
    from ascend_v4.kv_tiers.manager import TierManager
    _, _, tiered, _, model, _ = runs
    tiers = model.tiers
    snap = model.snapshot()
    slots_before = dict(tiers.device)
    pools = TierManager._Pools(model.state, tiers.pool_pos)
    for key in [k for k in tiers.device if k[0] == 0]:
        tiers._evict(key, pools)
    model.state = pools.state(Tensor)
    tok, pos = tiered[-1].argmax(-1), model.lengths.copy()
    fetched = tiers.counters["fetched_host"] + tiers.counters["fetched_disk"]
    first = model.decode(tok, pos)
    assert tiers.counters["fetched_host"] + tiers.counters["fetched_disk"] > fetched
    assert any(slots_before.get(k, s) != s for k, s in tiers.device.items()), "no page changed its slot"
    model.restore(snap)
    again = model.decode(tok, pos)
    np.testing.assert_array_equal(again, first)


def test_cli_flags():
    from click.testing import CliRunner
    from tools.cli import main
    bad = CliRunner().invoke(main, ["generate", "--preset", "tiny", "--prompt-ids", "1,2", "--kv-budget", "device=1G,gpu=2"])
    assert bad.exit_code == 2 and "--kv-budget" in bad.output and "'gpu=2' is not tier=size" in bad.output
    lonely = CliRunner().invoke(main, ["serve", "--preset", "tiny", "--kv-spill-dir", "/tmp"])
    assert lonely.exit_code == 2 and "--kv-spill-dir needs --kv-budget" in lonely.output
