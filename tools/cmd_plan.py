"""`ascend-v4 plan`: size a prefill/decode deployment of a V4 model on an Ascend cluster."""
from __future__ import annotations

import json
import os
import shlex

import click

from tools.deploy import PlanError
from tools.deploy.formats import PROFILES, defaults_help
from tools.deploy.units import fmt_bytes, fmt_tokens, parse_rate, parse_time, parse_tokens


def _fixed_summary(p: dict, tpot_target) -> str:
    m = p["memory_per_rank"]
    lines = [
        f"model {p['model']} on {p['chips']} x {p['npu']} ({p['ranks']} ranks) of {p['cluster']}: "
        f"SoC {p['soc']}, weights {p['weights']}, KV cache {p['kv_cache']} (indexer "
        f"{p['indexer_cache']}), MTP {p['mtp_draft']} "
        f"({p['mtp_accept']:.2f} accepted)",
        f"batch {p['batch']} sequences at {fmt_tokens(p['context'])} context: attention DP"
        f"{p['attention_dp']} x TP{p['attention_tp']} ({p['sequences_per_dp_group']} per DP group), "
        f"EP{p['expert_parallel']} ({p['expert_slots_per_rank']} expert slots/rank)",
        f"  TPOT {p['tpot_ms']:.2f} ms (step {p['step_ms']:.2f} ms; roofline "
        f"{p['roofline_tpot_ms']:.2f} ms), {p['tokens_per_s_per_chip']:.0f} tokens/s per chip, "
        f"{p['tokens_per_s_total']:.0f} in total, bound by {p['bound']}",
        f"  TTFT {p['ttft_s']:.2f} s for one {fmt_tokens(p['context'])} prompt on these chips "
        f"(ideal context parallel, {p['prefill_tokens_per_s_per_chip']:.0f} prompt tokens/s per "
        f"chip, bound by {p['prefill_bound']})",
        f"  per rank: weights {fmt_bytes(m['weights'])}, KV {fmt_bytes(m['kv_cache'])}, "
        f"activations {fmt_bytes(m['activations'])}, HCCL buffers {fmt_bytes(m['comm_buffers'])}, "
        f"reserved {fmt_bytes(m['runtime_reserved'])}: {fmt_bytes(m['total'])} of "
        f"{fmt_bytes(m['capacity'])} (memory allows {p['max_batch_by_memory']} sequences)",
    ]
    if tpot_target is not None:
        ok = p["tpot_ms"] <= tpot_target * 1e3
        lines.append(f"  {'meets' if ok else 'misses'} the {tpot_target * 1e3:.1f} ms TPOT target")
    return "\n".join(lines)


