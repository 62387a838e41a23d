"""Which tensor of a checkpoint gets which format for a SoC and scheme.

The facts come from their owners: the SoC's default scheme and what it can run from
`tools/deploy/formats.pick` (the profiles), each role's format from `model_stats.SCHEMES`, each
tensor's role from `checkpoint.schema.weight_role`. Built conversions: `native` (copy), `bf16`
(every linear dequantised and rounded to bf16), `w8a8` (the scheme's int8 roles as symmetric
per-channel INT8, the rest bf16), `w4a8` (w8a8 with the routed experts as symmetric per-channel
INT4, two per byte) and `mxfp8` (= mxfp8-mxfp4, the 950: MXFP8 linears, the routed
experts MXFP4, the rest bf16). A scheme needing another format is refused by name.
The output config.json carries the SoC's cache formats as runtime defaults (`kv_cache`,
`indexer_cache`), so the loader runs the caches the deployment runs (docs/DESIGN.md 'Cache formats').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ascend_v4.checkpoint.schema import QUANT_FORMATS, ROLES, checkpoint_schema, TensorSpec
from ascend_v4.checkpoint.writer import checkpoint_config
from ascend_v4.config import ModelConfig

from . import ConvertError

BUILT = ("native", "bf16", "w8a8", "w4a8", "mxfp8")
ALIASES = {"mxfp8-mxfp4": "mxfp8"}     # the issue's / recipe's spelling of the 950 hybrid scheme
# the planner's format -> a converted checkpoint's, per scheme: the mxfp8 scheme's FP4 experts are
# MXFP4 (the same bytes; their activations MXFP8 1x32 instead of the release's FP8 1x128)
CONVERTED_AS = {("mxfp8", "fp4"): "mxfp4"}


@dataclass(frozen=True)
class ConvertPlan:
    soc: str
    scheme: str                       # model_stats.SCHEMES key
    kv_cache: str
    indexer_cache: str
    config: ModelConfig               # the converted checkpoint's config.json
    roles: Dict[str, str]             # weight role -> format of the output

    @property
    def copy(self) -> bool:
        return self.scheme == "native"

    def schema(self) -> Dict[str, TensorSpec]:
        """The output's tensors (names as the loader reads them)."""
        return checkpoint_schema(self.config, self.config.dtype)


def make_plan(source: ModelConfig, soc: str, scheme: Optional[str] = None,
              kv_cache: Optional[str] = None) -> ConvertPlan:
    """The conversion of a checkpoint of config `source` for `soc` (default scheme: the SoC's)."""
    from custom_ops.runtime.soc_profiles import SocError, get_profile
    from tools.deploy import PlanError
    from tools.deploy.formats import pick
    from tools.deploy.model_stats import SCHEMES
    scheme = ALIASES.get(scheme, scheme)
    try:
        formats = pick(get_profile(soc), scheme, kv_cache)
    except (SocError, PlanError) as exc:
        raise ConvertError(str(exc).replace("--weights", "--quant")) from None
    if formats.weights not in BUILT:
        raise ConvertError(f"--quant {formats.weights}: conversion to it is not built yet "
                           f"(built: {', '.join(BUILT)})")
    roles = {role: CONVERTED_AS.get((formats.weights, f), f)
             for role, f in ((r, SCHEMES[formats.weights][r]) for r in ROLES)}
    if formats.weights == "native":
        config = source.replace(kv_cache=formats.kv_cache, indexer_cache=formats.indexer_cache)
    else:
        unbuilt = sorted(f"{r}={f}" for r, f in roles.items() if f not in ("bf16",) + QUANT_FORMATS)
        if unbuilt:
            raise ConvertError(f"--quant {formats.weights}: formats {', '.join(unbuilt)} are not built")
        quantized = {r: f for r, f in roles.items() if f in QUANT_FORMATS}
        config = checkpoint_config(source, "bf16").replace(quantization=quantized, kv_cache=formats.kv_cache,
                                                           indexer_cache=formats.indexer_cache)
    return ConvertPlan(formats.soc, formats.weights, formats.kv_cache, formats.indexer_cache, config, roles)
