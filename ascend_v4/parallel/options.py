"""The parallel flags shared by `generate` and `serve`: --tensor-parallel / --expert-parallel, or
--parallel-config FILE from `ascend-v4 plan --out` (one or the other)."""
from __future__ import annotations

from typing import Optional, Tuple

import click


def parallel_options(func):
    func = click.option("--expert-parallel", "expert_parallel", type=click.IntRange(min=1), default=None,
                        help="ranks that split the routed experts (run under `ascend-v4 launch`)")(func)
    func = click.option("--tensor-parallel", "tensor_parallel", type=click.IntRange(min=1), default=None,
                        help="ranks that split attention heads, embedding and head")(func)
    return func


def resolve(tensor_parallel: Optional[int], expert_parallel: Optional[int],
            parallel_config: Optional[str] = None) -> Tuple[int, int, Optional[tuple]]:
    """(tp, ep, expert placement) from the flags or the plan's parallel config (not both); the
    placement (the plan's, with redundant copies of hot experts) comes only from the config."""
    if parallel_config:
        if tensor_parallel or expert_parallel:
            raise click.UsageError("give --parallel-config or --tensor-parallel / --expert-parallel, not both")
        from ascend_v4.config import ConfigError
        from ascend_v4.parallel.layout import read_parallel_config
        try:
            return read_parallel_config(parallel_config)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--parallel-config") from None
    return tensor_parallel or 1, expert_parallel or 1, None
