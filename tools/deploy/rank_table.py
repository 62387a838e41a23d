"""HCCL rank table checks (version 1.0 layout), shared by `ascend-v4 launch --rank-table` and the
plan's launch scripts (`python -m tools.deploy.rank_table FILE --ranks N`).

    {"version": "1.0", "server_count": "2", "status": "completed",
     "server_list": [{"server_id": "10.0.0.1",
                      "device": [{"device_id": "0", "device_ip": "10.1.0.1", "rank_id": "0"}, ...]},
                     ...]}

A table passes when it is a JSON object of that layout, server_count equals the number of servers,
every device has device_id, device_ip and rank_id, device ids are unique within a server,
device_ips are unique across the table, and the rank ids are exactly 0..N-1. With the job's
expected rank (and server) count the table must also match it. Errors are one line naming the
file and the entry: `rank_table.json: rank_id 3 appears twice (server 0 device 1, server 1
device 0)`. Addresses are not resolved here: HCCL reports unreachable ones itself.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, Optional


class RankTableError(ValueError):
    """The rank table is unusable; the message is one line naming the file and the problem."""


def _int_field(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"{what} {value!r} is not an integer")


def _check(table: Any, expected_ranks: Optional[int], expected_servers: Optional[int]) -> Dict[str, int]:
    if not isinstance(table, dict):
        raise ValueError("the top level is not a JSON object")
    if table.get("version") != "1.0":
        raise ValueError(f"version is {table.get('version')!r}, expected \"1.0\"")
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        raise ValueError("server_list is missing or empty")
    if "server_count" not in table:
        raise ValueError("server_count is missing")
    count = _int_field(table["server_count"], "server_count")
    if count != len(servers):
        raise ValueError(f"server_count is {count} but server_list has {len(servers)} servers")
    if expected_servers is not None and count != expected_servers:
        raise ValueError(f"{count} servers, but the job runs on {expected_servers} nodes")
    rank_at: Dict[int, str] = {}
    ip_at: Dict[str, str] = {}
    for s, server in enumerate(servers):
        if not isinstance(server, dict):
            raise ValueError(f"server {s} is not a JSON object")
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            raise ValueError(f"server {s} has no device list")
        device_ids = set()
        for d, dev in enumerate(devices):
            where = f"server {s} device {d}"
            if not isinstance(dev, dict):
                raise ValueError(f"{where} is not a JSON object")
            for key in ("device_id", "device_ip", "rank_id"):
                if key not in dev:
                    raise ValueError(f"{where} has no {key}")
            device_id = _int_field(dev["device_id"], f"{where}: device_id")
            if device_id in device_ids:
                raise ValueError(f"device_id {device_id} appears twice in server {s}")
            device_ids.add(device_id)
            ip = dev["device_ip"]
            if not isinstance(ip, str) or not ip.strip():
                raise ValueError(f"{where} has an empty device_ip")
            if ip in ip_at:
                raise ValueError(f"device_ip {ip} appears twice ({ip_at[ip]}, {where})")
            ip_at[ip] = where
            rank = _int_field(dev["rank_id"], f"{where}: rank_id")
            if rank in rank_at:
                raise ValueError(f"rank_id {rank} appears twice ({rank_at[rank]}, {where})")
            rank_at[rank] = where
    n = len(rank_at)
    missing = sorted(set(range(n)) - set(rank_at))
    if missing:
        extra = sorted(set(rank_at) - set(range(n)))
        raise ValueError(f"rank ids must be 0..{n - 1}: missing {_few(missing)}, "
                         f"unexpected {_few(extra)}")
    if expected_ranks is not None and n != expected_ranks:
        raise ValueError(f"{n} devices, but the job has {expected_ranks} ranks")
    if expected_ranks is not None and expected_servers:
        per_node = expected_ranks // expected_servers
        for s, server in enumerate(servers):
            if len(server["device"]) != per_node:
                raise ValueError(f"server {s} has {len(server['device'])} devices, but each node "
                                 f"runs {per_node} ranks")
    return {"ranks": n, "servers": count}


def _few(values) -> str:
    text = ", ".join(str(v) for v in values[:5])
    return text + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def check_rank_table(path: str, expected_ranks: Optional[int] = None,
                     expected_servers: Optional[int] = None) -> Dict[str, int]:
    """Validate the rank table at `path`; returns {"ranks": N, "servers": S} or raises
    RankTableError("<path>: <problem>")."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise RankTableError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise RankTableError(f"{path}: not JSON ({exc})") from None
    try:
        return _check(table, expected_ranks, expected_servers)
    except ValueError as exc:
        raise RankTableError(f"{path}: {exc}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy.rank_table",
                                     description="Check an HCCL rank table (version 1.0 layout).")
    parser.add_argument("path")
    parser.add_argument("--ranks", type=int, help="the job's rank count (devices in the table)")
    parser.add_argument("--servers", type=int, help="the job's node count (servers in the table)")
    args = parser.parse_args(argv)
    try:
        info = check_rank_table(args.path, args.ranks, args.servers)
    except RankTableError as exc:
        print(f"rank table check failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.path}: {info['ranks']} ranks on {info['servers']} servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
