"""`ascend-v4 plan`: size a prefill/decode deployment of a V4 model on an Ascend cluster."""
from __future__ import annotations

import json
import shlex

import click

from tools.deploy import PlanError
from tools.deploy.units import fmt_bytes, fmt_tokens, parse_rate, parse_time, parse_tokens


def _summary(p: dict) -> str:
    d, f, req = p["decode"], p["prefill"], p["request"]
    m, kv = d["memory_per_rank"], p["kv_cache"]["per_sequence"]
    params = p["model"]["params"]
    lines = [
        f"model {p['model']['name']}: {params['total'] / 1e9:.1f}B params, "
        f"{params['active'] / 1e9:.1f}B active; weights {req['weights']}, KV cache {req['kv_cache']}",
        f"cluster {p['cluster']['name']}: {p['cluster']['npus']} x {p['cluster']['npu']} "
        f"({p['cluster']['ranks']} ranks); context {fmt_tokens(req['context'])}, "
        f"TPOT target {req['tpot_target_ms']:.1f} ms",
        f"KV cache per sequence: {fmt_bytes(kv['total'])} (window {fmt_bytes(kv['window'])}, "
        f"compressed {fmt_bytes(kv['compressed'])}, indexer {fmt_bytes(kv['indexer'])}, "
        f"compressor state {fmt_bytes(kv['state'])})",
        f"decode: {d['instances']} x {d['npus_per_instance']} NPUs, EP{d['expert_parallel']} "
        f"({d['expert_slots_per_rank']} expert slots/rank, {d['redundant_experts']} redundant), "
        f"attention DP{d['attention_dp']} x TP{d['attention_tp']}",
        f"  batch {d['sequences_per_dp_group']} sequences per DP group (memory allows "
        f"{d['max_batch_by_memory']}), {d['sequences_per_instance']} per instance",
        f"  TPOT {d['tpot_ms']:.1f} ms (roofline {d['roofline_tpot_ms']:.1f} ms), "
        f"{d['tokens_per_s_per_npu']:.0f} tokens/s per NPU, bound by {d['bound']}",
        f"  per rank: weights {fmt_bytes(m['weights'])}, KV {fmt_bytes(m['kv_cache'])}, "
        f"activations {fmt_bytes(m['activations'])}, HCCL buffers {fmt_bytes(m['comm_buffers'])}, "
        f"reserved {fmt_bytes(m['runtime_reserved'])} of {fmt_bytes(m['capacity'])}",
    ]
    if f:
        lines.append(f"prefill: {f['instances']} x {f['npus_per_instance']} NPUs (EP"
                     f"{f['expert_parallel']}, attention TP{f['attention_tp']}), "
                     f"{f['tokens_per_s_per_npu']:.0f} tokens/s per NPU, TTFT "
                     f"{f['ttft_s_ideal_cp']:.2f} s at {fmt_tokens(req['context'])} "
                     f"(ideal context parallel), bound by {f['bound']}")
    else:
        lines.append(f"prefill: colocated with decode ({p['disaggregation']})")
    if p["engram_host_bytes"]:
        lines.append(f"Engram tables in host memory: {fmt_bytes(p['engram_host_bytes'])} per node")
    lines.append(f"unused NPUs: {p['unused_npus']}")
    return "\n".join(lines)


@click.command("plan")
@click.option("--model", required=True, help="flash | pro | a config file/folder | deepseek-r1")
@click.option("--cluster", required=True, help="catalogue name (e.g. cloudmatrix384) or a YAML file")
@click.option("--context", default="128K", show_default=True, help="tokens per request: 128K, 1M")
@click.option("--tpot", default="50ms", show_default=True, help="time per output token target")
@click.option("--prefill-throughput", default=None, help="prompt tokens/s to serve, e.g. 200k")
@click.option("--weights", default=None, help="native | w8a8 | bf16 (default: native with FP8 units, else w8a8)")
@click.option("--kv-cache", default=None, help="fp8 | bf16 (default: fp8 with FP8 units, else bf16)")
@click.option("--mtp", default=1, show_default=True, type=click.IntRange(0, 4), help="MTP draft tokens")
@click.option("--mtp-accept", default=None, type=float, help="mean accepted drafts per step")
@click.option("--redundancy", default=0.125, show_default=True, type=click.FloatRange(0, 1),
              help="redundant expert copies as a fraction of routed experts")
@click.option("--roofline-only", is_flag=True, help="do not derate by the calibrated software efficiency")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON (bytes in bytes)")
@click.option("--out", default=None, help="write rank tables, msrun scripts and settings here")
@click.option("--entry", default="python -m ascend_v4.serve", show_default=True,
              help="worker command the msrun scripts start")
def command(model, cluster, context, tpot, prefill_throughput, weights, kv_cache, mtp,
            mtp_accept, redundancy, roofline_only, as_json, out, entry):
    """Plan prefill/decode instances, parallel degrees, memory and TPOT for MODEL on CLUSTER."""
    from tools.deploy.artifacts import write_artifacts
    from tools.deploy.catalogue import load_cluster
    from tools.deploy.planner import Request, plan
    try:
        req = Request(model=model, cluster=cluster, context=parse_tokens(context, "--context"),
                      tpot=parse_time(tpot, "--tpot"),
                      prefill_throughput=(parse_rate(prefill_throughput)
                                          if prefill_throughput else None),
                      weights=weights, kv_cache=kv_cache, mtp=mtp, mtp_accept=mtp_accept,
                      redundancy=redundancy, roofline_only=roofline_only)
        result = plan(req)
        if out:
            write_artifacts(result, load_cluster(cluster), out, shlex.split(entry))
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(_summary(result))
        if out:
            click.echo(f"artifacts written to {out}")
