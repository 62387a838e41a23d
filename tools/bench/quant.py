"""Converted formats: W8A8 INT8 vs BF16 vs FP8 vs MXFP8 linear throughput, and the conversion accuracy table.

- linear: one `Linear` [out, in] per format on the same [m, in] float32 input, graph mode, one run
  (ratios, since absolute times vary with the machine and its load). On this CPU twin INT8 is the
  per-token quantisation, an int8 -> float cast of the weight and exact float32 products in 1,024-dim
  chunks added in int32 (linear.int8_accumulate); BF16 a bf16 -> float32 cast of the weight and one
  product; FP8 a table-lookup dequantisation plus the activation quant-dequant (1x128); MXFP8 the same
  with 1x32 blocks on both sides. The figures say what
  the twin costs, not what the Ascend cube unit does (910B: INT8 at twice the BF16 rate).
- accuracy: format x model (tiny FP8/FP4, reference-tiny bf16 and fp8): convert for ascend910b
  (w8a8 + C16 and C8 KV caches, w4a8 + C16, bf16 + C16; all with the INT8 indexer cache) and for
  ascend950 (mxfp8 = mxfp8-mxfp4, the 950's FP8 caches), verify against the official-format source
  with the release's caches (tools/convert/verify): worst per-layer rel err, worst step, logits rel
  err, top-1 agreement. Rows `caches C16` / `caches C8` run the source weights with only the caches
  changed (kv_cache bf16 / int8, indexer_cache int8). --quick: tiny only.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import ml_dtypes
import numpy as np

# (label, scheme, SoC, --kv-cache (None: the SoC's default)) of the conversions; (label, kv_cache)
# of the cache-only runs
CONVERSIONS = (("w8a8", "w8a8", "ascend910b", "bf16"), ("w8a8+C8", "w8a8", "ascend910b", "int8"),
               ("w4a8", "w4a8", "ascend910b", "bf16"), ("bf16", "bf16", "ascend910b", "bf16"),
               ("mxfp8", "mxfp8", "ascend950", None))
CACHE_ONLY = (("caches C16", "bf16"), ("caches C8", "int8"))
CONFIGS = os.path.join(os.path.dirname(__file__), "configs")


def _linear_cells(inp: int, out: int, seed: int = 0):
    from ascend_v4 import quant
    from ascend_v4.linear import Linear
    from ascend_v4.runtime import RuntimeConfig
    from ascend_v4.config import load_config
    rt = RuntimeConfig.for_model(load_config("tiny"))
    w = np.random.default_rng(seed).standard_normal((out, inp)).astype(np.float32) * inp ** -0.5
    cells = {}
    for kind in ("int8", "bf16", "fp8", "mxfp8"):
        cell = Linear(inp, out, kind, rt)
        if kind == "int8":
            cell.set_arrays(*quant.quantize_int8_rows(w))
        elif kind == "mxfp8":
            cell.set_arrays(*quant.quantize_mxfp8(w))
        elif kind == "fp8":
            q, s = quant.quantize_fp8(w)
            cell.set_arrays(*cell.stored_arrays("fp8", q, s))
        else:
            cell.set_arrays(*cell.stored_arrays("bf16", w.astype(ml_dtypes.bfloat16), None))
        cells[kind] = cell
    return cells


def linear_throughput(m: int, inp: int, out: int, repeats: int) -> dict:
    import mindspore as ms
    from mindspore import Tensor
    ms.set_context(mode=ms.GRAPH_MODE)
    x = Tensor(np.random.default_rng(1).standard_normal((m, inp)).astype(np.float32))
    res = {}
    for kind, cell in _linear_cells(inp, out).items():
        cell(x).asnumpy()                                   # compile
        t0 = time.perf_counter()
        for _ in range(repeats):
            cell(x).asnumpy()
        dt = (time.perf_counter() - t0) / repeats
        res[kind] = {"seconds": dt, "gflops": 2 * m * inp * out / dt / 1e9, "tokens_per_s": m / dt}
    res["int8_vs_bf16"] = res["bf16"]["seconds"] / res["int8"]["seconds"]
    res["int8_vs_fp8"] = res["fp8"]["seconds"] / res["int8"]["seconds"]
    res["mxfp8_vs_fp8"] = res["fp8"]["seconds"] / res["mxfp8"]["seconds"]
    return dict(m=m, inp=inp, out=out, repeats=repeats, **res)


def accuracy(models) -> list:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import from_dict, load_config
    from tools.convert.verify import (TOLERANCES, block_names, compare, prompt, run_streams, verify,
                                      PROMPT_LEN)
    from tools.convert.writer import convert_checkpoint
    rows = []
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_quant_") as tmp:
        for model in models:
            if model == "tiny":
                cfg, fmt = load_config("tiny"), "fp8"
            else:
                fmt = model.rsplit("-", 1)[1]
                with open(os.path.join(CONFIGS, f"{model}.json"), encoding="utf-8") as fh:
                    cfg = from_dict(json.load(fh), name=model)
            src = write_random_checkpoint(cfg, os.path.join(tmp, model), fmt)
            ref = None
            for label, scheme, soc, kv in CONVERSIONS:
                out = os.path.join(tmp, f"{model}-{label}")
                desc = convert_checkpoint(src, out, soc, scheme, kv)
                report, ref = verify(out, src, scheme, ref_streams=ref)
                rows.append(_row(model, fmt, label, soc, desc["kv_cache"], desc["indexer_cache"], report.to_dict(),
                                 desc.get("weights_changed")))
            ids = prompt(cfg.vocab_size, PROMPT_LEN)
            for label, kv in CACHE_ONLY:
                conv = run_streams(src, ids, kv_cache=kv, indexer_cache="int8")
                report = compare(conv, ref, "w8a8", block_names(cfg)[:len(conv.hidden)], TOLERANCES["w8a8"])
                rows.append(_row(model, fmt, label, "ascend910b", kv, "int8", report.to_dict()))
    return rows


def _row(model: str, fmt: str, label: str, soc: str, kv: str, indexer: str, d: dict, changed=None) -> dict:
    return {"model": model, "source": fmt, "scheme": label, "soc": soc, "kv_cache": kv, "indexer_cache": indexer,
            "weights_changed": changed, "passed": d["passed"], "worst_layer_rel_err": d["worst_layer_rel_err"],
            "worst_step": d["worst_step"], "logits_rel_err": d["logits_rel_err"], "top1": d["top1"],
            "layers": d["layers"]}


def run(quick: bool = False) -> dict:
    size = 512 if quick else 2048
    lin = linear_throughput(m=64 if quick else 256, inp=size, out=size, repeats=5 if quick else 10)
    models = ["tiny"] if quick else ["tiny", "reference-tiny-bf16", "reference-tiny-fp8"]
    return {"linear": lin, "accuracy": accuracy(models), "compute_dtype": "float32"}


def plot(result: dict, fig) -> None:
    left, right = fig.subplots(1, 2)
    lin = result["linear"]
    kinds = ["int8", "bf16", "fp8", "mxfp8"]
    left.bar(kinds, [lin[k]["gflops"] for k in kinds])
    left.set(ylabel="GFLOP/s (CPU twin)", title=f"Linear [{lin['m']} x {lin['inp']}] @ [{lin['out']} x {lin['inp']}]^T: "
                                                 f"INT8 / BF16 = {lin['int8_vs_bf16']:.2f}x")
    rows = result["accuracy"]
    labels = [f"{r['model']}\n{r['scheme']}" for r in rows]
    xs = np.arange(len(rows))
    left_w = 0.38
    right.bar(xs - left_w / 2, [r["logits_rel_err"] for r in rows], left_w, label="logits rel err")
    right.bar(xs + left_w / 2, [r["worst_step"] for r in rows], left_w, label="worst per-block step")
    right.plot(xs, [r["top1"] for r in rows], "ko-", label="top-1 agreement")
    right.set_xticks(xs, labels, fontsize=7)
    right.set(title="converted vs official format (w8a8/bf16: ascend910b, mxfp8: ascend950)", ylim=(0, 1.05))
    right.legend(fontsize=7)
