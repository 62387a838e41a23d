"""`ascend-v4 parity`: MindSpore vs onnxruntime vs the numpy oracle on a compiled artifact folder;
with `--against CHECKPOINT`, a converted checkpoint folder vs its official-format source (tools/convert/verify)."""
from __future__ import annotations

import json
import os
import sys

import click

from tools.errors import user_errors


@click.command("parity")
@click.argument("folder")
@click.option("--steps", default=16, show_default=True, help="Decode steps after the prefill.")
@click.option("--bucket", default=None, help="Bucket to check (BATCHxPROMPT_LEN; default: the first).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random prompt.")
@click.option("--custom-ops", is_flag=True,
              help="Run MindSpore with the AscendC kernels' CPU twins (float32; states not compared).")
@click.option("--tolerances", default=None, help="Tolerance YAML (default graph_compile/tolerances.yaml).")
@click.option("--report", "report_path", default=None,
              help="JSON report path (default FOLDER/parity_report.json).")
@click.option("--against", default=None,
              help="FOLDER is an `ascend-v4 convert` output: verify it against this official-format checkpoint.")
@click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Compute dtype of the --against runs.")
def command(folder, steps, bucket, seed, custom_ops, tolerances, report_path, against, precision):
    """Check a compiled folder (or a converted one, --against); exit code 1 names the first diverging layer."""
    if against:
        from tools.cmd_convert import run_verify
        from tools.convert.writer import DESCRIPTION
        try:
            with open(os.path.join(folder, DESCRIPTION), encoding="utf-8") as fh:
                scheme = json.load(fh)["scheme"]
        except (OSError, ValueError, KeyError) as exc:
            raise click.ClickException(f"{folder}: not an `ascend-v4 convert` output ({DESCRIPTION}: {exc})")
        if not run_verify(folder, against, scheme, precision):
            sys.exit(1)
        return
    with user_errors():
        from graph_compile.artifacts import ArtifactError
        from graph_compile.metrics import load_tolerances
        from graph_compile.parity import ParityError, format_table, run_parity
        try:
            tol = load_tolerances(tolerances) if tolerances else None
            report = run_parity(folder, steps=steps, bucket=bucket, seed=seed, tolerances=tol,
                                custom_ops=custom_ops)
        except (ArtifactError, ParityError) as exc:
            raise click.ClickException(str(exc)) from None
    path = report_path or os.path.join(folder, "parity_report.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report.to_dict(), f, indent=1)
    os.replace(tmp, path)
    click.echo(format_table(report))
    click.echo(f"report: {path}")
    if not report.passed:
        sys.exit(1)
