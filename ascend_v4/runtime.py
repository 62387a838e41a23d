"""Runtime options: how a model is run, apart from what it is (ModelConfig = config.json).

max_seq_len and max_batch_size size the decode state; compute_dtype is float32 (float64 for
verification runs); custom_ops runs the AscendC kernels' CPU twins; prefill_chunk is the most
tokens one extend call takes (longer inputs run in chunks); weight_storage 'float' dequantises
every weight at load (the verification layout); kernels picks fused CPU kernels or composite
primitives for the elementwise chains (ascend_v4/kernels); engram_table 'host' reads Engram tables
into memory, 'disk' memory-maps their files; parallel is this rank's tensor x expert
parallel layout (not a config-file key: `load(tensor_parallel=, expert_parallel=)` sets it). A config file or preset may carry
defaults for the first four (the reference's ModelArgs has max_batch_size / max_seq_len);
`ModelConfig.runtime_defaults` keeps them and `RuntimeConfig.for_model` applies them.
kv_budget ('device=64MiB,host=1GiB[,disk=...]') tiers the CSA layers' FP8 KV cache over device,
host and disk (ascend_v4/kv_tiers; needs custom_ops, the MODEL1 page path); kv_spill_dir is the
folder of the disk tier's file (default: a temporary folder removed at close).
kv_cache / indexer_cache pick the rounding of the cache entries (docs/DESIGN.md 'Cache formats'):
'fp8' / 'fp4' the release's (default), 'bf16' (C16) or 'int8' (C8) KV entries and 'int8' indexer keys
as the 910B/910C recipe stores them; a converted checkpoint's config.json records its SoC's formats.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ascend_v4.config import ConfigError, ModelConfig
from ascend_v4.parallel.layout import SINGLE, ParallelLayout

RUNTIME_KEYS = ("max_seq_len", "max_batch_size", "compute_dtype", "custom_ops", "prefill_chunk",
                "weight_storage", "kernels", "kv_budget", "kv_spill_dir", "engram_table", "kv_cache",
                "indexer_cache")
COMPUTE_DTYPES = ("float32", "float64")
WEIGHT_STORAGE = ("checkpoint", "float")
KERNELS = ("fused", "composite")
ENGRAM_TABLES = ("host", "disk")       # Engram tables read into host memory, or memory-mapped
KV_CACHES = ("fp8", "bf16", "int8")    # KV entry rounding: release FP8 | C16 | C8 (tools/deploy CACHE_FORMATS)
INDEXER_CACHES = ("fp4", "int8")       # indexer key (and query) rounding: release FP4 | per-token INT8
# the AscendC kernels' fixed layout: MODEL1 KV entries of 448 fp8 + 64 rope dims (V4_SPEC 9)
KERNEL_HEAD_DIM, KERNEL_ROPE_DIM = 512, 64


@dataclass(frozen=True)
class RuntimeConfig:
    max_seq_len: int = 4096
    max_batch_size: int = 1
    compute_dtype: str = "float32"
    custom_ops: bool = False
    prefill_chunk: int = 256
    weight_storage: str = "checkpoint"     # 'float': every weight dequantised at load (verification)
    kernels: str = "fused"                 # 'composite': elementwise chains as primitives (ascend_v4/kernels)
    engram_table: str = "host"             # Engram tables: 'host' (read into memory) | 'disk' (memmap)
    parallel: ParallelLayout = SINGLE      # this rank's TP x EP layout (ascend_v4/parallel), set by load()
    kv_budget: Optional[str] = None        # tiered KV cache budget, e.g. 'device=64MiB,host=1GiB'
    kv_spill_dir: Optional[str] = None     # folder of the disk tier's file (default: a temp folder)
    kv_cache: str = "fp8"                  # KV entries: 'fp8' (release) | 'bf16' (C16) | 'int8' (C8)
    indexer_cache: str = "fp4"             # indexer keys and queries: 'fp4' (release) | 'int8'

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
        if self.weight_storage not in WEIGHT_STORAGE:
            raise ConfigError(f"weight_storage must be one of {', '.join(WEIGHT_STORAGE)}, "
                              f"got {self.weight_storage!r}")
        if self.kernels not in KERNELS:
            raise ConfigError(f"kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        if self.engram_table not in ENGRAM_TABLES:
            raise ConfigError(f"engram_table must be one of {', '.join(ENGRAM_TABLES)}, got {self.engram_table!r}")
        if self.kv_cache not in KV_CACHES:
            raise ConfigError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {self.kv_cache!r}")
        if self.indexer_cache not in INDEXER_CACHES:
            raise ConfigError(f"indexer_cache must be one of {', '.join(INDEXER_CACHES)}, got {self.indexer_cache!r}")
        if self.custom_ops and self.kv_cache != "fp8":
            raise ConfigError(f"custom_ops: the AscendC attention kernels keep the FP8 MODEL1 KV cache; this "
                              f"model runs a {self.kv_cache} KV cache (kv_cache {self.kv_cache!r}). Run it with "
                              f"custom_ops off")
        if self.custom_ops and (cfg.head_dim, cfg.rope_head_dim) != (KERNEL_HEAD_DIM, KERNEL_ROPE_DIM):
            raise ConfigError(f"custom_ops: the AscendC attention kernels (kv_pack_fp8, sparse_fp8_decode) "
                              f"need head_dim {KERNEL_HEAD_DIM} with rope_head_dim {KERNEL_ROPE_DIM} (the "
                              f"MODEL1 KV layout); this model has head_dim {cfg.head_dim}, rope_head_dim "
                              f"{cfg.rope_head_dim}. Run it with custom_ops off")
        self.parallel.validate(cfg)
        ratio = max([r for r in cfg.compress_ratios if r] or [1])
        if self.max_seq_len % ratio:
            raise ConfigError(f"max_seq_len ({self.max_seq_len}) must be a multiple of every compress ratio")
        if self.kv_budget is not None:
            if not self.custom_ops:
                raise ConfigError("kv_budget: the tiered KV cache is the FP8 MODEL1 page cache of the AscendC "
                                  "decode kernel; turn custom_ops on (the CLI's --kv-budget does)")
            if self.parallel.distributed:
                raise ConfigError("kv_budget with tensor or expert parallel is not built")
            from ascend_v4.kv_tiers.budget import tier_plan
            tier_plan(cfg, self)                 # parses, and refuses a device budget below the hot state
