"""Serving benchmark: a live `python -m ascend_v4.serve --preset tiny` on 127.0.0.1 driven by
the `openai` client with streaming requests at concurrency 1, 4 and 16 (greedy, token-id prompts
of mixed lengths): output tokens/s, TTFT and TPOT p50/p99, batched / sequential throughput; then
the same at concurrency 1 and 4 with MTP speculation on, with its acceptance rate from /metrics."""
from __future__ import annotations

import concurrent.futures as cf
import os
import tempfile
import time
from typing import Dict, List

import numpy as np

SLOTS = 16
LEVELS = (1, 4, 16)
SPEC_LEVELS = (1, 4)


def _server_args(speculative: bool) -> List[str]:
    args = ["--preset", "tiny", "--max-batch", str(SLOTS), "--max-queue", "64", "--prefill-chunk", "64"]
    return args + (["--speculative", "mtp"] if speculative else [])


def _one(client, prompt: List[int], max_tokens: int) -> Dict[str, float]:
    t0 = time.perf_counter()
    first = None
    usage = None
    for chunk in client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                           stream=True, stream_options={"include_usage": True}):
        if first is None and chunk.choices:
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    n = usage.completion_tokens
    return {"ttft_s": first - t0, "tpot_s": (end - first) / max(n - 1, 1), "tokens": n, "e2e_s": end - t0}


def _level(client, concurrency: int, requests: int, max_tokens: int, seed: int) -> Dict[str, float]:
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 500, int(rng.integers(16, 100))).tolist() for _ in range(requests)]
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        runs = list(pool.map(lambda p: _one(client, p, max_tokens), prompts, timeout=1800))
    wall = time.perf_counter() - t0
    ttft = np.array([r["ttft_s"] for r in runs])
    tpot = np.array([r["tpot_s"] for r in runs])
    tokens = sum(r["tokens"] for r in runs)
    return {"concurrency": concurrency, "requests": requests, "max_tokens": max_tokens, "wall_s": wall,
            "output_tokens": tokens, "output_tokens_per_s": tokens / wall,
            "ttft_p50_s": float(np.percentile(ttft, 50)), "ttft_p99_s": float(np.percentile(ttft, 99)),
            "tpot_p50_s": float(np.percentile(tpot, 50)), "tpot_p99_s": float(np.percentile(tpot, 99))}


def _metric(url: str, name: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


def _serve_and_load(speculative: bool, levels, requests_per_level, max_tokens: int, log_dir: str) -> dict:
    import openai
    from ascend_v4.serve.process import ServerProcess
    srv = ServerProcess(_server_args(speculative), os.path.join(log_dir, f"server_mtp{int(speculative)}.log"))
    try:
        t0 = time.perf_counter()
        srv.wait_ready(1200)
        startup = time.perf_counter() - t0
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", timeout=600, max_retries=0)
        _level(client, 1, 1, 2, seed=99)                     # one warm request (allocations, first calls)
        rows = [_level(client, c, requests_per_level(c), max_tokens, seed=c) for c in levels]
        drafted = _metric(srv.url, "ascend_v4_spec_draft_tokens_total")
        accepted = _metric(srv.url, "ascend_v4_spec_accepted_tokens_total")
    finally:
        srv.stop()
    return {"speculative": "mtp" if speculative else None, "startup_s": startup, "levels": rows,
            "drafted": drafted, "accepted": accepted,
            "acceptance_rate": accepted / drafted if drafted else None}


def run(quick: bool = False) -> dict:
    max_tokens = 8 if quick else 16
    levels = (1, 4) if quick else LEVELS
    per_level = (lambda c: max(2, c)) if quick else (lambda c: max(4, 2 * c))
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_serve_") as logs:
        plain = _serve_and_load(False, levels, per_level, max_tokens, logs)
        spec = _serve_and_load(True, (1,) if quick else SPEC_LEVELS, per_level, max_tokens, logs)
    by_c = {row["concurrency"]: row for row in plain["levels"]}
    top = max(by_c)
    spec_by_c = {row["concurrency"]: row for row in spec["levels"]}
    return {
        "config": {"preset": "tiny", "slots": SLOTS, "prefill_chunk": 64, "greedy": True,
                   "prompt_tokens": "16..99 token ids", "max_tokens": max_tokens},
        "plain": plain, "mtp": spec,
        "batched_over_sequential_throughput": by_c[top]["output_tokens_per_s"] / by_c[1]["output_tokens_per_s"],
        "mtp_over_plain_tokens_per_s": {c: spec_by_c[c]["output_tokens_per_s"] / by_c[c]["output_tokens_per_s"]
                                        for c in spec_by_c if c in by_c},
    }


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 3)
    plain, spec = result["plain"]["levels"], result["mtp"]["levels"]
    xs = np.arange(len(plain))
    labels = [str(r["concurrency"]) for r in plain]
    ax[0].bar(xs - 0.2, [r["output_tokens_per_s"] for r in plain], 0.4, label="MTP off")
    sx = [labels.index(str(r["concurrency"])) for r in spec]
    ax[0].bar(np.array(sx) + 0.2, [r["output_tokens_per_s"] for r in spec], 0.4, label="MTP on")
    rate = result["mtp"]["acceptance_rate"]
    ax[0].set(xticks=xs, xticklabels=labels, xlabel="concurrent streams", ylabel="output tokens/s",
              title=f"throughput: batched/sequential {result['batched_over_sequential_throughput']:.2f}x\n"
                    f"MTP acceptance {rate if rate is None else round(rate, 2)}")
    ax[0].legend()
    for i, (key, name) in enumerate((("ttft", "time to first token"), ("tpot", "time per output token"))):
        ax[i + 1].bar(xs - 0.2, [r[f"{key}_p50_s"] * 1e3 for r in plain], 0.4, label="p50")
        ax[i + 1].bar(xs + 0.2, [r[f"{key}_p99_s"] * 1e3 for r in plain], 0.4, label="p99")
        ax[i + 1].set(xticks=xs, xticklabels=labels, xlabel="concurrent streams", ylabel="ms",
                      title=f"{name} (MTP off)")
        ax[i + 1].legend()
