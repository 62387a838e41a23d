"""`ascend-v4 bench`: run benchmark groups (tools/bench/*), write JSON and a PNG plot."""
from __future__ import annotations

import importlib
import json
import os
import tempfile

import click

from tools.bench import GROUPS


def _check_dir(path: str, flag: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise click.BadParameter(f"directory {d} does not exist", param_hint=flag)


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".bench-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@click.command(name="bench")
@click.option("--only", "only", multiple=True, type=click.Choice(sorted(GROUPS)), help="benchmark group(s) to run")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the results as JSON here")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="write a PNG plot here")
@click.option("--quick", is_flag=True, help="small sizes (under about a minute)")
def command(only, json_path, plot_path, quick):
    """Benchmark the custom operators and the model (ratios measured in one run on this machine)."""
    if plot_path and not plot_path.lower().endswith(".png"):
        raise click.BadParameter("the plot file must end in .png", param_hint="--plot")
    for path, flag in ((json_path, "--json"), (plot_path, "--plot")):
        if path:
            _check_dir(path, flag)
    results = {}
    for name in only or sorted(GROUPS):
        results[name] = importlib.import_module(GROUPS[name]).run(quick=quick)
    text = json.dumps(results, indent=2)
    click.echo(text)
    if json_path:
        _atomic_write(json_path, lambda p: open(p, "w").write(text + "\n"))
    if plot_path:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=(14, 4.8 * len(results)), layout="constrained")
        panels = fig.subfigures(len(results), 1) if len(results) > 1 else [fig]
        for panel, (name, res) in zip(panels, results.items()):
            importlib.import_module(GROUPS[name]).plot(res, panel)
        _atomic_write(plot_path, lambda p: fig.savefig(p, format="png", dpi=110))
