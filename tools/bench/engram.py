"""Engram cost (tiny-engram with a big table, float32, batch 2): decode tokens/s with Engram off
(the same checkpoint weights without the Engram tensors), on with the tables in host memory, and on with the tables
memory-mapped from disk (>= 1 GiB of table files, written to a temp dir, evicted from the page
cache before the first disk run, deleted after). Variants alternate in rounds on one compiled
model per architecture (the Engram model swaps host / disk tables: same graphs). Reports the cost
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


def _decode_round(model, steps: int, seed: int) -> list:
    """Prefill both rows, then `steps` decode steps of seeded token ids, the same for every variant
    (each step's tokens prefetched as soon as they are known, as generate does) -> per-step seconds
    (the Engram fetch wait plus the graph call)."""
    rng = np.random.default_rng(seed)
    model.reset()
    for r, n in enumerate(PROMPTS):
        model.prefill(rng.integers(0, 512, n), slot=r)
    if model.prefetcher:
        model.prefetcher.reset_counters()
    pos = np.array(PROMPTS)
    times = []
    for tok in rng.integers(0, 512, (steps, BATCH)):
        t0 = time.perf_counter()
        model.prefetch(tok, pos)
        model.decode(tok, pos)
        times.append(time.perf_counter() - t0)
        pos += 1
    return times


def run(quick: bool = False) -> dict:
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.config import load_config
    from ascend_v4.engram import geometry
    # per layer 4 tables of ~4.5M rows x 33 bytes: 2 x 0.55 GiB (quick: 2 x 16 MB)
    cfg = load_config("tiny-engram").replace(engram_vocab_size=120_000 if quick else 4_500_000)
    geo = geometry(cfg)
    steps, rounds = (8, 3) if quick else (48, 6)
    opts = {"max_batch_size": BATCH, "compute_dtype": "float32"}
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_engram_") as tmp:
        t0 = time.perf_counter()
        on_path = write_random_checkpoint(cfg, os.path.join(tmp, "engram"), seed=0)
        write_s = time.perf_counter() - t0
        off_path = write_random_checkpoint(cfg.replace(engram_layer_ids=[]), os.path.join(tmp, "plain"), seed=0)
        _evict(on_path)
        ckpt = open_checkpoint(on_path, overrides={**opts, "engram_table": "disk"})
        models = {"off": build_model(open_checkpoint(off_path, overrides=opts)), "disk": build_model(ckpt)}
        disk_tables = models["disk"].engram
        assert all(t.on_disk for t in disk_tables.tables)
        for m in models.values():                      # compile prefill + decode graphs
            _decode_round(m, 2, 99)
        times = {"off": [], "host": [], "disk": []}
        hits = {"host": [0, 0], "disk": [0, 0]}
        wait = {"host": 0.0, "disk": 0.0}
        rss = {}
        host_tables = None
        order = ("off", "disk", "host")
        for r in range(rounds):
            for variant in order[r % 3:] + order[:r % 3]:      # each variant first in turn
                if variant == "host" and host_tables is None:
                    rss["before_host_tables"] = _rss()          # disk tables mapped, pages touched
                    host_tables = ckpt.engram_host("host")
                    rss["with_host_tables"] = _rss()
                model = models["off"] if variant == "off" else models["disk"]
                if variant != "off":
                    model.use_engram_tables(host_tables if variant == "host" else disk_tables)
                times[variant] += _decode_round(model, steps, r)
                if variant != "off":
                    hits[variant][0] += model.prefetcher.hits
                    hits[variant][1] += model.prefetcher.hits + model.prefetcher.misses
                    wait[variant] += model.prefetcher.wait_s
        del host_tables
    step = {k: float(np.median(v)) for k, v in times.items()}
    tps = {k: BATCH / s for k, s in step.items()}
    table_bytes = len(geo.layer_ids) * geo.table_bytes
    return dict(
        config="tiny-engram", batch=BATCH, compute_dtype="float32", decode_steps=steps * rounds,
        table_bytes=table_bytes, table_gib=table_bytes / 2**30, table_rows_per_layer=geo.rows,
        write_table_s=write_s, step_s=step, tokens_per_s=tps,
        cost_pct={k: 100.0 * (1.0 - tps[k] / tps["off"]) for k in ("host", "disk")},
        prefetch_hit_rate={k: (h / n if n else 0.0) for k, (h, n) in hits.items()},
        fetch_wait_ms_per_step={k: 1e3 * w / (steps * rounds) for k, w in wait.items()},
        memory={**rss, "host_tables_added_rss_bytes": rss["with_host_tables"]["rss_bytes"]
                - rss["before_host_tables"]["rss_bytes"]},
        note="disk: page cache evicted once after writing; later rounds may read cached pages. "
             "A hit: the rows were gathered when the graph call took them.")


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
