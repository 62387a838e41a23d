"""Engine benchmark (tiny, FP8/FP4, float32): decode tokens/s with rows at mixed positions at
batch 1, 2 and 8; prefill tokens/s one-shot vs chunked; compiled graphs and compile time for a
serving-like mix of prompt lengths; the state spec's bytes per sequence for tiny and flash."""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

MIX = (1, 3, 17, 50, 120, 333, 700, 1000)     # prompt lengths of the serving-like mix


def _model(path: str, **runtime):
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    chunk = runtime.pop("prefill_chunk", 256)
    return build_model(open_checkpoint(path, overrides=runtime or None), prefill_chunk=chunk)


def decode_speed(path: str, batch: int, steps: int) -> dict:
    """Rows prefilled to different lengths (crossing ratio-4 and window boundaries at different
    steps), then `steps` decode steps of all rows together; median step time after the first."""
    model = _model(path, max_batch_size=batch)
    rng = np.random.default_rng(batch)
    lengths = [20 + 7 * r for r in range(batch)]
    for r, n in enumerate(lengths):
        model.prefill(rng.integers(0, 512, n), slot=r)
    pos = np.array(lengths)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.decode(rng.integers(0, 512, batch), pos)
        times.append(time.perf_counter() - t0)
        pos += 1
    step = float(np.median(times[1:]))
    return dict(batch=batch, prompt_lengths=lengths, first_step_s=times[0], step_s=step,
                tokens_per_s=batch / step)


def prefill_speed(path: str, prompt: int, chunks) -> list:
    """One prompt prefilled whole and in chunks; median of 3 runs after a compiling run."""
    model = _model(path, max_seq_len=1024)
    ids = np.random.default_rng(0).integers(0, 512, prompt)
    rows = []
    for chunk in chunks:
        model.set_prefill_chunk(chunk)
        t0 = time.perf_counter()
        model.prefill(ids, slot=0)
        first = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.prefill(ids, slot=0)
            runs.append(time.perf_counter() - t0)
        t = float(np.median(runs))
        rows.append(dict(prefill_chunk=chunk, buckets=model.buckets, first_call_s=first, prefill_s=t,
                         tokens_per_s=prompt / t))
    return rows


def serving_mix(path: str, lengths) -> dict:
    """Prefill every prompt of the mix (and one decode step): graphs compiled and total time of the
    calls that compiled one, vs one graph per distinct prompt length (the previous design)."""
    from ascend_v4.api import chunk_plan
    model = _model(path, max_seq_len=1024)
    rng = np.random.default_rng(1)
    shapes, compile_s, runs = set(), 0.0, []
    for n in lengths:
        new = {bucket for _, bucket in chunk_plan(n, model.buckets)} - shapes
        t0 = time.perf_counter()
        model.prefill(rng.integers(0, 512, n), slot=0)
        dt = time.perf_counter() - t0
        if new:
            compile_s += dt
        shapes |= new
        runs.append(dict(prompt=n, seconds=dt, compiled=sorted(new)))
    t0 = time.perf_counter()
    model.decode(np.array([1] + [0] * (model.max_batch - 1)),
                 np.array([lengths[-1]] + [-1] * (model.max_batch - 1)))
    compile_s += time.perf_counter() - t0
    return dict(prompt_lengths=list(lengths), prefill_chunk=model.prefill_chunk, buckets=model.buckets,
                graphs_compiled=len(shapes) + 1, graphs_one_per_length=len(set(lengths)) + 1,
                compile_calls_s=compile_s, calls=runs)


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def equality(path: str, steps: int) -> dict:
    """The slot and chunking equalities the tests assert, as measured numbers: float64 rows at
    mixed positions vs the numpy oracle, float64 chunked vs one-shot prefill (logits and state),
    float32 batched rows vs the same rows alone."""
    from ascend_v4 import oracle
    from ascend_v4.checkpoint import open_checkpoint
    ckpt = open_checkpoint(path, overrides={"compute_dtype": "float64"})
    with oracle.precision("float64"):
        W = oracle.dequantize({n: np.asarray(ckpt.raw(n)) for n in ckpt.schema}, ckpt.config)
    model = _model(path, compute_dtype="float64", prefill_chunk=64)
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, 512, 21 + steps), rng.integers(0, 512, 30 + steps)]
    with oracle.precision("float64"):
        refs = [oracle.forward_all(ckpt.config, W, s[None])[0][0] for s in seqs]
    errs = []
    for r, s in enumerate(seqs):
        errs.append(_rel(model.prefill(s[:len(s) - steps], slot=r), refs[r][len(s) - steps - 1]))
    pos = np.array([len(s) - steps for s in seqs])
    for j in range(steps - 1):
        logits = model.decode(np.array([s[p] for s, p in zip(seqs, pos)]), pos)
        errs += [_rel(logits[r], refs[r][pos[r]]) for r in range(2)]
        pos += 1
    prompt = rng.integers(0, 512, 100)
    model.set_prefill_chunk(100)                          # one call of 100 tokens
    model.reset()
    one = model.prefill(prompt, slot=0)
    one_state = {s.name: model.state_arrays()[s.name][0] for s in model.spec}
    model.set_prefill_chunk(16)
    model.reset()
    chunked = model.prefill(prompt, slot=0)
    state_err = 0.0
    for name, ref in one_state.items():
        got, fin = model.state_arrays()[name][0], np.isfinite(ref)
        if fin.any() and np.abs(ref[fin]).max() > 0:
            state_err = max(state_err, float(np.abs(got[fin] - ref[fin]).max() / np.abs(ref[fin]).max()))
    batched, solo = batched_and_solo(_model(path, prefill_chunk=64), seqs, steps)
    return dict(float64_rows_at_mixed_positions_vs_oracle_max_rel=max(errs),
                float64_chunks_of_16_vs_one_shot_logits_rel=_rel(chunked, one),
                float64_chunks_of_16_vs_one_shot_state_max_rel=state_err,
                float32_batched_vs_solo_max_rel=max(_rel(b, s) for b, s in zip(batched, solo)))


