"""`ascend-v4 socs`: the per-SoC feature matrix (UB, cores, vector / cube dtypes, formats) with sources."""
from __future__ import annotations

import json
from typing import Dict, List

import click

FIELDS = (("ub_bytes", "UB per vector core (bytes)"), ("cube_cores", "cube cores (AIC)"),
          ("vector_cores", "vector cores (AIV)"), ("vector_dtypes", "vector unit dtypes"),
          ("cube_dtypes", "cube unit inputs"), ("default_weights", "default --weights"),
          ("runs_weights", "--weights it runs"), ("kv_caches", "KV cache (indexer cache)"))


DERIVED = "derived: the schemes (tools/deploy/model_stats.SCHEMES) whose matmul inputs the cube unit has"


def matrix() -> List[Dict[str, object]]:
    """One row per SoC profile (custom_ops/runtime/soc_profiles.py), JSON-friendly."""
    from custom_ops.runtime.soc_profiles import PROFILES
    from tools.deploy.formats import SCHEME_FORMATS
    return [p.matrix(SCHEME_FORMATS) for p in PROFILES.values()]


def _cell(row: Dict[str, object], key: str) -> str:
    v = row[key]
    if key == "kv_caches":
        return ", ".join(f"{k} ({i['indexer_cache']})" for k, i in v.items())
    return ", ".join(v) if isinstance(v, list) else str(v)


def render(rows: List[Dict[str, object]], sources: bool) -> str:
    lines = []
    for row in rows:
        lines.append(f"{row['name']}  [{row['product']}; also: {', '.join(row['aliases'])}]")
        for key, label in FIELDS:
            lines.append(f"  {label:28s} {_cell(row, key)}")
            if sources:
                lines.append(f"  {'':28s}   source: {row['sources'].get(key, DERIVED)}")
    if not sources:
        lines.append("(--sources prints the public source of each fact, or 'assumed')")
    return "\n".join(lines)


@click.command("socs")
@click.option("--sources", is_flag=True, help="print the source of every fact under it")
@click.option("--json", "as_json", is_flag=True, help="print the matrix as JSON (sources included)")
def command(sources: bool, as_json: bool):
    """SoC profiles: unified buffer, cores, vector/cube data types and the formats each runs."""
    rows = matrix()
    click.echo(json.dumps(rows, indent=1) if as_json else render(rows, sources))
