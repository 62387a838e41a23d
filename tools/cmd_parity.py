"""`ascend-v4 parity`: MindSpore vs onnxruntime vs the numpy oracle on a compiled artifact folder."""
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
def command(folder, steps, bucket, seed, custom_ops, tolerances, report_path):
    """Check a compiled folder; exit code 1 names the first diverging layer."""
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
