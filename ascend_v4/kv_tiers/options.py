"""The tiered-cache flags shared by `generate` and `serve`: --kv-budget, --kv-spill-dir."""
from __future__ import annotations

from typing import Dict, Optional

import click


def kv_options(func):
    func = click.option("--kv-spill-dir", type=click.Path(file_okay=False),
                        help="folder of the disk tier's page file (default: a temporary folder, removed at exit)")(func)
    func = click.option("--kv-budget", help="tier the CSA layers' FP8 KV cache: device=SIZE[,host=SIZE][,disk=SIZE] "
                                            "(e.g. device=64MiB,host=1GiB; host/disk default unbounded); "
                                            "runs the custom_ops (MODEL1) path")(func)
    return func


def kv_overrides(kv_budget: Optional[str], kv_spill_dir: Optional[str]) -> Dict[str, object]:
    """Runtime overrides for the flags ({} without --kv-budget); a bad budget is a usage error."""
    if kv_budget is None:
        if kv_spill_dir:
            raise click.UsageError("--kv-spill-dir needs --kv-budget")
        return {}
    from ascend_v4.config import ConfigError
    from ascend_v4.kv_tiers.budget import parse_kv_budget
    try:
        parse_kv_budget(kv_budget)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--kv-budget") from None
    click.echo("--kv-budget: running the custom_ops path (the tiered cache is the MODEL1 FP8 page cache)", err=True)
    return dict(kv_budget=kv_budget, kv_spill_dir=kv_spill_dir, custom_ops=True)
