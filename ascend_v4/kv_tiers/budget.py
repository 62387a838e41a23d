"""`--kv-budget device=64MiB,host=1GiB[,disk=...]`: parsing, and the device tier's page plan.

The device budget pays first for the always-hot state of max_batch rows (window rings, HCA
entries, indexer keys, compressor blocks, page tables: every slot that is not a tiered pool), then
for page groups: one 64-token page block of every CSA layer (they move together, one page table
serves all CSA layers). host / disk omitted: unbounded; `inf` says so explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ascend_v4.config import ConfigError, ModelConfig
from ascend_v4.sizes import size_bytes
from ascend_v4.state import PAGE_BLOCK, TOKEN_BYTES

TIERS = ("device", "host", "disk")
UNBOUNDED = None


@dataclass(frozen=True)
class KvBudget:
    device: Optional[int]       # bytes; None = unbounded (every page resident)
    host: Optional[int] = UNBOUNDED
    disk: Optional[int] = UNBOUNDED


def parse_size(text: str, what: str) -> Optional[int]:
    """'64MiB', '1.5G', '4096', 'inf' -> bytes (None for inf)."""
    if text.strip().lower() in ("inf", "unlimited", "unbounded"):
        return UNBOUNDED
    n = size_bytes(text)
    if n is None:
        raise ConfigError(f"kv_budget: {what}={text!r} is not a size (e.g. 64MiB, 1GiB, 500MB, 4096, inf)")
    return n


def parse_kv_budget(text: str) -> KvBudget:
    """'device=64MiB,host=1GiB,disk=inf' -> KvBudget; errors name the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"kv_budget must be text like device=64MiB,host=1GiB, got {text!r}")
    sizes = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in TIERS:
            raise ConfigError(f"kv_budget: {part.strip()!r} is not tier=size with a tier of "
                              f"{', '.join(TIERS)} (e.g. device=64MiB,host=1GiB)")
        if key in sizes:
            raise ConfigError(f"kv_budget: tier {key!r} given twice")
        sizes[key] = parse_size(value, key)
    if "device" not in sizes:
        raise ConfigError(f"kv_budget {text!r}: the device tier's budget is required (device=SIZE)")
    return KvBudget(**sizes)


@dataclass(frozen=True)
class TierPlan:
    hot_bytes: int          # device bytes of everything not tiered, for max_batch rows
    group_bytes: int        # one page group: a page block of every CSA layer
    csa_layers: int
    max_pages: int          # logical pages per row
    device_pages: int       # page groups the device tier holds
    min_pages: int          # what one decode step of max_batch rows may need at most


def tier_plan(cfg: ModelConfig, rt) -> TierPlan:
    """The device tier for `rt.kv_budget`; a clear error when the budget cannot hold the hot state
    plus the pages one decode step of max_batch rows may read (its newest page and top-k pages of
    every CSA layer)."""
    from ascend_v4.model import Transformer         # lazy: the spec is built from the cells' declarations
    budget = parse_kv_budget(rt.kv_budget)
    flat = Transformer.spec_for(cfg, rt.replace(kv_budget=None))
    csa = [i for i in range(cfg.n_layers) if cfg.compress_ratios[i] == 4]
    if not csa:
        raise ConfigError("kv_budget: this model has no CSA (ratio-4) layers, the only cache that is tiered")
    tokens = rt.max_seq_len // 4
    max_pages = -(-tokens // PAGE_BLOCK)
    tiered = {f"layers.{i}.attn.entries" for i in csa}
    B = rt.max_batch_size
    hot = sum(s.batch_bytes(B) for s in flat if s.name not in tiered) + 2 * len(csa) * B * max_pages * 4
    group = len(csa) * PAGE_BLOCK * TOKEN_BYTES
    most = B * max_pages
    min_pages = min(most, B * (1 + len(csa) * cfg.index_topk))
    if budget.device is UNBOUNDED:
        return TierPlan(hot, group, len(csa), max_pages, most, min_pages)
    pages = min(most, max(0, budget.device - hot) // group)
    if pages < min_pages:
        raise ConfigError(
            f"kv_budget: device={budget.device / 2 ** 20:.2f}MiB is too small: the always-hot state of "
            f"{B} row(s) (window rings, HCA entries, indexer keys, compressor blocks, page tables) takes "
            f"{hot / 2 ** 20:.2f} MiB and one decode step may read {min_pages} page group(s) of "
            f"{group / 1024:.0f} KiB (each row's newest page and the top-{cfg.index_topk} pages of "
            f"{len(csa)} CSA layers): give at least device={-(-(hot + min_pages * group) // 2 ** 20)}MiB")
    return TierPlan(hot, group, len(csa), max_pages, pages, min_pages)
