"""The KV cache flags shared by `generate` and `serve`: --kv-budget, --kv-spill-dir (tiered cache) and
--kv-cache, --indexer-cache (the cache formats, docs/DESIGN.md 'Cache formats')."""
from __future__ import annotations

from typing import Dict, Optional

import click


def kv_options(func):
    from ascend_v4.runtime import INDEXER_CACHES, KV_CACHES
    func = click.option("--indexer-cache", type=click.Choice(INDEXER_CACHES),
                        help="indexer key/query rounding: fp4 (release) | int8 (910B/910C A8C8) "
                             "[default: the checkpoint's config, else fp4]")(func)
    func = click.option("--kv-cache", type=click.Choice(KV_CACHES),
                        help="KV cache rounding: fp8 (release) | bf16 (C16) | int8 (C8) "
                             "[default: the checkpoint's config, else fp8]")(func)
    func = click.option("--kv-spill-dir", type=click.Path(file_okay=False),
                        help="folder of the disk tier's page file (default: a temporary folder, removed at exit)")(func)
    func = click.option("--kv-budget", help="tier the CSA layers' FP8 KV cache: device=SIZE[,host=SIZE][,disk=SIZE] "
                                            "(e.g. device=64MiB,host=1GiB; host/disk default unbounded); "
                                            "runs the custom_ops (MODEL1) path")(func)
    return func


def kv_overrides(kv_budget: Optional[str], kv_spill_dir: Optional[str], kv_cache: Optional[str] = None,
                 indexer_cache: Optional[str] = None) -> Dict[str, object]:
    """Runtime overrides for the flags (only those given); a bad budget is a usage error."""
    formats = {k: v for k, v in (("kv_cache", kv_cache), ("indexer_cache", indexer_cache)) if v is not None}
    if kv_budget is None:
        if kv_spill_dir:
            raise click.UsageError("--kv-spill-dir needs --kv-budget")
        return formats
    if kv_cache not in (None, "fp8"):
        raise click.UsageError(f"--kv-budget tiers the FP8 MODEL1 page cache; it cannot run --kv-cache {kv_cache}")
    from ascend_v4.config import ConfigError
    from ascend_v4.kv_tiers.budget import parse_kv_budget
    try:
        parse_kv_budget(kv_budget)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--kv-budget") from None
    click.echo("--kv-budget: running the custom_ops path (the tiered cache is the MODEL1 FP8 page cache)", err=True)
    return dict(formats, kv_budget=kv_budget, kv_spill_dir=kv_spill_dir, custom_ops=True)