def _summary(p: dict) -> str:
    d, f, req = p["decode"], p["prefill"], p["request"]
    m, kv = d["memory_per_rank"], p["kv_cache"]["per_sequence"]
    params = p["model"]["params"]
    lines = [
        f"model {p['model']['name']}: {params['total'] / 1e9:.1f}B params, "
        f"{params['active'] / 1e9:.1f}B active; SoC {req['soc']}: weights {req['weights']}, KV cache "
        f"{req['kv_cache']} (indexer {req['indexer_cache']})",
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
@click.option("--tpot", default=None, help="time per output token target [default: 50ms when "
              "searching; with --chips/--batch only checked]")
@click.option("--chips", default=None, type=click.IntRange(1), help="fixed deployment: this many "
              "chips (whole nodes) as one instance; needs --batch")
@click.option("--batch", default=None, type=click.IntRange(1), help="fixed deployment: global "
              "sequences in flight; needs --chips")
@click.option("--attention-tp", default=1, show_default=True, type=click.IntRange(1, 16),
              help="fixed deployment: attention tensor-parallel degree")
@click.option("--prefill-throughput", default=None, help="prompt tokens/s to serve, e.g. 200k")
@click.option("--soc", default=None, help=f"SoC profile ({' | '.join(PROFILES)}, or a CANN name): picks the "
              "default formats and refuses ones it cannot run [default: the cluster chip's; `ascend-v4 socs` "
              "lists them]")
@click.option("--weights", default=None, help="weight scheme [default of each SoC, of the ones it runs: "
              f"{defaults_help('weights')}]")
@click.option("--kv-cache", default=None, help="KV cache format [default of each SoC, of the ones it runs: "
              f"{defaults_help('kv_cache')}]")
@click.option("--mtp", default=1, show_default=True, type=click.IntRange(0, 4), help="MTP draft tokens")
@click.option("--mtp-accept", default=None, type=float, help="mean accepted drafts per step")
@click.option("--redundancy", default=None, type=click.FloatRange(0, 1),
              help="redundant expert copies as a fraction of routed experts [default: 0.125 when "
                   "searching, 0 with --chips/--batch as in the published benchmarks]")
@click.option("--roofline-only", is_flag=True, help="leave out the fitted software terms")
@click.option("--explain", is_flag=True, help="print the decode step by component and resource")
@click.option("--explain-png", default=None, type=click.Path(dir_okay=False),
              help="write the --explain breakdown as stacked bars to this PNG file")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON (bytes in bytes)")
@click.option("--out", default=None, help="write rank tables, launch scripts and settings here")
@click.option("--entry", default="python -m ascend_v4.serve", show_default=True,
              help="what every rank runs, through `ascend-v4 launch`: the server, `ascend-v4 SUB-COMMAND ...` "
                   "or `python SCRIPT.py ...`")
def command(model, cluster, context, tpot, chips, batch, attention_tp, prefill_throughput, soc, weights,
            kv_cache, mtp, mtp_accept, redundancy, roofline_only, explain, explain_png, as_json,
            out, entry):
    """Plan prefill/decode instances, parallel degrees, memory and TPOT for MODEL on CLUSTER;
    with --chips and --batch, predict exactly that deployment instead."""
    from tools.deploy.artifacts import write_artifacts
    from tools.deploy.catalogue import load_cluster
    from tools.deploy.planner import Request, plan
    fixed = chips is not None or batch is not None
    if fixed and (chips is None or batch is None):
        raise click.UsageError("--chips and --batch go together (a fixed deployment needs both)")
    if fixed and (out or prefill_throughput):
        raise click.UsageError("--out and --prefill-throughput belong to the searched plan, not "
                               "to a fixed --chips/--batch deployment")
    if explain_png and not os.path.isdir(os.path.dirname(os.path.abspath(explain_png))):
        raise click.BadParameter(f"folder of {explain_png!r} does not exist",
                                 param_hint="--explain-png")
    try:
        ctx = parse_tokens(context, "--context")
        target = parse_time(tpot, "--tpot") if tpot else None
        if fixed:
            from tools.deploy.fixed import FixedRequest, predict
            result = predict(FixedRequest(model, cluster, chips, batch, ctx, weights, kv_cache,
                                          mtp, mtp_accept, redundancy or 0.0, attention_tp,
                                          roofline_only, soc))
            hidden = result["hidden_comm_ms"]
            table, title = result["explain_ms"], _title(result["model"], f"{chips} x {result['npu']}",
                                                         batch, ctx, result)
        else:
            req = Request(model=model, cluster=cluster, context=ctx,
                          tpot=target if target is not None else 0.05,
                          prefill_throughput=(parse_rate(prefill_throughput)
                                              if prefill_throughput else None),
                          weights=weights, kv_cache=kv_cache, mtp=mtp, mtp_accept=mtp_accept,
                          redundancy=0.125 if redundancy is None else redundancy,
                          roofline_only=roofline_only, soc=soc)
            result = plan(req)
            d = result["decode"]
            table, hidden = d["explain_ms"], d["hidden_comm_ms"]
            title = _title(result["model"]["name"], f"EP{d['expert_parallel']} decode instance of "
                           f"{d['npus_per_instance']} NPUs",
                           d["sequences_per_instance"], ctx, {"tpot_ms": d["tpot_ms"],
                                                              "bound": d["bound"]})
            if out:
                write_artifacts(result, load_cluster(cluster), out, shlex.split(entry))
        if explain_png:
            from tools.deploy.explain import write_png
            write_png(table, explain_png, title, hidden)
    except PlanError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {explain_png}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(_fixed_summary(result, target) if fixed else _summary(result))
        if explain:
            from tools.deploy.explain import text_table
            click.echo(text_table(table, "decode step by component and resource:", hidden))
        if explain_png:
            click.echo(f"explain picture written to {explain_png}")
        if out:
            click.echo(f"artifacts written to {out}")


def _title(model, where, batch, ctx, p) -> str:
    return (f"{model}, {where}, batch {batch}, {fmt_tokens(ctx)} context\nTPOT "
            f"{p['tpot_ms']:.2f} ms, bound by {p['bound']}")
