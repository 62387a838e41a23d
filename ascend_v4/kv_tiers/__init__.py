"""Tiered FP8 KV cache: the CSA layers' MODEL1 compressed entries in a device tier (the graph's page
pool), host memory and a disk file, under a budget per tier (budget.py: `--kv-budget`), moved by
the tier manager (manager.py) around each Model call; the host and disk stores are store.py."""
from ascend_v4.kv_tiers.budget import KvBudget, parse_kv_budget, tier_plan  # noqa: F401
