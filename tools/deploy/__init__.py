"""Deployment planner for DeepSeek-V4 on Ascend clusters (`ascend-v4 plan`).

Modules: `units` (flag parsing), `catalogue` (hardware YAML), `model_stats` (parameter counts,
weight bytes, KV cache and FLOPs from a ModelConfig), `reference_models` (planner-side
DeepSeek-R1/V3 description for validation), `calibration` (achievable fractions of peak),
`memory` (per-rank budget), `roofline` (step-time model), `placement` (experts incl. redundant
copies), `planner` (search + infeasibility errors), `artifacts` (rank table, msrun scripts),
`validation` (published deployments).
"""


class PlanError(ValueError):
    """A planning request is invalid or infeasible; the message is one sentence with numbers."""
