"""Deployment planner for DeepSeek-V4 on Ascend clusters (`ascend-v4 plan`).

Modules: `units` (flag parsing), `catalogue` (hardware YAML), `model_stats` (parameter counts,
weight bytes, KV cache and FLOPs from a ModelConfig), `reference_models` (planner-side
DeepSeek-R1/V3 description for validation), `calibration` (achievable fractions of peak, fixed
costs, the two fitted factors), `memory` (per-rank budget), `components` (per-component work of a
decode step), `roofline` (step-time model), `placement` (experts incl. redundant copies),
`planner` (search + infeasibility errors), `fixed` (one fixed deployment), `explain` (step
breakdown table and PNG), `artifacts` (rank table, `ascend-v4 launch` scripts), `validation` (published
deployments).
"""


class PlanError(ValueError):
    """A planning request is invalid or infeasible; the message is one sentence with numbers."""
