"""Deployment artifacts of a plan, written atomically under `--out DIR`:

  plan.json                         the plan (byte figures in bytes)
  rank_table_<role>_<i>.json        HCCL rank table per instance (server_list / device /
                                    rank_id / device_ip), version 1.0 layout
  parallel_<role>_<i>.json          MindSpore parallel context + ascend_v4 layout (DP/TP/EP,
                                    expert placement)
  launch_<role>_<i>_node<k>.sh      one script per node of each instance: exports the HCCL
                                    variables (each overridable from the environment), then runs
                                    `ascend-v4 launch` (msrun), which checks the rank table first

Every value that reaches a shell script goes through shlex.quote, so a hostile cluster file
(e.g. a host_ip of `1.2.3.4; rm -rf /`) stays a literal argument. Host and device IPs come from
the cluster file's `hosts:`; without it they are IPv6 documentation addresses (2001:db8::/32,
RFC 3849) that must be replaced before launch.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from typing import Any, Dict, List

from . import PlanError

PLACEHOLDER_NOTE = ("placeholder addresses from the IPv6 documentation prefix 2001:db8::/32 "
                    "(RFC 3849): add `hosts:` to the cluster file before launching")


def _hosts(cluster) -> List[Dict[str, Any]]:
    if cluster.hosts:
        return cluster.hosts
    rpn = cluster.ranks_per_node
    return [{"host_ip": f"2001:db8:0:{n:x}::1",
             "device_ips": [f"2001:db8:1:{n:x}::{d + 1:x}" for d in range(rpn)]}
            for n in range(cluster.nodes)]


def _instances(plan: Dict[str, Any], cluster) -> List[Dict[str, Any]]:
    """Instances with their node ranges: prefill first, then decode, in whole nodes."""
    rpn = cluster.ranks_per_node
    out, node = [], 0
    roles = [("prefill", plan.get("prefill")), ("decode", plan["decode"])]
    for role, part in roles:
        if not part:
            continue
        nodes = max(1, part["ranks"] // rpn)
        for i in range(part["instances"]):
            if node + nodes > cluster.nodes:
                raise PlanError(f"plan needs more nodes than {cluster.name} has ({cluster.nodes})")
            out.append({"role": role, "index": i, "nodes": list(range(node, node + nodes)),
                        "ranks": part["ranks"], "part": part})
            node += nodes if plan["disaggregation"] != "colocated (single node)" else 0
    return out


def rank_table(inst: Dict[str, Any], cluster) -> Dict[str, Any]:
    hosts = _hosts(cluster)
    rpn = min(cluster.ranks_per_node, inst["ranks"])
    servers, rank = [], 0
    for n in inst["nodes"]:
        devices = []
        for d in range(rpn):
            devices.append({"device_id": str(d), "device_ip": hosts[n]["device_ips"][d],
                            "rank_id": str(rank)})
            rank += 1
        servers.append({"server_id": hosts[n]["host_ip"], "device": devices})
    return {"version": "1.0", "server_count": str(len(servers)), "server_list": servers,
            "status": "completed"}


def parallel_settings(inst: Dict[str, Any], plan: Dict[str, Any]) -> Dict[str, Any]:
    part = inst["part"]
    req = plan["request"]
    return {
        "mindspore": {"parallel_mode": "semi_auto_parallel", "device_num": inst["ranks"],
                      "enable_alltoall": True, "full_batch": False,
                      "search_mode": "sharding_propagation"},
        "ascend_v4": {"role": inst["role"], "instance": inst["index"],
                      "attention_tp": part.get("attention_tp", 1),
                      "attention_dp": inst["ranks"] // part.get("attention_tp", 1),
                      "expert_parallel": part["expert_parallel"],
                      "context": req["context"], "soc": req["soc"], "weights": req["weights"],
                      "kv_cache": req["kv_cache"], "indexer_cache": req["indexer_cache"],
                      "mtp_draft": req["mtp_draft"] if inst["role"] == "decode" else 0,
                      "batch_per_rank": part.get("batch_per_rank"),
                      "expert_placement": part.get("expert_placement")},
    }


def launch_command(entry: List[str]) -> List[str]:
    """The plan's --entry as what `ascend-v4 launch` runs after `--`: the server entry
    (`python -m ascend_v4.serve` or `ascend-v4 serve`) becomes the `serve` sub-command, any other
    `ascend-v4 <sub-command>` stays one, `python SCRIPT.py ARGS` runs the script."""
    entry = list(entry)
    if entry[:3] == ["python", "-m", "ascend_v4.serve"]:
        return ["serve"] + entry[3:]
    if entry[:1] == ["ascend-v4"] and len(entry) > 1:
        return entry[1:]
    if entry[:1] == ["python"] and len(entry) > 1 and entry[1].endswith(".py"):
        return entry[1:]
    raise PlanError(f"--entry {' '.join(entry)!r}: give `python -m ascend_v4.serve ...`, "
                    "`ascend-v4 SUB-COMMAND ...` or `python SCRIPT.py ...` (run through `ascend-v4 launch`)")


def launch_script(inst, node_rank: int, cluster, files: Dict[str, str], entry: List[str],
                  hccl_buffsize_mb: int, port: int) -> str:
    """One node's script: checks its inputs, exports the HCCL settings, then execs `ascend-v4
    launch` (msrun underneath), which checks the rank table before any rank starts, names the
    first failing rank and ends the whole job on a failure (tools/launcher.py)."""
    hosts = _hosts(cluster)
    q = shlex.quote
    master = hosts[inst["nodes"][0]]["host_ip"]
    local = min(cluster.ranks_per_node, inst["ranks"])
    argv = ["ascend-v4", "launch", f"--nproc={local}", f"--nnodes={len(inst['nodes'])}",
            f"--node-rank={node_rank}", f"--master-addr={master}", f"--master-port={port}",
            f"--rank-table={files['rank_table']}", f"--log-dir=logs/{inst['role']}_{inst['index']}",
            "--"] + launch_command(entry) + ["--role", inst["role"], "--parallel-config", files["parallel"]]
    lines = ["#!/usr/bin/env bash",
             f"# ascend-v4 plan: {inst['role']} instance {inst['index']}, node {node_rank} "
             f"of {len(inst['nodes'])}",
             "set -euo pipefail",
             'cd "$(dirname "$0")"',
             ': "${ASCEND_V4_CHECKPOINT:?set ASCEND_V4_CHECKPOINT to the checkpoint folder to serve}"',
             "export ASCEND_V4_CHECKPOINT",
             "# HCCL settings; a value already in the environment wins",
             "# seconds a rank waits for its peers while HCCL sets up links (CANN default 120)",
             ': "${HCCL_CONNECT_TIMEOUT:=120}"',
             "# seconds a collective may wait for its peers before HCCL reports a hang (CANN default 1836)",
             ': "${HCCL_EXEC_TIMEOUT:=1836}"',
             "# MB of HCCL buffer per communicator, from the plan's memory budget (CANN default 200)",
             f': "${{HCCL_BUFFSIZE:={int(hccl_buffsize_mb)}}}"',
             "# first host port HCCL listens on; it takes a block of ports from here (CANN default 60000)",
             ': "${HCCL_IF_BASE_PORT:=60000}"',
             "export HCCL_CONNECT_TIMEOUT HCCL_EXEC_TIMEOUT HCCL_BUFFSIZE HCCL_IF_BASE_PORT",
             "# launch refuses a malformed rank table (exported as RANK_TABLE_FILE) before any rank starts",
             "exec " + " ".join(q(a) for a in argv), ""]
    return "\n".join(lines)


def write_artifacts(plan: Dict[str, Any], cluster, out_dir: str,
                    entry: List[str] = ("python", "-m", "ascend_v4.serve")) -> List[str]:
    """Write everything into a temporary sibling folder, then rename it to `out_dir`."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise PlanError(f"--out {out_dir}: already exists and is not an empty folder")
    parent = os.path.dirname(out_dir)
    if not os.path.isdir(parent):
        raise PlanError(f"--out {out_dir}: parent folder {parent} does not exist")
    tmp = tempfile.mkdtemp(prefix=".plan-", dir=parent)
    try:
        written = _write_all(plan, cluster, tmp, list(entry))
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _dump(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")


def _write_all(plan, cluster, root: str, entry: List[str]) -> List[str]:
    written = []
    _dump(os.path.join(root, "plan.json"), plan)
    written.append("plan.json")
    for k, inst in enumerate(_instances(plan, cluster)):
        stem = f"{inst['role']}_{inst['index']}"
        files = {"rank_table": f"rank_table_{stem}.json", "parallel": f"parallel_{stem}.json"}
        _dump(os.path.join(root, files["rank_table"]), rank_table(inst, cluster))
        _dump(os.path.join(root, files["parallel"]), parallel_settings(inst, plan))
        written += list(files.values())
        mb = inst["part"]["memory_per_rank"]["hccl_buffsize_mb"]
        for node_rank in range(len(inst["nodes"])):
            name = f"launch_{stem}_node{node_rank}.sh"
            path = os.path.join(root, name)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(launch_script(inst, node_rank, cluster, files, entry, mb, 8118 + k))
            os.chmod(path, 0o755)
            written.append(name)
    if not cluster.hosts:
        with open(os.path.join(root, "README.txt"), "w", encoding="utf-8") as fh:
            fh.write(f"Rank tables use {PLACEHOLDER_NOTE}.\n")
        written.append("README.txt")
    return written
