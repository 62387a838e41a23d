"""Real-size benchmark: weights in checkpoint format, sparse experts, decode/prefill speed.

Every measurement runs in a fresh child process (spawned), so RSS figures are its own:
- memory: parameter bytes and RSS growth on load over the checkpoint's bytes, for the stored
  layout (default) and the float32 layout (weight_storage 'float', the old default);
- expert_scaling: decode step time at 8..256 routed experts, same dim / top-k / batch;
- reference_tiny: the official-format tiny configs (configs/reference-tiny-*.json: dim 256, 4
  layers, head_dim 128, 8 experts; batch 2 x 300-token prompts, then decode steps), against
  what the official torch reference measured on this kind of machine (REFERENCE);
- decode_graph: kernels of one decode step of reference-tiny (batch 2): primitives in the
  exported MindIR, and kernels launched per step as MindSpore's CPU profiler counts them;
- weight_kernels: the fused weight-quant matmul / one-kernel dequantisation on vs off (reference-
  tiny bf16 and FP8/FP4, batch 2 x 300 tokens; both models in one process, timed interleaved);
- small (not in --quick): the `small` preset (3.4B parameters, FP8/FP4, 2.5 GB): streaming
  write of its random checkpoint (time, bytes, writer peak RSS), load (time, RSS growth over
  checkpoint bytes), prefill of 1,024 tokens in one sequence (chunks of 64), decode steps, peak RSS. Each child
  runs under an address-space limit (SMALL_AS_LIMIT), so running out fails the child, not the machine.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import tempfile
import time

import numpy as np

CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
# The official torch reference on a 2-core machine of this kind, 2 threads, batch 2 x 300
# tokens then 12 decode steps (../shared/bench/README.md of the project's workspace)
REFERENCE = {"bf16": dict(prefill_s=0.124, decode_step_s=0.0167, peak_rss_mb=645),
             "fp8": dict(prefill_s=0.231, decode_step_s=0.0303, peak_rss_mb=621)}


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _checkpoint_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))


def _param_bytes(model) -> int:
    return sum(int(np.prod(p.shape)) * np.dtype(p.asnumpy().dtype).itemsize
               for p in model.transformer.get_parameters())


def _child(task: str, args: dict, queue) -> None:
    try:
        limit = args.pop("as_limit", None)
        if limit:                      # fail with MemoryError instead of taking the machine down
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        queue.put(globals()["_" + task](**args))
    except Exception as exc:                                  # reported, never raised in the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _result(proc, queue, timeout_s: float) -> dict:
    """The child's reply; a child that dies without one (a crash, the OOM killer) is an error
    row instead of a parent waiting out the whole timeout."""
    import queue as queue_mod
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=2)
        except queue_mod.Empty:
            if not proc.is_alive():
                try:                    # a reply written just before the exit is in the pipe
                    return queue.get(timeout=1)
                except queue_mod.Empty:
                    pass
                return {"error": f"the benchmark process died (exit code {proc.exitcode}) without a result"}
    return {"error": f"no result within {timeout_s:.0f} s"}


def _isolated(task: str, **args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(task, args, queue))
    proc.start()
    try:
        out = _result(proc, queue, 1800)
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
    return out


def _memory(path: str, weight_storage: str) -> dict:
    import mindspore  # noqa: F401  (the import baseline)
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    base = _rss_mb()
    t0 = time.perf_counter()
    model = build_model(open_checkpoint(path, overrides={"weight_storage": weight_storage}))
    load_s = time.perf_counter() - t0
    ckpt = _checkpoint_bytes(path)
    grown = (_rss_mb() - base) * 2 ** 20
    params = _param_bytes(model)
    return dict(weight_storage=weight_storage, checkpoint_bytes=ckpt, parameter_bytes=params,
                parameter_over_checkpoint=params / ckpt, rss_growth_bytes=grown, rss_growth_over_checkpoint=grown / ckpt,
                peak_rss_over_baseline_bytes=(_rss_mb("VmHWM") - base) * 2 ** 20, load_s=load_s)


def _decode_step(path: str, steps: int, prompt: int, batch: int) -> dict:
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    model = build_model(open_checkpoint(path, overrides={"max_batch_size": batch}))
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    for r in range(batch):
        model.prefill(rng.integers(0, vocab, prompt), slot=r)
    pos, times = np.full(batch, prompt), []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.decode(rng.integers(0, vocab, batch), pos)
        times.append(time.perf_counter() - t0)
        pos += 1
    return dict(first_step_s=times[0], step_s=float(np.median(times[1:])), peak_rss_mb=_rss_mb("VmHWM"))


def _reference_run(path: str, prompt: int, steps: int, rounds: int) -> dict:
    """Batch 2 x `prompt` tokens prefilled, then `steps` decode steps, `rounds` times; the first
    round compiles (its times are the graph compile figures)."""
    import mindspore  # noqa: F401  (the import baseline: the target is the reference's peak over it)
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    base = _rss_mb()
    model = build_model(open_checkpoint(path, overrides={"max_batch_size": 2, "max_seq_len": 1024}),
                        prefill_chunk=512)
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    prefill, decode, first = [], [], {}
    for k in range(rounds):
        ids = rng.integers(0, vocab, (2, prompt))
        t0 = time.perf_counter()
        model(ids, 0)
        prefill.append(time.perf_counter() - t0)
        times = []
        for s in range(steps):
            t0 = time.perf_counter()
            model(rng.integers(0, vocab, (2, 1)), prompt + s)
            times.append(time.perf_counter() - t0)
        if k == 0:
            first = dict(first_prefill_s=prefill[0], first_decode_s=times[0])
        decode.append(float(np.median(times[1:])))
    return dict(prefill_s=float(np.median(prefill[1:])), decode_step_s=float(np.median(decode[1:])),
                peak_rss_mb=_rss_mb("VmHWM"), import_baseline_mb=base,
                peak_rss_over_import_mb=_rss_mb("VmHWM") - base, **first)


def _weight_kernels_ab(path: str, prompt: int, steps: int, rounds: int) -> dict:
    """One process, two models of one checkpoint, timed interleaved: A with the registry's weight
    kernels (kernels.weight_matmul / weight_dequant) switched off, i.e. the lookup chain, the bf16
    Cast and the BLAS matmul; B as built. Batch 2 x `prompt` tokens, then `steps` decode steps."""
    import ascend_v4.weights as stored_weights
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    built = (stored_weights.weight_matmul, stored_weights.weight_dequant)
    models = {}
    for side in ("A", "B"):
        off = side == "A"
        stored_weights.weight_matmul = (lambda *a, **k: None) if off else built[0]
        stored_weights.weight_dequant = (lambda *a, **k: None) if off else built[1]
        models[side] = build_model(open_checkpoint(path, overrides={"max_batch_size": 2, "max_seq_len": 1024}),
                                   prefill_chunk=512)
    stored_weights.weight_matmul, stored_weights.weight_dequant = built
    rng = np.random.default_rng(0)
    vocab = models["A"].cfg.vocab_size
    times = {side: {"prefill": [], "decode": []} for side in models}
    for _ in range(rounds):
        ids = rng.integers(0, vocab, (2, prompt))
        for side, model in models.items():
            t0 = time.perf_counter()
            model(ids, 0)
            times[side]["prefill"].append(time.perf_counter() - t0)
        for s in range(steps):
            tok = rng.integers(0, vocab, (2, 1))
            for side, model in models.items():
                t0 = time.perf_counter()
                model(tok, prompt + s)
                times[side]["decode"].append(time.perf_counter() - t0)
    out = {}
    for side, t in times.items():           # the first round compiles
        out[side] = dict(prefill_s=float(np.median(t["prefill"][1:])), decode_step_s=float(np.median(t["decode"][steps:])))
    out["on_over_off"] = {k: out["B"][k] / out["A"][k] for k in out["A"]}
    return dict(off=out["A"], on=out["B"], on_over_off=out["on_over_off"])


def weight_kernels(tmp: str, quick: bool) -> list:
    """The fused weight kernels on vs off, reference-tiny bf16 and FP8/FP4 (ratios in one process)."""
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    rows = []
    for fmt in ("bf16", "fp8"):
        cfg = load_config(os.path.join(CONFIGS, f"reference-tiny-{fmt}.json"))
        path = write_random_checkpoint(cfg, os.path.join(tmp, "wk-" + fmt), weight_format=fmt, seed=0)
        rows.append(dict(config=f"reference-tiny-{fmt}", **_isolated("weight_kernels_ab", path=path, prompt=300,
                                                                      steps=6 if quick else 10,
                                                                      rounds=2 if quick else 4)))
    return rows


# the small benchmark's children: address space limit (RSS reaches ~9-10 GB of it before a
# failure; the machine has 24 GB shared with other work)
SMALL_AS_LIMIT = 12 * 2 ** 30


def _write_small(path: str, seed: int) -> dict:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    base = _rss_mb()
    t0 = time.perf_counter()
    write_random_checkpoint(load_config("small"), path, weight_format="fp8", seed=seed)
    return dict(write_s=time.perf_counter() - t0, checkpoint_bytes=_checkpoint_bytes(path),
                writer_peak_rss_mb=_rss_mb("VmHWM"), writer_base_rss_mb=base)


def _small_run(path: str, prompt: int, steps: int, prefill_chunk: int) -> dict:
    """Load, prefill `prompt` tokens into one sequence twice (the first call compiles), then
    `steps` decode steps (the first compiles). RSS growth on load is over the import baseline."""
    import mindspore  # noqa: F401  (the import baseline)
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    base = _rss_mb()
    t0 = time.perf_counter()
    model = build_model(open_checkpoint(path, overrides={"max_batch_size": 1}), prefill_chunk)
    load_s = time.perf_counter() - t0
    ckpt = _checkpoint_bytes(path)
    grown = (_rss_mb() - base) * 2 ** 20
    load_peak = (_rss_mb("VmHWM") - base) * 2 ** 20
    params = _param_bytes(model)
    out = dict(prompt_tokens=prompt, prefill_chunk=prefill_chunk, batch=1, checkpoint_bytes=ckpt,
               load_s=load_s, parameter_bytes=params, parameter_over_checkpoint=params / ckpt,
               rss_growth_bytes=grown, rss_growth_over_checkpoint=grown / ckpt,
               load_peak_over_baseline_bytes=load_peak, import_baseline_mb=base)
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    try:                                # the load figures are reported even if a run fails
        prefill = []
        for _ in range(2):
            ids = rng.integers(0, vocab, prompt)
            t0 = time.perf_counter()
            logits = model.prefill(ids, slot=0)
            prefill.append(time.perf_counter() - t0)
        out.update(first_prefill_s=prefill[0], prefill_s=prefill[1], prefill_tokens_per_s=prompt / prefill[1],
                   peak_rss_after_prefill_mb=_rss_mb("VmHWM"))
        times, tok = [], int(np.argmax(logits))
        for s in range(steps):
            t0 = time.perf_counter()
            logits = model.decode(np.array([tok]), np.array([prompt + s]))
            times.append(time.perf_counter() - t0)
            tok = int(np.argmax(logits[0]))
        step = float(np.median(times[1:]))
        out.update(first_decode_s=times[0], decode_steps=steps, decode_step_s=step, decode_tokens_per_s=1 / step)
    except Exception as exc:            # noqa: BLE001  (e.g. out of memory under SMALL_AS_LIMIT)
        out["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
    out["peak_rss_mb"] = _rss_mb("VmHWM")
    return out


# MindIR nodes that launch no kernel
NOT_KERNELS = {"Load", "Depend", "MakeTuple", "TupleGetItem", "UpdateState", "Return", "Constant"}


def _decode_graph_ops(path: str, batch: int) -> dict:
    """Primitive count of the exported decode graph (one kernel each at run time, reshapes
    included), by primitive and by the cell that issues it."""
    import collections
    import mindspore as ms
    from mindspore import Tensor
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    from ascend_v4.model import DecodeNet
    from graph_compile.mindir import read_mindir
    model = build_model(open_checkpoint(path, overrides={"max_batch_size": batch}))
    net = DecodeNet(model.transformer)
    inputs = [Tensor(np.zeros((batch, 1), np.int32)), Tensor(np.full(batch, 40, np.int32))]
    inputs += [Tensor(a) for a in model.transformer.initial_state(batch)]
    with tempfile.TemporaryDirectory() as tmp:
        ms.export(net, *inputs, file_name=os.path.join(tmp, "decode"), file_format="MINDIR")
        graph = read_mindir(os.path.join(tmp, "decode.mindir"))
    nodes = [n for n in graph.nodes if n.op not in NOT_KERNELS]
    by_op = collections.Counter(n.op for n in nodes)
    by_cell = collections.Counter(n.scope.split("/")[-2].split("-")[-1] if "/" in n.scope else "?" for n in nodes)
    return dict(kernels=len(nodes), top_ops=by_op.most_common(8), top_cells=by_cell.most_common(8))


def _launched_per_step(path: str, batch: int, steps: int = 5) -> dict:
    """Kernels launched per decode step as MindSpore's CPU profiler counts them (batch `batch`
    after a 300-token prefill; the exported graph's count includes reshapes that launch nothing)."""
    import csv
    import glob
    from mindspore import Profiler
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    model = build_model(open_checkpoint(path, overrides={"max_batch_size": batch, "max_seq_len": 1024}),
                        prefill_chunk=512)
    rng = np.random.default_rng(0)
    vocab = model.cfg.vocab_size
    model(rng.integers(0, vocab, (batch, 300)), 0)
    for s in range(3):                                   # compile and warm the decode graph
        model(rng.integers(0, vocab, (batch, 1)), 300 + s)
    with tempfile.TemporaryDirectory() as tmp:
        prof = Profiler(output_path=tmp)
        for s in range(steps):
            model(rng.integers(0, vocab, (batch, 1)), 303 + s)
        prof.stop()
        prof.analyse()
        table = glob.glob(os.path.join(tmp, "**", "cpu_op_type_info_0.csv"), recursive=True)
        if not table:
            return {"error": "the profiler wrote no cpu_op_type_info table"}
        with open(table[0], encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    count = {r["op_type"]: int(r["type_occurrences"]) / steps for r in rows}
    ms_total = sum(float(r["total_compute_time"]) for r in rows) / steps
    return dict(launched_per_step=sum(count.values()), kernel_ms_per_step=ms_total,
                top_launched=sorted(count.items(), key=lambda kv: -kv[1])[:8])


def memory(tmp: str, quick: bool) -> list:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    rows = []
    for name in ("tiny",) if quick else ("tiny", "reference-tiny-fp8"):
        cfg = load_config(name if name == "tiny" else os.path.join(CONFIGS, name + ".json"))
        path = write_random_checkpoint(cfg, os.path.join(tmp, "mem-" + name), weight_format="fp8", seed=0)
        for storage in ("checkpoint", "float"):
            rows.append(dict(config=name, **_isolated("memory", path=path, weight_storage=storage)))
    return rows


def expert_scaling(tmp: str, quick: bool) -> list:
    """Decode step time vs the number of routed experts (dim 256, top-6, batch 2)."""
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    base = load_config(os.path.join(CONFIGS, "reference-tiny-fp8.json"))
    rows = []
    for E in (8, 64) if quick else (8, 32, 64, 128, 256):
        cfg = base.replace(n_routed_experts=E, n_activated_experts=6, name=f"experts-{E}")
        path = write_random_checkpoint(cfg, os.path.join(tmp, f"experts-{E}"), weight_format="fp8", seed=0)
        rows.append(dict(n_routed_experts=E, top_k=6, batch=2, checkpoint_bytes=_checkpoint_bytes(path),
                         **_isolated("decode_step", path=path, steps=6 if quick else 12, prompt=64, batch=2)))
    for r in rows:
        r["step_over_8_experts"] = r["step_s"] / rows[0]["step_s"]
    return rows


def reference_tiny(tmp: str, quick: bool) -> list:
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    rows = []
    for fmt in ("bf16", "fp8"):
        cfg = load_config(os.path.join(CONFIGS, f"reference-tiny-{fmt}.json"))
        path = write_random_checkpoint(cfg, os.path.join(tmp, "ref-" + fmt), weight_format=fmt, seed=0)
        got = _isolated("reference_run", path=path, prompt=300, steps=6 if quick else 12, rounds=3 if quick else 5)
        ref = REFERENCE[fmt]
        if "error" not in got:
            got.update(prefill_tokens_per_s=600 / got["prefill_s"], decode_tokens_per_s=2 / got["decode_step_s"],
                       prefill_speedup_vs_reference=ref["prefill_s"] / got["prefill_s"],
                       decode_speedup_vs_reference=ref["decode_step_s"] / got["decode_step_s"])
        rows.append(dict(config=f"reference-tiny-{fmt}", reference=ref, **got))
    return rows


def decode_graph(tmp: str) -> list:
    """Kernels of one decode step (batch 2) of the official-format tiny configs: primitives in the
    exported graph, and kernels launched as the CPU profiler counts them."""
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    rows = []
    for fmt in ("bf16", "fp8"):
        cfg = load_config(os.path.join(CONFIGS, f"reference-tiny-{fmt}.json"))
        path = write_random_checkpoint(cfg, os.path.join(tmp, "graph-" + fmt), weight_format=fmt, seed=0)
        rows.append(dict(config=f"reference-tiny-{fmt}", batch=2, **_isolated("decode_graph_ops", path=path, batch=2),
                         **_isolated("launched_per_step", path=path, batch=2)))
    return rows


def small(tmp: str, prompt: int = 1024, steps: int = 8, prefill_chunk: int = 64) -> dict:
    """The `small` preset end to end (module docstring); the 2.5 GB checkpoint is deleted after.
    prefill_chunk 64: a prefill call's activations are not reused across layers on MindSpore's CPU
    runtime (measured: about 0.9 MB per token per layer stays allocated), so the chunk bounds
    the peak: chunk 64 peaks at 6.9 GB RSS, chunk 256 at 12.4 GB (over SMALL_AS_LIMIT) while
    prefilling 1.6x faster (docs/DESIGN.md 'Prefill memory')."""
    from ascend_v4.config import load_config
    from ascend_v4.params import count_params, weight_memory
    cfg = load_config("small")
    path = os.path.join(tmp, "small")
    out = dict(config="small", parameters=count_params(cfg), schema_bytes=weight_memory(cfg)["total"])
    try:
        out.update(write=_isolated("write_small", path=path, seed=0, as_limit=SMALL_AS_LIMIT))
        if "error" not in out["write"]:
            out.update(run=_isolated("small_run", path=path, prompt=prompt, steps=steps,
                                     prefill_chunk=prefill_chunk, as_limit=SMALL_AS_LIMIT))
    finally:
        import shutil
        shutil.rmtree(path, ignore_errors=True)
    return out


def run(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_weights_") as tmp:
        out = dict(memory=memory(tmp, quick), decode_graph=decode_graph(tmp),
                   expert_scaling=expert_scaling(tmp, quick), reference_tiny=reference_tiny(tmp, quick),
                   weight_kernels=weight_kernels(tmp, quick))
        if not quick:
            out["small"] = small(tmp)
        return out


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 3)
    mem = [r for r in result["memory"] if "error" not in r]
    x = np.arange(len(mem))
    ax[0].bar(x - 0.2, [r["parameter_over_checkpoint"] for r in mem], 0.4, label="parameter bytes")
    ax[0].bar(x + 0.2, [r["rss_growth_over_checkpoint"] for r in mem], 0.4, label="RSS growth on load")
    ax[0].set_xticks(x, [f"{r['config'].replace('reference-', 'ref-')}\n{r['weight_storage']}" for r in mem],
                     fontsize=8)
    ax[0].set(ylabel="/ checkpoint bytes", title="weight memory")
    ax[0].legend()
    sc = [r for r in result["expert_scaling"] if "error" not in r]
    ax[1].plot([r["n_routed_experts"] for r in sc], [r["step_s"] * 1e3 for r in sc], "o-")
    ax[1].set(xscale="log", xlabel="routed experts (top-6)", ylabel="decode step ms (batch 2)",
              title="sparse experts")
    ax[1].set_ylim(bottom=0)
    ref = [r for r in result["reference_tiny"] if "error" not in r]
    x = np.arange(len(ref))
    ax[2].bar(x - 0.2, [r["decode_step_s"] * 1e3 for r in ref], 0.4, label="ascend-v4")
    ax[2].bar(x + 0.2, [r["reference"]["decode_step_s"] * 1e3 for r in ref], 0.4, label="torch reference")
    ax[2].set_xticks(x, [r["config"] for r in ref])
    ax[2].set(ylabel="decode step ms (2 tokens)", title="vs the official reference")
    ax[2].legend()


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2))
