"""`ascend-v4 convert`: an official-format checkpoint -> a SoC's deployment format, and its check.

Modules: `plan` (which tensor gets which format: the scheme of `tools/deploy/formats.pick`, roles by
`checkpoint.schema.weight_role`), `writer` (streaming, atomic conversion + quant_config.json),
`verify` (converted vs official model: per-layer hidden streams, logits, top-1, tolerances).
"""


class ConvertError(ValueError):
    """A conversion request is invalid (flags, SoC, output folder) or failed; one clear sentence."""
