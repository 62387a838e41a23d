"""`ascend-v4 convert`: an official-format checkpoint -> a SoC's deployment format (tools/convert/)."""
from __future__ import annotations

import json
import os
import sys

import click

from custom_ops.runtime.soc_profiles import PROFILES
from tools.errors import user_errors


def _help_quant() -> str:
    from tools.convert.plan import ALIASES, BUILT
    from tools.deploy.formats import defaults_help
    aliases = ", ".join(f"{a} = {s}" for a, s in ALIASES.items())
    return (f"Weight scheme (default: the SoC's; built: {', '.join(BUILT)}; {aliases}): " + defaults_help("weights"))


@click.command("convert")
@click.argument("checkpoint")
@click.option("--soc", required=True, help=f"Target SoC profile ({' | '.join(PROFILES)}, or a CANN name).")
@click.option("--out", required=True, help="New output folder (written atomically; must not exist).")
@click.option("--quant", "scheme", default=None, help=_help_quant())
@click.option("--kv-cache", default=None, help="KV cache format the converted model runs (config.json kv_cache; "
                                               "SoC's default: ascend910b/910_93 bf16 = C16, or int8 = C8; "
                                               "ascend950 fp8).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Run the converted model against the source and hold it to the scheme's tolerances.")
@click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Compute dtype of the verification runs.")
def command(checkpoint, soc, out, scheme, kv_cache, verify, precision):
    """Convert CHECKPOINT for --soc into --out; exit code 1 if the verification fails."""
    with user_errors():
        from tools.convert import ConvertError
        from tools.convert.writer import convert_checkpoint
        try:
            desc = convert_checkpoint(checkpoint, out, soc, scheme, kv_cache,
                                      log=lambda m: click.echo(m, err=True))
        except ConvertError as exc:
            raise click.ClickException(str(exc)) from None
    counts = {}
    for t in desc["tensors"].values():
        counts[t["format"]] = counts.get(t["format"], 0) + 1
    click.echo(f"converted {checkpoint} -> {out}: {desc['soc']} {desc['scheme']} "
               f"({', '.join(f'{n} {f}' for f, n in sorted(counts.items()))}); KV cache {desc['kv_cache']}, "
               f"indexer cache {desc['indexer_cache']}")
    if not verify:
        return
    passed = run_verify(out, checkpoint, desc["scheme"], precision)
    if not passed:
        sys.exit(1)


def run_verify(converted: str, reference: str, scheme: str, precision: str) -> bool:
    """Verify, print the table, write `verify_report.json` into the converted folder; -> passed."""
    with user_errors():
        from tools.convert.verify import verify
        report, _ = verify(converted, reference, scheme, precision)
    click.echo(report.table())
    path = os.path.join(converted, "verify_report.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(report.to_dict(), fh, indent=1)
    os.replace(path + ".tmp", path)
    return report.passed
