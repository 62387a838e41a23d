"""`ascend-v4 generate`: greedy or sampled decoding from a preset or a checkpoint."""
from __future__ import annotations

import os

import click

from ascend_v4.kv_tiers.options import kv_options, kv_overrides
from ascend_v4.parallel.options import parallel_options, resolve
from tools.errors import user_errors


def _parse_ids(text: str):
    try:
        ids = [int(tok) for tok in text.replace(" ", "").split(",") if tok != ""]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint="--prompt-ids") from None
    if not ids:
        raise click.BadParameter("no token ids given", param_hint="--prompt-ids")
    return ids


@click.command("generate")
@click.option("--preset", help="preset name (random weights; tiny configs only)")
@click.option("--checkpoint", type=click.Path(), help="checkpoint folder")
@click.option("--prompt-ids", help="comma-separated prompt token ids, e.g. 1,2,3")
@click.option("--prompt", help="prompt text (needs tokenizer.json in the checkpoint; presets have one)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="sampling and weight seed")
@click.option("--max-seq-len", type=click.IntRange(min=1), help="context per slot (default: the model's)")
@kv_options
@parallel_options
def command(preset, checkpoint, prompt_ids, prompt, max_new_tokens, temperature, seed, max_seq_len, kv_cache,
            indexer_cache, kv_budget, kv_spill_dir, tensor_parallel, expert_parallel):
    """Generate tokens; prints the new ids as one comma-separated line (rank 0 of a parallel run)."""
    if bool(preset) == bool(checkpoint):
        raise click.UsageError("give exactly one of --preset or --checkpoint")
    if bool(prompt_ids) == bool(prompt):
        raise click.UsageError("give exactly one of --prompt-ids or --prompt")
    kv = kv_overrides(kv_budget, kv_spill_dir, kv_cache, indexer_cache)
    with user_errors():
        ids = _parse_ids(prompt_ids) if prompt_ids else None
        if checkpoint and not os.path.isdir(checkpoint):
            raise click.BadParameter(f"{checkpoint} is not a folder", param_hint="--checkpoint")
        import ascend_v4
        from ascend_v4.parallel.lockstep import ranks_in_step
        tp, ep, _ = resolve(tensor_parallel, expert_parallel)
        model = ascend_v4.load(checkpoint or preset, seed=seed, tensor_parallel=tp, expert_parallel=ep,
                               max_seq_len=max_seq_len, **kv)
        tok = model.tokenizer                # the checkpoint's tokenizer.json (presets: the built-in BPE)
        if prompt is not None:
            if tok is None:
                raise click.UsageError("--prompt needs a checkpoint with tokenizer.json; use --prompt-ids")
            ids = tok.encode(prompt)
        from tqdm import tqdm
        with ranks_in_step(model) as driver:
            if driver is None:               # another rank: it has stepped with rank 0, which prints
                return
            with tqdm(total=max_new_tokens, desc="generate", unit="tok", disable=None) as bar:
                out = driver.generate([ids], max_new_tokens, temperature=temperature, seed=seed,
                                      progress=bar.update)[0]
    if model.tiers is not None:
        s = model.tiers.stats()
        click.echo(f"kv tiers: {s['device_pages']} device pages; calls without re-run {s['hit_rate']:.2f}, "
                   f"pages fetched {s['fetched_host'] + s['fetched_disk']}", err=True)
        model.close()
    click.echo(",".join(str(t) for t in out))
    if tok is not None:
        click.echo(tok.decode(out))
