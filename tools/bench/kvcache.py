"""Tiered KV cache benchmark (tiny, custom_ops, float32): (a) KV bytes per token per layer, MODEL1
FP8 vs bf16, from the state spec and the measured pools; (b) decode time per token vs context length
with the device tier limited to a small budget (ascend_v4/kv_tiers), with the tiers' hit rate, pages
moved per step and peak RSS.

The context is filled synthetically: a 256K prefill through the O(n^2) indexer is hours on this
CPU, so each context is laid into the state directly (well-formed MODEL1 rows from random entries in
the host and disk tiers, HCA entries and the window ring on the device, random indexer keys, the
row's position set); decode cost does not depend on the values. The decode steps are real graph
calls through Model.decode and the tier manager.
"""
from __future__ import annotations

import resource
import time

import numpy as np

CONTEXTS = (1024, 4096, 16384, 65536, 262144)
QUICK_CONTEXTS = (1024, 4096, 16384)
SPARE_PAGES = 8          # device pages beyond what one decode step may read


def bytes_per_token(model) -> dict:
    """Per CSA layer: MODEL1 vs bf16 bytes per compressed entry and per context token (ratio 4),
    from the spec and from the measured device pool."""
    from custom_ops.sparse_fp8_decode.reference import BF16_TOKEN_BYTES, TOKEN_BYTES
    spec = {s.name: (i, s) for i, s in enumerate(model.spec)}
    i, slot = spec["layers.1.attn.entries"]
    pool = model.state[i].asnumpy()
    entries = slot.shape[0]
    return dict(model1_bytes_per_entry=slot.bytes_per_sequence / entries, bf16_bytes_per_entry=BF16_TOKEN_BYTES,
                ratio=TOKEN_BYTES / BF16_TOKEN_BYTES, measured_pool_bytes_per_entry=pool.nbytes / (pool.shape[0] * 64),
                model1_bytes_per_token_csa_layer=slot.bytes_per_sequence / (entries * 4),
                bf16_bytes_per_token_csa_layer=BF16_TOKEN_BYTES / 4,
                untiered_pool_mib_per_row=slot.bytes_per_sequence * model.tiers.plan.csa_layers / 2 ** 20,
                device_tier_mib=model.tiers.n_dev * model.tiers.plan.group_bytes / 2 ** 20,
                hot_state_mib=model.tiers.plan.hot_bytes / 2 ** 20)


