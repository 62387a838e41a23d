"""Published deployments the planner's model is checked against (tests/test_planner.py).

Each case fixes the published layout (ranks, batch, context, formats, MTP) and compares the
roofline prediction with the published figure. Conventions: a 910C chip is two ranks; the
published throughput is per chip and equals (sequences per chip) / TPOT, so a decode step of
`draft` drafts with mean `accept` accepted tokens lasts TPOT * (1 + accept).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from . import calibration as cal
from .catalogue import load_cluster
from .memory import Layout
from .model_stats import v4_stats
from .reference_models import r1_stats
from .roofline import decode_step, prefill_token_seconds


@dataclass
class Case:
    name: str
    source: str
    phase: str                  # decode | prefill
    model: Callable
    cluster: str
    npus: int
    layout: Layout
    seqs_per_rank: int          # decode: sequences per rank (DP group of one rank)
    ctx: int
    published_tokens_per_npu: float
    published_tpot_ms: float = 0.0
    note: str = ""


def _v4(name):
    def build():
        from ascend_v4.config import load_config
        return v4_stats(load_config(name))
    return build


CASES: List[Case] = [
    Case("CloudMatrix-Infer DeepSeek-R1 decode",
         "Zuo et al., arXiv 2506.12708: 1,943 tokens/s/NPU at TPOT 49.4 ms (<50 ms), batch 96 "
         "per NPU, 4K KV, EP320 on 160 NPUs, INT8 W8A8",
         "decode", r1_stats, "cloudmatrix384", 160,
         Layout(ranks=320, scheme="w8a8", cache="bf16", draft=1, accept=0.7, redundant=32,
                head_tp=16), 48, 4096, 1943.0, 49.4,
         "EP320 = 256 routed + 32 redundant + 32 shared-expert ranks in the paper; we spread "
         "288 routed slots over 320 ranks. MTP assumed on with 0.7 accepted (not confirmed)."),
    Case("CloudMatrix-Infer DeepSeek-R1 prefill",
         "arXiv 2506.12708: 6,688 tokens/s/NPU (perfect EPLB; 5,655 measured default), 4K "
         "prompts, EP32 on 16 NPUs, INT8",
         "prefill", r1_stats, "cloudmatrix384", 16,
         Layout(ranks=32, scheme="w8a8", cache="bf16", draft=0, redundant=0, head_tp=16),
         0, 4096, 6688.0),
    Case("Huawei CANN recipe DeepSeek-V4-Flash decode, Atlas A3",
         "cann-recipes-infer docs/models/deepseek-v4/deepseek_v4_inference_guide.md: 64 chips, "
         "global batch 8192, 8K sequences, W8A8C16, MTP1 (0.7 accepted): TPOT 29.17 ms, "
         "4,388 tokens/chip/s",
         "decode", _v4("flash"), "atlas-a3-superpod", 64,
         Layout(ranks=128, scheme="w8a8", cache="bf16", draft=1, accept=0.7, redundant=0,
                head_tp=16), 64, 8192, 4388.0, 29.17),
    Case("Huawei CANN recipe DeepSeek-V4-Flash decode, Ascend 950DT",
         "same guide, 950DT table: 16 chips, global batch 256, 8K, Hybrid MXFP8-MXFP4, MTP3 "
         "(1.44 accepted): TPOT 9.84 ms, 1,625 tokens/chip/s",
         "decode", _v4("flash"), "atlas-950-superpod", 16,
         Layout(ranks=16, scheme="native", cache="fp8", draft=3, accept=1.44, redundant=0,
                head_tp=8), 16, 8192, 1625.31, 9.84),
]


def run_case(case: Case) -> Dict[str, float]:
    """Predicted vs published for one case (roofline only; see calibration for derating)."""
    stats = case.model()
    cluster = load_cluster(case.cluster).restrict(case.npus)
    dies = cluster.npu.dies
    if case.phase == "decode":
        step = decode_step(stats, cluster, case.layout, case.seqs_per_rank, case.ctx)
        pred = step.tokens_per_s_per_rank * dies
        out = {"predicted_tpot_ms": step.tpot * 1e3, "published_tpot_ms": case.published_tpot_ms,
               "bound": step.bound}
    else:
        step = prefill_token_seconds(stats, cluster, case.layout, case.ctx)
        pred = step.tokens_per_s_per_rank * dies
        out = {"bound": step.bound}
    derate = cal.eff(f"{case.phase}_software")
    out.update({"case": case.name, "predicted_tokens_per_npu": pred,
                "published_tokens_per_npu": case.published_tokens_per_npu,
                "ratio": pred / case.published_tokens_per_npu,
                "derated_tokens_per_npu": pred * derate,
                "derated_ratio": pred * derate / case.published_tokens_per_npu})
    if case.phase == "decode":
        out["derated_tpot_ms"] = out["predicted_tpot_ms"] / derate
    return out


def run_all() -> List[Dict[str, float]]:
    return [run_case(c) for c in CASES]


def table() -> str:
    """Markdown table: roofline and derated predictions against the published figures."""
    rows = ["| case | published tok/s/NPU | roofline | ratio | derated | ratio | "
            "published TPOT | derated TPOT | bound |", "|---" * 9 + "|"]
    for r in run_all():
        tp = (f"{r['published_tpot_ms']:.2f} ms | {r['derated_tpot_ms']:.2f} ms"
              if "derated_tpot_ms" in r else "- | -")
        rows.append(f"| {r['case']} | {r['published_tokens_per_npu']:.0f} | "
                    f"{r['predicted_tokens_per_npu']:.0f} | {r['ratio']:.2f} | "
                    f"{r['derated_tokens_per_npu']:.0f} | {r['derated_ratio']:.2f} | {tp} | "
                    f"{r['bound']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
