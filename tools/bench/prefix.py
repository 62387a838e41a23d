"""Prefix-cache benchmark (tiny, FP8/FP4, float32): time to first token of a request whose prompt
is a long shared prefix (32K tokens; --quick 4K) plus a short question, without a prefix hit
(nothing cached) and with one (an earlier request with the same prefix and another question),
through the serving engine in this process; plus what the cache holds and what snapshotting costs
(the cold prefill with the cache on vs off)."""
from __future__ import annotations

import os
import resource
import tempfile

import numpy as np

QUESTION = 64            # tokens after the shared prefix


def _ttft(engine, prompt) -> dict:
    """Submit one request with max_tokens 1 and step the engine until it finishes; the engine's
    time in prefix-cache work (restore, snapshots) is counted within the TTFT and reported."""
    from ascend_v4.engine.request import Request, SamplingParams
    before = engine.prefix_cache_s
    r = engine.submit(Request(prompt, SamplingParams(max_tokens=1)))
    while r.first_token_time is None:
        engine.step()
    ttft = r.first_token_time - r.arrival
    cache_s = engine.prefix_cache_s - before
    return dict(ttft_s=ttft, cached_tokens=r.cached_tokens, prompt=len(prompt), prefix_cache_s=cache_s,
                prefix_cache_share=cache_s / ttft)


def run(quick: bool = False) -> dict:
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.config import load_config
    from ascend_v4.engine import Engine
    from ascend_v4.engine.prefix_cache import PrefixCache
    prefix = 4096 if quick else 32768
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 512, prefix).tolist()
    questions = [rng.integers(0, 512, QUESTION).tolist() for _ in range(3)]
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_prefix_") as tmp:
        path = write_random_checkpoint(load_config("tiny"), os.path.join(tmp, "fp8"), weight_format="fp8", seed=0)
        ckpt = open_checkpoint(path, overrides={"max_seq_len": prefix + 2 * QUESTION + 128, "max_batch_size": 2})
        model = build_model(ckpt, prefill_chunk=256)
        cache = PrefixCache(model.spec, 8 << 30)
        plain = Engine(model)
        plain.warm_up()                              # compile every bucket and the decode step
        cold_no_cache = _ttft(plain, shared + questions[0])
        model.reset()
        engine = Engine(model, prefix_cache=cache)
        cold = _ttft(engine, shared + questions[1])
        hot = _ttft(engine, shared + questions[2])
    stats = cache.stats()
    return dict(config="tiny", weights="fp8 + fp4 experts", compute_dtype="float32", prefix_tokens=prefix,
                question_tokens=QUESTION, page_tokens=cache.page_tokens, max_seq_len=model.max_seq_len,
                cold_without_cache=cold_no_cache, cold=cold, hit=hot,
                ttft_speedup=cold["ttft_s"] / hot["ttft_s"],
                snapshot_share_of_cold_ttft=cold["prefix_cache_share"],
                cache=stats, cache_bytes_per_prefix_token=stats["bytes"] / prefix,
                state_bytes_per_sequence=model.spec.bytes_per_sequence(),
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 1)
    names = ["no cache", "cold (cache on)", "prefix hit"]
    values = [result["cold_without_cache"]["ttft_s"], result["cold"]["ttft_s"], result["hit"]["ttft_s"]]
    ax.bar(names, values)
    ax.set(ylabel="time to first token (s)", yscale="log",
           title=f"{result['prefix_tokens']}-token shared prefix + {result['question_tokens']} tokens "
                 f"({result['ttft_speedup']:.0f}x with a hit)")
