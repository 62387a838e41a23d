"""`ascend-v4 inspect PRESET|CONFIG|CHECKPOINT`: parameters, layer types, weight memory, Engram tables."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, Tuple

import click

from ascend_v4.config import ConfigError, ModelConfig, load_config
from ascend_v4.params import count_parameters, weight_memory

ACTIVE_NOTE = ("main model per token: all non-routed-expert weights + head + n_activated of "
               "n_routed routed experts; embedding (row lookup) and MTP excluded")
TOTAL_NOTE = "main model incl. embedding and head; MTP block excluded (reported separately)"


def resolve(target: str) -> Tuple[ModelConfig, str, str]:
    """(config, weight format, what it is) for a preset name, config file or checkpoint folder."""
    if os.path.isdir(target) and glob.glob(os.path.join(target, "*.safetensors")):
        from ascend_v4.checkpoint import CheckpointError, open_checkpoint
        try:
            ckpt = open_checkpoint(target)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from None
        return ckpt.config, ckpt.weight_format, f"checkpoint ({ckpt.layout} layout)"
    try:
        cfg = load_config(target)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    kind = "config" if os.path.exists(target) else "preset"
    return cfg, cfg.dtype, kind


def layer_rows(cfg: ModelConfig):
    """One (block, attention, moe) row per block, MTP blocks last."""
    for i, r in enumerate(cfg.compress_ratios):
        mtp = i >= cfg.n_layers
        attn = "window" if r == 0 else ("CSA ratio 4 + indexer" if r == 4 else f"HCA ratio {r}")
        moe = "hash-routed MoE (tid2eid)" if (i < cfg.n_hash_layers and not mtp) else "score-routed MoE"
        yield (f"mtp.{i - cfg.n_layers}" if mtp else str(i)), attn, moe


def report(target: str) -> Dict[str, Any]:
    cfg, fmt, kind = resolve(target)
    counts = count_parameters(cfg)
    return {
        "target": target, "kind": kind, "name": cfg.name, "weight_format": fmt,
        "expert_format": cfg.quantization.get("expert") or (cfg.routed_expert_dtype if fmt == "fp8" else "bf16"),
        "quantization": dict(cfg.quantization),        # converted checkpoints: role -> format
        "parameters": {**counts.to_dict(), "total_note": TOTAL_NOTE, "active_note": ACTIVE_NOTE},
        "layers": [{"block": b, "attention": a, "moe": m} for b, a, m in layer_rows(cfg)],
        "weight_memory_bytes": weight_memory(cfg, fmt),
        "engram": engram_report(cfg),
    }


def engram_report(cfg: ModelConfig):
    """Engram tables per layer (host memory or a memory-mapped file; not in weight memory), or None."""
    from ascend_v4.engram import geometry
    geo = geometry(cfg)
    if geo is None:
        return None
    return {"layers": list(geo.layer_ids), "orders": list(range(2, geo.max_ngram + 1)),
            "heads_per_order": geo.n_heads, "head_dim": geo.head_dim, "table_rows": list(geo.primes),
            "row_bytes": geo.row_bytes, "bytes_per_layer": geo.table_bytes,
            "total_bytes": len(geo.layer_ids) * geo.table_bytes}


def _b(n: float) -> str:
    return f"{n / 1e12:.3f}T" if n >= 1e12 else f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.3f}M"


def _gb(n: int) -> str:
    return f"{n / 1e9:10.3f} GB" if n >= 1e7 else f"{n / 1e6:10.3f} MB"


def render(rep: Dict[str, Any]) -> str:
    p, mem = rep["parameters"], rep["weight_memory_bytes"]
    lines = [f"{rep['name']} ({rep['kind']}: {rep['target']})",
             f"parameters: total {_b(p['total'])}  [{TOTAL_NOTE}]",
             f"            active per token {_b(p['active'])}  [{ACTIVE_NOTE}]",
             f"            MTP block {_b(p['mtp'])}, embedding {_b(p['embed'])}, head {_b(p['head'])}, "
             f"routed experts {_b(p['routed_experts'])}",
             f"weight memory ({rep['weight_format']} checkpoint, experts {rep['expert_format']}"
             + "".join(f", {r} {f}" for r, f in sorted(rep.get("quantization", {}).items()))
             + ", scales included, MTP included):"]
    for k in ("fp8", "fp4", "mxfp8", "mxfp4", "int8", "int4", "bf16", "fp32", "int"):
        if mem.get(k):
            lines.append(f"  {k.upper() if k != 'int' else 'INT32':6s}{_gb(mem[k])}")
    lines.append(f"  total {_gb(mem['total'])} ({mem['total'] / 2**30:.2f} GiB)")
    e = rep.get("engram")
    if e:
        lines.append(f"engram tables (host memory or memory-mapped; FP8 rows + ue8m0 scales): "
                     f"{_gb(e['total_bytes']).strip()} = {len(e['layers'])} layers x {_gb(e['bytes_per_layer']).strip()}")
        lines.append(f"  layers {e['layers']}, orders {e['orders']}, {e['heads_per_order']} heads per order, "
                     f"rows of {e['head_dim']} values ({e['row_bytes']} bytes), table rows {e['table_rows']}")
    lines.append("layers:")
    for row in rep["layers"]:
        lines.append(f"  {row['block']:>6s}  {row['attention']:22s} {row['moe']}")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("target", metavar="PRESET|CONFIG|CHECKPOINT")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def command(target: str, as_json: bool):
    """Parameters (total, active per token), per-layer attention/MoE type, weight memory."""
    rep = report(target)
    click.echo(json.dumps(rep, indent=2) if as_json else render(rep))
