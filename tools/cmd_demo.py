"""`ascend-v4 demo`: the main job on built-in defaults (tiny config, generated FP8/FP4 weights)."""
from __future__ import annotations

import os
import resource
import tempfile
import time

import click
import numpy as np

from tools.errors import user_errors


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@click.command("demo")
@click.option("--preset", default="tiny", show_default=True, help="config preset (tiny-sized only)")
@click.option("--prompt-len", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--new-tokens", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--weight-format", type=click.Choice(["fp8", "bf16"]), default="fp8", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--skip-graphs", is_flag=True, help="skip the MindIR/ONNX compile and the parity run")
def command(preset, prompt_len, new_tokens, weight_format, seed, skip_graphs):
    """Build a tiny checkpoint, load it, prefill and decode, report speed, then compile the
    graphs to MindIR + ONNX and run the three-way parity check."""
    with user_errors():
        from ascend_v4.config import load_config
        from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
        from ascend_v4.api import build_model
        from ascend_v4.runtime import RuntimeConfig
        cfg = load_config(preset)
        max_seq_len = RuntimeConfig.for_model(cfg).max_seq_len
        if prompt_len + new_tokens > max_seq_len:
            raise click.UsageError(f"prompt-len + new-tokens exceeds max_seq_len {max_seq_len}")
        with tempfile.TemporaryDirectory(prefix="ascend_v4_demo_") as tmp:
            t0 = time.perf_counter()
            path = write_random_checkpoint(cfg, os.path.join(tmp, "ckpt"), weight_format=weight_format, seed=seed)
            size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
            t1 = time.perf_counter()
            click.echo(f"[1/4] wrote a random {weight_format} checkpoint of '{preset}' "
                       f"({size / 2**20:.2f} MiB) in {t1 - t0:.2f} s")
            model = build_model(open_checkpoint(path))
            t2 = time.perf_counter()
            click.echo(f"[2/4] loaded it into MindSpore cells (GRAPH_MODE) in {t2 - t1:.2f} s, "
                       f"peak RSS {_rss_mib():.0f} MiB")
            _generate(model, cfg, prompt_len, new_tokens, seed)
            if not skip_graphs:
                _graphs(path, tmp, prompt_len, new_tokens)


DEMO_TEXT = "Once upon a time there was a small model that learned to count: one, two, three."


def _generate(model, cfg, prompt_len: int, new_tokens: int, seed: int) -> None:
    tok = model.tokenizer                    # the built-in byte-level BPE of random checkpoints
    if tok is not None:
        ids = tok.encode(DEMO_TEXT)
        prompt = [(ids * (prompt_len // len(ids) + 1))[:prompt_len]]
    else:
        prompt = np.random.default_rng(seed).integers(0, cfg.vocab_size, (1, prompt_len)).tolist()
    t3 = time.perf_counter()
    model(prompt, 0)                         # compiles the prefill graph
    t4 = time.perf_counter()
    out = model.generate(prompt, new_tokens)
    t5 = time.perf_counter()
    tm = model.timings
    decode = tm["decode_s"][1:] or tm["decode_s"]  # first decode step includes its compile
    click.echo(f"[3/4] prompt {prompt_len} tokens -> {new_tokens} new tokens: {','.join(map(str, out[0]))}")
    if tok is not None:
        click.echo(f"      as text: {tok.decode(prompt[0])!r} -> {tok.decode(out[0])!r} (random weights)")
    click.echo(f"      graph compile: prefill {t4 - t3 - tm['prefill_s']:.1f} s, "
               f"decode {tm['decode_s'][0] - np.median(decode):.1f} s (once per shape)")
    click.echo(f"      prefill {prompt_len / tm['prefill_s']:.0f} tokens/s "
               f"({tm['prefill_s'] * 1e3:.1f} ms), decode {1 / np.median(decode):.1f} tokens/s "
               f"({np.median(decode) * 1e3:.1f} ms/token, median of {len(decode)}), total {t5 - t3:.1f} s")


def _graphs(checkpoint: str, tmp: str, prompt_len: int, steps: int) -> None:
    """Compile prefill/decode to MindIR + ONNX (float64, so rounding decisions are stable) and
    compare MindSpore, onnxruntime and the numpy oracle."""
    from graph_compile.compiler import compile_model
    from graph_compile.parity import run_parity
    out = os.path.join(tmp, "graphs")
    t0 = time.perf_counter()
    manifest = compile_model(out, f"1x{prompt_len}", "onnx,mindir", checkpoint=checkpoint,
                             precision="float64", log=lambda m: None)
    sizes = {g: sum(os.path.getsize(os.path.join(out, f)) for f in (v.get("onnx"), v.get("mindir")) if f)
             for g, v in manifest["graphs"].items()}
    click.echo(f"[4/4] compiled {len(sizes)} graphs to MindIR + ONNX in {time.perf_counter() - t0:.1f} s "
               f"({', '.join(f'{g} {n / 2**20:.1f} MiB' for g, n in sizes.items())}; weights in checkpoint "
               f"format, checkpoint {manifest['checkpoint_bytes'] / 2**20:.1f} MiB)")
    report = run_parity(out, steps=steps)
    worst = {}
    for row in report.rows:
        key = row["pair"]
        worst[key] = max(worst.get(key, 0.0), row["rel"])
    verdict = "PASS" if report.passed else f"FAIL (first divergence: {report.first_divergence})"
    click.echo(f"      parity over prefill + {steps} decode steps: {verdict}; worst max-rel "
               + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
