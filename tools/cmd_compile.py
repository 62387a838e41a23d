"""`ascend-v4 compile`: extend/decode graphs per shape bucket to MindIR and ONNX (graph_compile/)."""
from __future__ import annotations

import click

from custom_ops.runtime.soc_profiles import PROFILES
from tools.errors import user_errors


@click.command("compile")
@click.option("--preset", default=None, help="Preset name (random weights, small presets only).")
@click.option("--checkpoint", "checkpoint", default=None, help="Checkpoint folder to compile.")
@click.option("--format", "formats", default="onnx,mindir", show_default=True,
              help="Comma-separated output formats: onnx, mindir.")
@click.option("--buckets", default="1x8", show_default=True,
              help="Comma-separated BATCHxPROMPT_LEN shape buckets, e.g. 1x8,2x16.")
@click.option("--out", required=True, help="Output folder (written atomically).")
@click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Compute dtype of the graphs (float64 for bit-stable parity runs).")
@click.option("--weight-format", type=click.Choice(["fp8", "bf16"]), default=None,
              help="Weight format of the random weights of --preset (default: the preset's).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights of --preset.")
@click.option("--soc", default="ascend910b", show_default=True,
              help=f"SoC profile the deployment targets ({' | '.join(PROFILES)}, or a CANN name); picks the "
                   "weight / KV / indexer-cache formats recorded in the manifest.")
@click.option("--weight-storage", type=click.Choice(["checkpoint", "float"]), default="checkpoint",
              show_default=True,
              help="checkpoint: weights as the checkpoint stores them (FP8/FP4 codes + ue8m0 scales, bf16), "
                   "dequantised in the graph; float: every weight dequantised to the compute dtype (verification).")
@click.option("--external-data-threshold", default=1 << 30, show_default=True,
              help="Initializer bytes above which the ONNX weights go to an external-data file.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
def command(preset, checkpoint, formats, buckets, out, precision, weight_format, seed, soc,
            weight_storage, external_data_threshold, overwrite):
    """Export extend (BxS: S tokens of one sequence, B-row state) and decode graphs per shape bucket."""
    soc_formats = _soc_formats(soc)
    with user_errors():
        from graph_compile.artifacts import ArtifactError
        from graph_compile.buckets import BucketError
        from graph_compile.compiler import CompileError, compile_model
        try:
            manifest = compile_model(out, buckets, formats, preset=preset, checkpoint=checkpoint,
                                     precision=precision, weight_format=weight_format, seed=seed,
                                     external_threshold=external_data_threshold, overwrite=overwrite,
                                     soc_formats=soc_formats, weight_storage=weight_storage,
                                     log=lambda m: click.echo(m, err=True))
        except (ArtifactError, BucketError, CompileError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"compiled {manifest['model']} ({manifest['weight_format']} weights stored as "
               f"{weight_storage}, {precision}) to {out} in {manifest['compile_seconds']:.1f} s; "
               f"checkpoint {manifest['checkpoint_bytes'] / 1e6:.2f} MB")
    click.echo(f"  SoC {soc_formats['soc']}: weights {soc_formats['weights']}, KV cache "
               f"{soc_formats['kv_cache']}, indexer cache {soc_formats['indexer_cache']}")
    for name, g in manifest["graphs"].items():
        parts = [name]
        if "onnx" in g:
            parts.append(f"{g['onnx']} ({g['onnx_bytes'] / 1e6:.2f} MB; functions: {', '.join(g['functions'])})")
        if "mindir" in g:
            parts.append(f"{g['mindir']} ({g['mindir_bytes'] / 1e6:.2f} MB)")
        click.echo("  " + "  ".join(parts))


def _soc_formats(soc: str) -> dict:
    """The formats the SoC picks (tools/deploy/formats), for the manifest; a bad name lists the known."""
    from custom_ops.runtime.soc_profiles import SocError, get_profile
    from tools.deploy import PlanError
    from tools.deploy.formats import pick
    try:
        return pick(get_profile(soc)).to_dict()
    except (SocError, PlanError) as exc:
        raise click.BadParameter(str(exc), param_hint="--soc") from None
