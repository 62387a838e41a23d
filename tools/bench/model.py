"""Model benchmark: tiny prefill/decode speed (GRAPH_MODE vs PyNative, custom ops on/off),
loading memory, and agreement with the numpy oracle per checkpoint format."""
from __future__ import annotations

import os
import resource
import tempfile
import time
import tracemalloc

import numpy as np

PROMPT, STEPS = 64, 16


def _checkpoint(tmp: str, fmt: str, seed: int = 0) -> str:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    return write_random_checkpoint(load_config("tiny"), os.path.join(tmp, fmt), weight_format=fmt, seed=seed)


def _load(path: str, **overrides):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    return build_model(open_checkpoint(path, overrides=overrides or None))


def _speed(model, ids, steps: int) -> dict:
    """Median prefill and decode latency after the first (compiling) call of each graph."""
    t0 = time.perf_counter()
    model(ids[:, :PROMPT], 0)
    compile_prefill = time.perf_counter() - t0
    prefill = []
    for _ in range(3):
        t0 = time.perf_counter()
        model(ids[:, :PROMPT], 0)
        prefill.append(time.perf_counter() - t0)
    decode = []
    for pos in range(PROMPT, PROMPT + steps):
        t0 = time.perf_counter()
        model(ids[:, pos:pos + 1], pos)
        decode.append(time.perf_counter() - t0)
    p, d = float(np.median(prefill)), float(np.median(decode[1:]))
    return dict(prefill_s=p, prefill_tokens_per_s=ids.shape[0] * PROMPT / p, decode_s=d,
                decode_tokens_per_s=ids.shape[0] / d, first_call_s=compile_prefill,
                first_decode_s=decode[0])


def _pynative_speed(model, ids, steps: int) -> dict:
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return _speed(model, ids, steps)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def _load_memory(path: str) -> dict:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    _load(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(numpy_peak_bytes=peak, rss_growth_bytes=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024,
                checkpoint_bytes=sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)))


def _agreement(path: str, compute_dtype: str, prompt: int = 120) -> dict:
    """Max relative error and top-1 agreement vs the oracle (run in the same precision) over
    prefill + 16 decode steps."""
    from ascend_v4 import oracle
    from ascend_v4.checkpoint import open_checkpoint
    ckpt = open_checkpoint(path, overrides={"compute_dtype": compute_dtype})
    model = _load(path, compute_dtype=compute_dtype)
    ids = np.random.default_rng(prompt).integers(0, ckpt.config.vocab_size, (2, prompt + STEPS))
    with oracle.precision(compute_dtype):
        W = oracle.dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
        ref, _ = oracle.forward_all(ckpt.config, W, ids)
    got = [model(ids[:, :prompt], 0)] + [model(ids[:, p:p + 1], p) for p in range(prompt, prompt + STEPS - 1)]
    errs, top1 = [], []
    for k, logits in enumerate(got):
        want = ref[:, prompt - 1 + k]
        errs.append(float(np.linalg.norm(logits - want) / np.linalg.norm(want)))
        top1.append(float(np.mean(logits.argmax(-1) == want.argmax(-1))))
    return dict(compute_dtype=compute_dtype, positions=len(got), max_rel_err=max(errs),
                top1_agreement=float(np.mean(top1)))


def float32_accuracy(n: int = 100_000) -> dict:
    """Max relative error of MindSpore's CPU float32 transcendentals and of numpy float32,
    both against float64 (explains why float32 FP8 rounding decisions differ between backends)."""
    from mindspore import Tensor, mint, ops
    z = (np.random.default_rng(1).normal(size=n) * 4).astype(np.float32)
    zz = z.astype(np.float64)
    rows = z[:1000].reshape(10, 100)
    sm = np.exp(zz[:1000].reshape(10, 100))
    sm /= sm.sum(-1, keepdims=True)

    def rel(a, b):
        return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.abs(b)))
    return {
        "mindspore": {"exp": rel(ops.exp(Tensor(z)).asnumpy(), np.exp(zz)),
                      "sigmoid": rel(ops.sigmoid(Tensor(z)).asnumpy(), 1 / (1 + np.exp(-zz))),
                      "softmax": rel(mint.softmax(Tensor(rows), -1).asnumpy(), sm)},
        "numpy": {"exp": rel(np.exp(z), np.exp(zz)),
                  "sigmoid": rel(1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-zz))),
                  "softmax": rel(np.exp(rows) / np.exp(rows).sum(-1, keepdims=True), sm)},
    }


def run(quick: bool = False) -> dict:
    steps = 6 if quick else STEPS
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_") as tmp:
        fp8 = _checkpoint(tmp, "fp8")
        ids = np.random.default_rng(0).integers(0, 512, (1, PROMPT + steps))
        model = _load(fp8)
        graph = _speed(model, ids, steps)
        result = dict(config="tiny", batch=1, prompt=PROMPT, graph_mode=graph,
                      load_memory=_load_memory(fp8), float32_accuracy=float32_accuracy())
        result["pynative"] = _pynative_speed(model, ids, max(3, steps // 4))
        result["graph_vs_pynative_decode"] = result["pynative"]["decode_s"] / graph["decode_s"]
        result["graph_vs_pynative_prefill"] = result["pynative"]["prefill_s"] / graph["prefill_s"]
        if not quick:
            result["custom_ops"] = _speed(_load(fp8, custom_ops=True), ids, steps)
            bf16 = _checkpoint(tmp, "bf16")
            result["oracle_agreement"] = {
                "bf16_float32": _agreement(bf16, "float32"),
                "fp8_fp4_float64": _agreement(fp8, "float64"),
                "fp8_fp4_float32": _agreement(fp8, "float32"),
            }
    return result


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 2)
    runs = [("GRAPH", result["graph_mode"]), ("PyNative", result["pynative"])]
    if "custom_ops" in result:
        runs.append(("GRAPH + kernels", result["custom_ops"]))
    names = [n for n, _ in runs]
    x = np.arange(len(runs))
    ax[0].bar(x - 0.2, [r["prefill_tokens_per_s"] for _, r in runs], 0.4, label="prefill")
    ax[0].bar(x + 0.2, [r["decode_tokens_per_s"] for _, r in runs], 0.4, label="decode")
    ax[0].set_xticks(x, names)
    ax[0].set(yscale="log", ylabel="tokens/s", title=f"tiny, prompt {result['prompt']}")
    ax[0].legend()
    agree = result.get("oracle_agreement")
    if agree:
        ax[1].bar(list(agree), [max(a["max_rel_err"], 1e-17) for a in agree.values()])
        ax[1].axhline(1e-3, color="r", ls="--", label="1e-3 target")
        ax[1].set(yscale="log", ylabel="max relative error vs oracle", title="oracle agreement")
        ax[1].legend()
        ax[1].tick_params(axis="x", labelsize=7)
    else:
        ax[1].axis("off")
