"""Software-dequant FP8 KV cache benchmark (`ascend-v4 bench --only fp8_decode`).

One decode step of sparse attention (B=1, H=64, window 128 + top-k 512 selected entries) at 16K and 64K
context (--quick: 4K) over the same keys held three ways:
- MODEL1 FP8 cache (584 B per entry), sparse_fp8_decode twin on ascend910b: e4m3 decoded in software with
  16-bit integer vector instructions (the 910B / 910C path);
- the same cache and kernel on ascend950: e4m3 by the vector fp8 Cast (native path);
- a bf16 cache (1024 B per entry): there is no bf16-cache AscendC kernel, so the baseline is numpy fp32
  attention over the same selected entries gathered from the bf16 cache and widened to fp32.
Also the dequantisation alone (the kernel's own routine over the selected entries), the two paths' bit
equality, and bytes moved per step and per entry (cache entry + its int32 index). All ratios come from
one run; the twins execute AscendC instruction by instruction on one CPU thread, so twin times compare the
two twin paths with each other and say nothing about NPU speed; numpy vs twin is not like for like.
"""
from __future__ import annotations

import numpy as np

from tools.bench.timing import best_of

H, DIM, WINDOW, TOPK, INDEX_BYTES = 64, 512, 128, 512, 4


def _selected_cache(cache: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The selected entries of a MODEL1 cache as a one-block cache of len(idx) slots (same bytes)."""
    from custom_ops.sparse_fp8_decode.reference import DATA_BYTES, SCALE_BYTES, page_block_size_of
    p = page_block_size_of(cache)
    data = cache[:, :p * DATA_BYTES].reshape(-1, DATA_BYTES)[idx]
    scales = cache[:, p * DATA_BYTES:].reshape(-1, SCALE_BYTES)[idx]
    return np.ascontiguousarray(np.concatenate([data.reshape(1, -1), scales.reshape(1, -1)], axis=1))


def _bf16_attention(q, kv_bf16, idx, sink, scale):
    """numpy baseline: gather the selected bf16 entries, widen to fp32, attention with the sink."""
    from custom_ops.sparse_fp8_decode.reference import dense_attention_reference
    return dense_attention_reference(q, kv_bf16[idx].astype(np.float32), sink, scale)


def bench_context(n: int, rng) -> dict:
    import ml_dtypes

    import custom_ops as co
    from custom_ops.runtime import soc
    from custom_ops.sparse_fp8_decode.binding import dequantize_kv_fp8
    from custom_ops.sparse_fp8_decode.reference import BF16_TOKEN_BYTES, TOKEN_BYTES
    q = rng.standard_normal((1, H, DIM), dtype=np.float32)
    sink = rng.standard_normal(H, dtype=np.float32)
    scale = DIM ** -0.5
    kv = rng.standard_normal((n, DIM), dtype=np.float32)
    cache = co.pack_kv_fp8(kv, 64)
    kv_bf16 = kv.astype(ml_dtypes.bfloat16)
    del kv
    older = rng.choice(n - WINDOW, size=min(TOPK, n - WINDOW), replace=False)
    idx = np.concatenate([np.arange(n - WINDOW, n), older]).astype(np.int32)
    sel = _selected_cache(cache, idx)
    row = {}
    for name, profile in (("software", "ascend910b"), ("native", "ascend950")):
        with soc(profile):
            out, _ = co.sparse_fp8_decode(q, cache, idx[None, :], sink, scale)
            row[f"{name}_s"] = best_of(lambda: co.sparse_fp8_decode(q, cache, idx[None, :], sink, scale), 5)
            deq = dequantize_kv_fp8(sel)
            row[f"{name}_dequant_s"] = best_of(lambda: dequantize_kv_fp8(sel), 5)
        row[f"_{name}_out"], row[f"_{name}_deq"] = out, deq
    ref_bf16 = _bf16_attention(q, kv_bf16, idx, sink, scale)
    row["bf16_numpy_s"] = best_of(lambda: _bf16_attention(q, kv_bf16, idx, sink, scale), 5)
    sw_out, nat_out = row.pop("_software_out"), row.pop("_native_out")
    sw_deq, nat_deq = row.pop("_software_deq"), row.pop("_native_deq")
    entries = idx.size
    fp8_bytes = entries * (TOKEN_BYTES + INDEX_BYTES) + q.nbytes
    bf16_bytes = entries * (BF16_TOKEN_BYTES + INDEX_BYTES) + q.nbytes
    row.update(
        context=n, entries=int(entries),
        software_vs_native=row["software_s"] / row["native_s"],
        software_vs_bf16_numpy=row["software_s"] / row["bf16_numpy_s"],
        dequant_software_vs_native=row["software_dequant_s"] / row["native_dequant_s"],
        dequant_software_us_per_entry=row["software_dequant_s"] / entries * 1e6,
        dequant_native_us_per_entry=row["native_dequant_s"] / entries * 1e6,
        bit_identical_out=bool(np.array_equal(sw_out.view(np.uint32), nat_out.view(np.uint32))),
        bit_identical_dequant=bool(np.array_equal(sw_deq.view(np.uint32), nat_deq.view(np.uint32))),
        max_abs_diff_vs_bf16_cache=float(np.abs(sw_out - ref_bf16).max()),
        fp8_bytes_per_step=int(fp8_bytes), bf16_bytes_per_step=int(bf16_bytes),
        fp8_bytes_per_entry=TOKEN_BYTES + INDEX_BYTES, bf16_bytes_per_entry=BF16_TOKEN_BYTES + INDEX_BYTES,
        bytes_ratio_fp8_vs_bf16=fp8_bytes / bf16_bytes,                          # per step, q included
        bytes_ratio_per_entry=(TOKEN_BYTES + INDEX_BYTES) / (BF16_TOKEN_BYTES + INDEX_BYTES),
        cache_bytes_fp8=int(cache.nbytes), cache_bytes_bf16=int(kv_bf16.nbytes))
    return row


def run(quick: bool = False) -> dict:
    rng = np.random.default_rng(0)
    contexts = [4096] if quick else [16384, 65536]
    return dict(heads=H, window=WINDOW, topk=TOPK, contexts=contexts,
                rows=[bench_context(n, rng) for n in contexts],
                notes="software: ascend910b twin (integer-op e4m3 decode); native: ascend950 twin (fp8 vector "
                      "Cast); bf16: numpy fp32 attention over the same entries gathered from a bf16 cache "
                      "(no bf16-cache kernel exists). Twins run instruction by instruction on one CPU thread: "
                      "software vs native compares two twin paths; twin vs numpy is not like for like.")


def plot(result: dict, fig) -> None:
    rows = result["rows"]
    ax = fig.subplots(1, 3)
    x = np.arange(len(rows))
    labels = [f"{r['context'] // 1024}K" for r in rows]
    w = 0.27
    for i, (key, name) in enumerate((("software_s", "FP8 software dequant (910B twin)"),
                                     ("native_s", "FP8 vector Cast (950 twin)"),
                                     ("bf16_numpy_s", "bf16 cache (numpy fp32)"))):
        ax[0].bar(x + (i - 1) * w, [r[key] * 1e3 for r in rows], w, label=name)
    top = max(r[k] for r in rows for k in ("software_s", "native_s", "bf16_numpy_s")) * 1e3
    ax[0].set(xticks=x, xticklabels=labels, xlabel="context", ylabel="ms per decode step", yscale="log",
              ylim=(None, top * 30), title=f"decode attention, {rows[0]['entries']} entries, H={result['heads']}")
    ax[0].legend(fontsize=7)
    ax[1].bar(["software", "native"], [rows[-1]["dequant_software_us_per_entry"], rows[-1]["dequant_native_us_per_entry"]])
    ax[1].set(ylabel="us per entry (twin)", title="dequantisation alone")
    ax[2].bar(["FP8 MODEL1", "bf16"], [rows[0]["fp8_bytes_per_entry"], rows[0]["bf16_bytes_per_entry"]])
    per_entry = rows[0]["fp8_bytes_per_entry"] / rows[0]["bf16_bytes_per_entry"]
    ax[2].set(ylabel="bytes per selected entry (+ int32 index)", title=f"bytes moved: {per_entry:.2f}x of bf16")
    fig.suptitle("software FP8 decode (910B/910C) vs native (950) vs bf16 cache")