def fill(model, context: int, rng) -> None:
    """Row 0 at position `context`: its CSA pages in the host / disk tiers, everything else in the
    state tuple (see the module docstring)."""
    from mindspore import Tensor
    from custom_ops.sparse_fp8_decode.reference import pack_kv_fp8
    model.reset()
    tiers = model.tiers
    groups = [np.stack([pack_kv_fp8(rng.normal(size=(64, 512)).astype(np.float32))[0]
                        for _ in range(tiers.plan.csa_layers)]) for _ in range(4)]
    for p in range(context // 4 // 64):
        store = tiers.host if not tiers.host.full() else tiers.disk
        store.put((0, p), groups[p % 4])
    state = list(model.state)
    for i, slot in enumerate(model.spec):
        a = None
        if slot.name.endswith("indexer.keys"):
            a = slot.initial(model.max_batch)
            a[0, :context // 4] = rng.normal(size=(context // 4, slot.shape[1])).astype(a.dtype)
        elif slot.layout == "model1_pages":                     # window ring, HCA entries: row 0 full
            a = slot.initial(model.max_batch)
            n = slot.shape[0]
            packed = pack_kv_fp8(rng.normal(size=(n, 512)).astype(np.float32))
            a[:packed.shape[0]] = packed[:a.shape[0]]
        if a is not None:
            state[i] = Tensor(a)
    model.state = tuple(state)
    model.lengths[:] = -1
    model.lengths[0] = context


def decode_curve(model, contexts, steps: int, steady: bool) -> list:
    """Decode `steps` tokens at each context. steady: the same token every step, so only the
    position moves the indexer's query (top-k sets change slowly, as in text); else a random token
    each step (a new top-k every step: the worst case for prefetch)."""
    rng = np.random.default_rng(0)
    rows = []
    for ctx in contexts:
        fill(model, ctx, rng)
        before = dict(model.tiers.counters)
        pos = np.full(model.max_batch, -1)
        token = rng.integers(0, 512, model.max_batch)
        times = []
        for s in range(steps):
            pos[0] = ctx + s
            t0 = time.perf_counter()
            model.decode(token if steady else rng.integers(0, 512, model.max_batch), pos)
            times.append(time.perf_counter() - t0)
        c = {k: v - before[k] for k, v in model.tiers.counters.items()}
        moved = c["fetched_host"] + c["fetched_disk"] + c["evicted_to_host"] + c["evicted_to_disk"]
        rest = times[1:]                          # the first step finds every page in host / disk
        rows.append(dict(context=ctx, steps=steps, decode_ms=1e3 * float(np.median(rest)),
                         first_step_ms=1e3 * times[0],
                         ms_per_graph_call=1e3 * sum(times) / (steps + c["graph_reruns"]),
                         call_hit_rate=1 - c["reruns"] / c["calls"],
                         page_hit_rate=1 - c["pages_missed"] / max(1, c["pages_selected"]),
                         graph_reruns=c["graph_reruns"], pages_moved_per_step=moved / steps,
                         pages_fetched=c["fetched_host"] + c["fetched_disk"], prefetched=c["prefetched"],
                         pages_of_row=ctx // 256, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return rows


def run(quick: bool = False) -> dict:
    import ascend_v4
    from ascend_v4.config import load_config
    from ascend_v4.kv_tiers.budget import tier_plan
    from ascend_v4.runtime import RuntimeConfig
    contexts = QUICK_CONTEXTS if quick else CONTEXTS
    max_seq = contexts[-1] + 1024
    opts = dict(max_seq_len=max_seq, max_batch_size=1, custom_ops=True)
    plan = tier_plan(load_config("tiny"), RuntimeConfig.for_model(load_config("tiny"), kv_budget="device=inf",
                                                                  **opts))
    device = plan.hot_bytes + (plan.min_pages + SPARE_PAGES) * plan.group_bytes
    budget = f"device={device},host={16 * plan.group_bytes}"
    t0 = time.perf_counter()
    model = ascend_v4.load("tiny", kv_budget=budget, **opts)
    load_s = time.perf_counter() - t0
    try:
        sizes = bytes_per_token(model)
        steps = 4 if quick else 8
        steady = decode_curve(model, contexts, steps, steady=True)
        random = decode_curve(model, contexts, steps, steady=False)
    finally:
        model.close()
    return dict(note="context filled synthetically; decode cost does not depend on the values. Decode steps "
                     "are real graph calls (tiny, custom_ops, float32, batch 1); every step's pages are "
                     "checked against the device tier and re-run on a miss",
                max_seq_len=max_seq, kv_budget=budget, device_pages=model.tiers.n_dev,
                host_pages=16, load_s=load_s, bytes=sizes, decode=steady, decode_random_tokens=random,
                largest_context=contexts[-1])


def plot(result: dict, fig) -> None:
    axes = fig.subplots(1, 3)
    b = result["bytes"]
    axes[0].bar(["MODEL1 FP8", "bf16"], [b["model1_bytes_per_entry"], b["bf16_bytes_per_entry"]],
                color=["tab:blue", "tab:gray"])
    axes[0].set_ylabel("bytes per compressed entry per layer")
    axes[0].set_title(f"KV bytes: {b['ratio']:.2f}x of bf16")
    rows = result["decode"]
    ctx = [r["context"] for r in rows]
    rand = result["decode_random_tokens"]
    axes[1].plot(ctx, [r["decode_ms"] for r in rows], "o-", label="median step, same token")
    axes[1].plot(ctx, [r["decode_ms"] for r in rand], "s-", label="median step, random tokens")
    axes[1].plot(ctx, [r["ms_per_graph_call"] for r in rand], "^:", label="per graph call (re-runs apart)")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("context tokens")
    axes[1].set_ylabel("decode ms / token")
    axes[1].set_ylim(bottom=0)
    axes[1].legend()
    axes[1].set_title(f"tiny decode, device tier {result['device_pages']} pages")
    for label, rs, mark in (("same token", rows, "o"), ("random tokens", rand, "s")):
        axes[2].plot(ctx, [r["call_hit_rate"] for r in rs], mark + "-", label=f"calls without re-run, {label}")
        axes[2].plot(ctx, [r["page_hit_rate"] for r in rs], mark + "--", label=f"pages resident, {label}")
    axes[2].set_xscale("log", base=2)
    axes[2].set_ylim(0, 1.05)
    axes[2].set_xlabel("context tokens")
    axes[2].legend(fontsize=7)
    axes[2].set_title("prefetch hit rates")