def batched_and_solo(model, seqs, steps: int):
    """Each sequence: prefill all but its last `steps` tokens, then teacher-forced decode steps.
    Run once with all rows together and once per row alone (the other slots empty) ->
    (batched, solo): per row logits [steps, vocab] of the prefill and steps - 1 decode steps."""
    b = model.max_batch
    solo = []
    for r, s in enumerate(seqs):
        model.reset()
        out = [model.prefill(s[:len(s) - steps], slot=r)]
        for k in range(len(s) - steps, len(s) - 1):
            pos, tok = np.full(b, -1), np.zeros(b, np.int64)
            pos[r], tok[r] = k, s[k]
            out.append(model.decode(tok, pos)[r])
        solo.append(np.stack(out))
    model.reset()
    batched = [[model.prefill(s[:len(s) - steps], slot=r)] for r, s in enumerate(seqs)]
    pos = np.full(b, -1)
    pos[:len(seqs)] = [len(s) - steps for s in seqs]
    for _ in range(steps - 1):
        tok = np.zeros(b, np.int64)
        tok[:len(seqs)] = [s[p] for s, p in zip(seqs, pos)]
        logits = model.decode(tok, pos)
        for r in range(len(seqs)):
            batched[r].append(logits[r])
        pos[:len(seqs)] += 1
    return [np.stack(x) for x in batched], solo


def state_bytes() -> dict:
    """Bytes per sequence of the state spec, by preset, without building any cells for flash."""
    from ascend_v4.config import load_config
    from ascend_v4.model import Transformer
    from ascend_v4.runtime import RuntimeConfig
    out = {}
    for preset in ("tiny", "flash"):
        cfg = load_config(preset)
        for custom_ops in (False, True):
            rt = RuntimeConfig.for_model(cfg, custom_ops=custom_ops)
            spec = Transformer.spec_for(cfg, rt)
            out[f"{preset}{' custom_ops' if custom_ops else ''}"] = dict(
                max_seq_len=rt.max_seq_len, slots=len(spec), bytes_per_sequence=spec.bytes_per_sequence())
    return out


def run(quick: bool = False) -> dict:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_engine_") as tmp:
        path = write_random_checkpoint(load_config("tiny"), os.path.join(tmp, "fp8"), weight_format="fp8", seed=0)
        steps = 6 if quick else 16
        result = dict(config="tiny", weights="fp8 + fp4 experts", compute_dtype="float32",
                      decode=[decode_speed(path, b, steps) for b in ((1, 2) if quick else (1, 2, 8))])
        prompt = 200 if quick else 768
        result["prefill"] = dict(prompt=prompt, runs=prefill_speed(path, prompt, (256, 64) if quick else (768, 256, 64)))
        one, chunked = result["prefill"]["runs"][0], result["prefill"]["runs"][-1]
        result["prefill"]["chunked_vs_one_shot_time"] = chunked["prefill_s"] / one["prefill_s"]
        result["serving_mix"] = serving_mix(path, MIX[:5] if quick else MIX)
        result["equality"] = equality(path, 6 if quick else 12)
    result["state"] = state_bytes()
    return result


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 3)
    dec = result["decode"]
    ax[0].bar([str(d["batch"]) for d in dec], [d["tokens_per_s"] for d in dec])
    ax[0].set(xlabel="batch (rows at mixed positions)", ylabel="decode tokens/s", title="decode")
    runs = result["prefill"]["runs"]
    ax[1].bar([f"chunk {r['prefill_chunk']}" for r in runs], [r["tokens_per_s"] for r in runs])
    ax[1].set(ylabel="prefill tokens/s", title=f"prefill of {result['prefill']['prompt']} tokens")
    mix = result["serving_mix"]
    ax[2].bar(["buckets", "one per length"], [mix["graphs_compiled"], mix["graphs_one_per_length"]])
    ax[2].set(ylabel="compiled graphs", title=f"serving mix {mix['prompt_lengths'][0]}..{mix['prompt_lengths'][-1]} "
              f"({mix['compile_calls_s']:.0f} s compiling)")
