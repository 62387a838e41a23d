"""Parameter counts and weight memory, computed from the checkpoint schema.

Conventions (the V3/V4 release convention; both presets land on the published figures):
- A parameter is one logical weight value: scales and the integer `tid2eid` tables are not
  parameters (their bytes do count as weight memory). An FP4 byte holds two parameters.
- `total`: the main model, embedding and head included, the MTP block excluded (as the
  published 284B / 1.6T). `mtp` is reported separately (it shares embed and head).
- `active` (per token, main model): every non-routed-expert weight (attention, compressors,
  indexers, mHC, norms, gates, shared experts) + the head + n_activated_experts of the
  n_routed_experts routed experts in every layer. The embedding table is EXCLUDED: a token
  reads one row of it, no matmul.
- Weight memory: bytes of every stored tensor of the checkpoint (MTP included), grouped by
  format, each format's scales counted with it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional

from ascend_v4.checkpoint.schema import KINDS, checkpoint_schema, expert_index
from ascend_v4.config import ModelConfig


@dataclass
class ParamCounts:
    total: int              # main model (embed + head included, MTP excluded)
    active: int             # per token, main model, embedding excluded
    mtp: int                # MTP block(s), shared embed/head not counted again
    embed: int
    head: int
    routed_experts: int     # all routed experts of the main model
    active_routed: float    # n_activated / n_routed of them

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def count_parameters(cfg: ModelConfig) -> ParamCounts:
    """Total and per-token active parameter counts of `cfg` (conventions: module docstring)."""
    schema = checkpoint_schema(cfg, "fp8")
    main = mtp = routed = 0
    for name, spec in schema.items():
        if spec.is_scale or spec.kind == "int":
            continue
        if name.startswith("mtp."):
            mtp += spec.numel
            continue
        main += spec.numel
        if expert_index(name) is not None:
            routed += spec.numel
    embed = schema["embed.weight"].numel
    head = schema["head.weight"].numel
    act_routed = routed * cfg.n_activated_experts / cfg.n_routed_experts
    active = main - embed - routed + round(act_routed)
    return ParamCounts(total=main, active=active, mtp=mtp, embed=embed, head=head,
                       routed_experts=routed, active_routed=act_routed)


def weight_memory(cfg: ModelConfig, weight_format: Optional[str] = None) -> Dict[str, int]:
    """Bytes of every stored tensor by format ('fp8', 'fp4', 'bf16', 'fp32', 'int', 'total')."""
    schema = checkpoint_schema(cfg, weight_format or cfg.dtype)
    out = {k: 0 for k in KINDS}
    for spec in schema.values():
        out[spec.kind] += spec.nbytes
    out["total"] = sum(out[k] for k in KINDS)
    return out


def count_params(cfg: ModelConfig) -> Dict[str, float]:
    """`count_parameters(cfg)` as a dict (total, active, mtp, embed, head, routed_experts, ...)."""
    return count_parameters(cfg).to_dict()
