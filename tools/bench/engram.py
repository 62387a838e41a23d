"""Engram cost (tiny-engram with a big table, float32, batch 2): decode tokens/s with Engram off
(the same checkpoint weights without the Engram tensors), on with the tables in host memory, and on with the tables
memory-mapped from disk (>= 1 GiB of table files, written to a temp dir, evicted from the page
cache before the first disk run, deleted after). Variants alternate step by step on one compiled
model per architecture (the Engram model swaps host / disk tables and replays each step from a
snapshot: same graphs, same inputs), so load drift on a shared machine hits all three alike. Reports the cost
per variant vs off, the prefetch hit rate of the decode steps, and the process's peak RSS before
and after the host tables are read (the disk tables must stay mapped, not loaded), and the time
`decode` waited for the Engram rows per step (the part of the cost on the host)."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

BATCH = 2
PROMPTS = (20, 27)


def _rss() -> dict:
    """Current and peak resident set of this process (bytes), from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return {"rss_bytes": out.get("VmRSS", 0), "peak_rss_bytes": out.get("VmHWM", 0)}


def _evict(folder: str) -> None:
    """Drop the table files' pages from the page cache (they were just written)."""
    for name in os.listdir(folder):
        if name.startswith("engram.") and name.endswith(".bin"):
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _prefill(model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.reset()
    for r, n in enumerate(PROMPTS):
        model.prefill(rng.integers(0, 512, n), slot=r)


def _timed_decode(model, tok, pos):
    """One decode step with its tokens prefetched as soon as they are known (as generate does)
    -> (seconds: the Engram fetch wait plus the graph call, logits)."""
    t0 = time.perf_counter()
    model.prefetch(tok, pos)
    logits = model.decode(tok, pos)
    return time.perf_counter() - t0, logits


def run(quick: bool = False) -> dict:
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.config import load_config
    from ascend_v4.engram import geometry
    # per layer 4 tables of ~4.5M rows x 33 bytes: 2 x 0.55 GiB (quick: 2 x 16 MB)
    cfg = load_config("tiny-engram").replace(engram_vocab_size=120_000 if quick else 4_500_000)
    geo = geometry(cfg)
    steps, rounds = (8, 2) if quick else (48, 5)
    opts = {"max_batch_size": BATCH, "compute_dtype": "float32"}
    variants = ("off", "host", "disk")
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_engram_") as tmp:
        t0 = time.perf_counter()
        on_path = write_random_checkpoint(cfg, os.path.join(tmp, "engram"), seed=0)
        write_s = time.perf_counter() - t0
        off_path = write_random_checkpoint(cfg.replace(engram_layer_ids=[]), os.path.join(tmp, "plain"), seed=0)
        _evict(on_path)
        ckpt = open_checkpoint(on_path, overrides={**opts, "engram_table": "disk"})
        off, eng = build_model(open_checkpoint(off_path, overrides=opts)), build_model(ckpt)
        tables = {"disk": eng.engram}
        assert all(t.on_disk for t in tables["disk"].tables)
        for m in (off, eng):                             # compile the prefill and decode graphs
            _prefill(m, 99)
            _timed_decode(m, np.array([1, 2]), np.array(PROMPTS))
        rss = {"before_host_tables": _rss()}             # disk tables mapped, warm-up pages touched
        tables["host"] = ckpt.engram_host("host")
        rss["with_host_tables"] = _rss()
        times = {v: [] for v in variants}
        hits = {v: [0, 0, 0.0] for v in variants[1:]}   # hits, takes, wait seconds
        identical = True
        for r in range(rounds):
            _prefill(off, r)
            _prefill(eng, r)
            for v in variants[1:]:
                eng.use_engram_tables(tables[v])
                eng.prefetcher.reset_counters()
            pos = np.array(PROMPTS)
            for s, tok in enumerate(np.random.default_rng(100 + r).integers(0, 512, (steps, BATCH))):
                snap, out = eng.snapshot(), {}
                for v in variants[s % 3:] + variants[:s % 3]:     # paired, each variant first in turn
                    if v == "off":
                        dt, _ = _timed_decode(off, tok, pos)
                    else:
                        eng.restore(snap)                      # host and disk run the same step
                        eng.use_engram_tables(tables[v])
                        dt, out[v] = _timed_decode(eng, tok, pos)
                    times[v].append(dt)
                identical &= bool(np.array_equal(out["host"], out["disk"]))
                pos += 1
            for v in variants[1:]:
                eng.use_engram_tables(tables[v])
                p = eng.prefetcher
                hits[v] = [hits[v][0] + p.hits, hits[v][1] + p.hits + p.misses, hits[v][2] + p.wait_s]
        del tables
    step = {k: float(np.median(v)) for k, v in times.items()}
    paired = {v: float(np.median(np.array(times[v]) / np.array(times["off"]))) for v in variants[1:]}
    table_bytes = len(geo.layer_ids) * geo.table_bytes
    return dict(
        config="tiny-engram", batch=BATCH, compute_dtype="float32", decode_steps=steps * rounds,
        table_bytes=table_bytes, table_gib=table_bytes / 2**30, table_rows_per_layer=geo.rows,
        write_table_s=write_s, step_s=step, tokens_per_s={k: BATCH / t for k, t in step.items()},
        cost_pct={v: 100.0 * (step[v] / step["off"] - 1.0) for v in variants[1:]},
        cost_pct_paired_median={v: 100.0 * (paired[v] - 1.0) for v in variants[1:]},
        prefetch_hit_rate={v: h / n if n else 0.0 for v, (h, n, _) in hits.items()},
        fetch_wait_ms_per_step={v: 1e3 * w / n if n else 0.0 for v, (_, n, w) in hits.items()},
        host_equals_disk_logits=identical,
        memory={**rss, "host_tables_added_rss_bytes": rss["with_host_tables"]["rss_bytes"]
                - rss["before_host_tables"]["rss_bytes"]},
        note="each decode step runs off, host and disk back to back (host and disk from the same "
             "snapshot); cost = median step time vs off. disk: page cache evicted after writing, rows "
             "read once stay cached. A hit: the rows were gathered when the graph call took them.")


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 2)
    names = ["off", "host", "disk"]
    tps = [result["tokens_per_s"][n] for n in names]
    bars = ax[0].bar(["Engram off", "host tables", f"disk ({result['table_gib']:.2f} GiB)"], tps)
    for bar, n in zip(bars[1:], names[1:]):
        ax[0].annotate(f"{result['cost_pct'][n]:+.1f}% cost\nhit {result['prefetch_hit_rate'][n]:.0%}, "
                       f"wait {result['fetch_wait_ms_per_step'][n]:.2f} ms/step",
                       (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax[0].set_ylim(0, 1.25 * max(tps))
    ax[0].set(ylabel="decode tokens/s", title=f"Engram cost, batch {result['batch']} (tiny-engram, float32)")
    mem = result["memory"]
    ax[1].bar(["peak RSS, disk tables", "peak RSS, + host tables"],
              [mem["before_host_tables"]["peak_rss_bytes"] / 2**30, mem["with_host_tables"]["peak_rss_bytes"] / 2**30])
    ax[1].set(ylabel="GiB", title="process peak RSS (MindSpore + model; the mapped table is not resident)")
