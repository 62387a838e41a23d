"""`ascend-v4 launch`: run an ascend-v4 sub-command or a python script on N ranks through msrun
(the logic and the measured msrun behaviour are in tools/launcher.py)."""
from __future__ import annotations

import sys

import click


@click.command("launch", context_settings={"allow_interspersed_args": False})
@click.option("--nproc", type=click.IntRange(min=1), required=True, help="ranks on this node")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="nodes in the job (each runs `launch` with its --node-rank)")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="this node's index; its ranks are node_rank*nproc ... +nproc-1")
@click.option("--master-addr", help="node 0's address [default: 127.0.0.1; needed with --nnodes > 1]")
@click.option("--master-port", type=click.IntRange(1024, 65535),
              help="msrun scheduler port [default: a free port (one node), 8118 (several)]")
@click.option("--rank-table", type=click.Path(dir_okay=False),
              help="HCCL rank table, checked before start and exported as RANK_TABLE_FILE")
@click.option("--log-dir", type=click.Path(file_okay=False),
              help="per-rank logs [default: ./launch_logs/<time>-<pid>]")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="seconds the whole job may run [default: no limit]")
@click.option("--fault-timeout", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True, help="seconds the other ranks get to end after the first failure")
@click.option("--grace", type=click.FloatRange(min=0), default=15.0, show_default=True,
              help="seconds the ranks get to end by themselves after SIGTERM when the job is stopped "
                   "(SIGINT / SIGTERM to launch, --timeout, a failed rank) before SIGKILL; a serving "
                   "rank 0 drains in that time (keep it above serve's --drain-timeout)")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def command(nproc, nnodes, node_rank, master_addr, master_port, rank_table, log_dir, timeout,
            fault_timeout, grace, command):
    """Run COMMAND on NPROC ranks with msrun: `-- generate --preset tiny ...` (any ascend-v4
    sub-command) or `-- script.py ARGS`. Streams rank 0's output, keeps every rank's log, and
    ends the whole job when a rank fails; exits non-zero naming the first failing rank.
    SIGINT / SIGTERM stop the job: SIGTERM to the ranks, which get --grace seconds to end by
    themselves (a serving rank 0 drains, then releases the others), then SIGKILL; exit status
    128 + the signal (143 for SIGTERM)."""
    from tools.launcher import LaunchError, LaunchSpec, LaunchUsageError, launch
    spec = LaunchSpec(nproc=nproc, command=list(command), nnodes=nnodes, node_rank=node_rank,
                      master_addr=master_addr, master_port=master_port, rank_table=rank_table,
                      log_dir=log_dir, timeout=timeout, fault_timeout=fault_timeout,
                      grace=grace)
    try:
        code = launch(spec, out=sys.stdout, err=sys.stderr)
    except LaunchUsageError as exc:
        raise click.UsageError(str(exc)) from None
    except LaunchError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
