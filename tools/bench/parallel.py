"""Expert-parallel benchmark: real msrun jobs through `ascend-v4 launch` (tools/bench/parallel_rank.py
per rank), on this machine's CPU cores.

- tiny, EP 1 / 2 / 4, 8 rows decoding: decode step time, the MoE exchange alone (dispatch +
  combine of one layer at the decode shape, times the MoE layers of a step) and its share of
  the step;
- small (not in --quick), EP 1 / 2 / 4: resident weight bytes per rank against
  (non-expert bytes / TP + expert bytes / EP) taken from the EP1 run, and against the planner's
  per-rank weight memory.
With more ranks than cores (EP4 on 2 cores) the ranks time-share the cores: step times then
include that, which the result's `cores` field records.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANK_SCRIPT = os.path.join(ROOT, "tools", "bench", "parallel_rank.py")


def _job(ep: int, out: str, *args: str) -> list:
    script = [RANK_SCRIPT, "--ep", str(ep), "--out", out, *args]
    env = dict(os.environ, GLOG_v="3",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if ep == 1:
        cmd = [sys.executable, *script]
    else:
        cmd = [sys.executable, "-m", "tools.cli", "launch", "--nproc", str(ep), "--log-dir", out + ".logs",
               "--", *script]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"EP{ep} job failed:\n{proc.stderr[-3000:]}")
    ranks = []
    for r in range(ep):
        with open(f"{out}.rank{r}.json", encoding="utf-8") as fh:
            ranks.append(json.load(fh))
    return ranks


def _resident(rows: list, preset: str) -> list:
    """Per EP: each rank's resident bytes vs the target from the EP1 split, and vs the planner's
    per-rank weight memory (tools/deploy/memory.py, native formats)."""
    from ascend_v4.config import load_config
    from tools.deploy.memory import Layout, weight_bytes_per_rank
    from tools.deploy.model_stats import v4_stats
    stats = v4_stats(load_config(preset))
    base = rows[0]["ranks"][0]
    out = []
    for row in rows:
        ep = row["ep"]
        target = base["other_bytes"] + base["expert_bytes"] / ep
        planned = sum(weight_bytes_per_rank(stats, Layout(ranks=ep, head_tp=1)).values())
        worst = max(r["resident_bytes"] for r in row["ranks"])
        out.append({"ep": ep, "resident_bytes_per_rank": [r["resident_bytes"] for r in row["ranks"]],
                    "expert_bytes_per_rank": [r["expert_bytes"] for r in row["ranks"]],
                    "target_bytes": target, "worst_over_target": worst / target,
                    "planner_bytes": planned, "worst_over_planner": worst / planned,
                    "load_s": max(r["load_s"] for r in row["ranks"])})
    return out


def run(quick: bool = False) -> dict:
    eps = (1, 2) if quick else (1, 2, 4)
    result = {"cores": os.cpu_count(), "config": {"preset": "tiny", "rows": 8, "steps": 12}}
    with tempfile.TemporaryDirectory(prefix="ascend_v4_bench_parallel_") as tmp:
        tiny = [{"ep": ep, "ranks": _job(ep, os.path.join(tmp, f"tiny_ep{ep}"), "--max-batch", "8")} for ep in eps]
        result["tiny_decode"] = [{
            "ep": row["ep"], "decode_step_s": row["ranks"][0]["decode_step_s"],
            "exchange_per_layer_s": row["ranks"][0]["exchange_per_layer_s"],
            "exchange_per_step_s": row["ranks"][0]["exchange_per_step_s"],
            "exchange_share_of_step": row["ranks"][0]["exchange_per_step_s"] / row["ranks"][0]["decode_step_s"],
        } for row in tiny]
        result["tiny_resident"] = _resident(tiny, "tiny")
        if not quick:
            from ascend_v4.checkpoint import write_random_checkpoint
            from ascend_v4.config import load_config
            ckpt = write_random_checkpoint(load_config("small"), os.path.join(tmp, "small"))
            small = [{"ep": ep, "ranks": _job(ep, os.path.join(tmp, f"small_ep{ep}"), "--model", ckpt,
                                              "--load-only", "--max-batch", "1")} for ep in eps]
            result["small_resident"] = _resident(small, "small")
    return result


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 2)
    rows = result["tiny_decode"]
    xs = range(len(rows))
    ax[0].bar(xs, [r["decode_step_s"] * 1e3 for r in rows], 0.6, label="decode step")
    ax[0].bar(xs, [r["exchange_per_step_s"] * 1e3 for r in rows], 0.6, label="MoE exchange (dispatch + combine)")
    ax[0].set(xticks=list(xs), xticklabels=[f"EP{r['ep']}" for r in rows], ylabel="ms",
              title=f"tiny decode, 8 rows ({result['cores']} cores)")
    ax[0].legend()
    res = result.get("small_resident") or result["tiny_resident"]
    name = "small" if "small_resident" in result else "tiny"
    xs = range(len(res))
    ax[1].bar([x - 0.2 for x in xs], [max(r["resident_bytes_per_rank"]) / 2**20 for r in res], 0.4,
              label="measured (largest rank)")
    ax[1].bar([x + 0.2 for x in xs], [r["target_bytes"] / 2**20 for r in res], 0.4,
              label="non-expert + expert / EP")
    ax[1].set(xticks=list(xs), xticklabels=[f"EP{r['ep']}" for r in res], ylabel="MiB",
              title=f"{name}: resident weight bytes per rank")
    ax[1].legend()
