"""Runtime options: how a model is run, apart from what it is (ModelConfig = config.json).

max_seq_len and max_batch_size size the decode state; compute_dtype is float32 (float64 for
verification runs); custom_ops runs the AscendC kernels' CPU twins; prefill_chunk is the most
tokens one extend call takes (longer inputs run in chunks). A config file or preset may carry
defaults for the first four (the reference's ModelArgs has max_batch_size / max_seq_len);
`ModelConfig.runtime_defaults` keeps them and `RuntimeConfig.for_model` applies them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

from ascend_v4.config import ConfigError, ModelConfig

RUNTIME_KEYS = ("max_seq_len", "max_batch_size", "compute_dtype", "custom_ops", "prefill_chunk")
COMPUTE_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class RuntimeConfig:
    max_seq_len: int = 4096
    max_batch_size: int = 1
    compute_dtype: str = "float32"
    custom_ops: bool = False
    prefill_chunk: int = 256

    @classmethod
    def for_model(cls, cfg: ModelConfig, **overrides) -> "RuntimeConfig":
        """The config's runtime defaults with `overrides` on top, validated against cfg."""
        unknown = sorted(k for k in overrides if k not in RUNTIME_KEYS)
        if unknown:
            raise ConfigError(f"unknown runtime option(s): {', '.join(unknown)}; runtime options are "
                              f"{', '.join(RUNTIME_KEYS)}")
        values = {**cfg.runtime_defaults, **{k: v for k, v in overrides.items() if v is not None}}
        rt = cls(**values)
        rt.validate(cfg)
        return rt

    def replace(self, **overrides) -> "RuntimeConfig":
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, cfg: ModelConfig) -> None:
        for key in ("max_seq_len", "max_batch_size", "prefill_chunk"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(f"compute_dtype must be float32 or float64, got {self.compute_dtype!r}")
        if not isinstance(self.custom_ops, bool):
            raise ConfigError(f"custom_ops must be true or false, got {self.custom_ops!r}")
        ratio = max([r for r in cfg.compress_ratios if r] or [1])
        if self.max_seq_len % ratio:
            raise ConfigError(f"max_seq_len ({self.max_seq_len}) must be a multiple of every compress ratio")
