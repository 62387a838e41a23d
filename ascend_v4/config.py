"""Typed DeepSeek-V4 configuration (V4_SPEC section 1).

Field names follow the official inference `config.json`. `load_config` also accepts the
HF-release `config.json` (hidden_size, num_hidden_layers, ...), a preset name (`flash`, `pro`,
`tiny`) or a YAML/JSON file, and validates the result with errors that name the bad key.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import yaml

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
SCORE_FUNCS = ("sqrtsoftplus", "sigmoid", "softmax")
WEIGHT_DTYPES = ("bf16", "fp8")
EXPERT_DTYPES = (None, "fp4", "fp8", "bf16")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or inconsistent."""


@dataclass
class ModelConfig:
    """Model hyperparameters; names match the official inference config.json."""
    vocab_size: int = 129280
    dim: int = 4096
    moe_inter_dim: int = 2048
    n_layers: int = 43
    n_hash_layers: int = 3
    n_mtp_layers: int = 1
    n_heads: int = 64
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    q_lora_rank: int = 1024
    head_dim: int = 512
    rope_head_dim: int = 64
    norm_eps: float = 1e-6
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    compress_ratios: Tuple[int, ...] = ()
    compress_rope_theta: float = 160000.0
    original_seq_len: int = 65536
    rope_theta: float = 10000.0
    rope_factor: float = 16.0
    beta_fast: int = 32
    beta_slow: int = 1
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    dtype: str = "fp8"              # non-expert linear weights: bf16 | fp8
    scale_fmt: Optional[str] = "ue8m0"
    expert_dtype: Optional[str] = "fp4"  # routed experts: None (= dtype) | fp4 | fp8 | bf16
    # Engram conditional memory (V4_SPEC 7, V4.1 names); off while engram_layer_ids is empty.
    # Geometry and hashing: ascend_v4/engram.py.
    engram_layer_ids: Tuple[int, ...] = ()
    engram_max_ngram_size: int = 4          # n-gram orders 2..N
    engram_n_heads: int = 8                 # hash heads (tables) per order
    engram_head_dim: int = 256              # row width of one table (FP8, ue8m0 scale per 128)
    engram_vocab_size: int = 646400         # table rows: the tables are distinct primes >= this
    engram_pad_token_id: int = 0            # token id standing before the sequence start
    engram_compressed_vocab_size: int = 0   # compressed ids (0: whatever the map yields)
    # converted checkpoints (`ascend-v4 convert`): weight role -> format overriding dtype /
    # expert_dtype for that role's linears, e.g. {"attn": "int8", "expert": "int8", "shared": "int8"}
    quantization: Dict[str, str] = field(default_factory=dict)
    name: str = "custom"
    # runtime hints a config file may carry (max_seq_len, max_batch_size, ...): defaults for
    # RuntimeConfig (ascend_v4/runtime.py), not part of the model
    runtime_defaults: Dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- derived -------------------------------------------------------------------------
    @property
    def mix_hc(self) -> int:
        """Rows of an mHC `fn` matrix: (2 + n) n."""
        return (2 + self.hc_mult) * self.hc_mult

    @property
    def nope_head_dim(self) -> int:
        return self.head_dim - self.rope_head_dim

    @property
    def has_engram(self) -> bool:
        return bool(self.engram_layer_ids)

    @property
    def routed_expert_dtype(self) -> str:
        return self.expert_dtype or self.dtype

    def to_dict(self) -> Dict[str, Any]:
        """The config.json keys (the runtime hints included, flat)."""
        d = dataclasses.asdict(self)
        d["compress_ratios"] = list(self.compress_ratios)
        d["engram_layer_ids"] = list(self.engram_layer_ids)
        d.update(d.pop("runtime_defaults"))
        return d

    def replace(self, **overrides) -> "ModelConfig":
        return from_dict({**self.to_dict(), **overrides}, name=self.name)


# HF-release spellings -> official inference names (V4_SPEC section 1).
HF_KEY_MAP = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "qk_rope_head_dim": "rope_head_dim",
    "moe_intermediate_size": "moe_inter_dim",
    "num_experts_per_tok": "n_activated_experts",
    "routed_scaling_factor": "route_scale",
    "scoring_func": "score_func",
    "num_hash_layers": "n_hash_layers",
    "num_nextn_predict_layers": "n_mtp_layers",
    "rms_norm_eps": "norm_eps",
    "sliding_window": "window_size",
}
# Keys of the HF config that carry no model semantics for us.
IGNORED_KEYS = {
    "architectures", "attention_bias", "attention_dropout", "bos_token_id", "eos_token_id",
    "hidden_act", "initializer_range", "max_position_embeddings", "model_type",
    "norm_topk_prob", "num_key_value_heads", "tie_word_embeddings", "topk_method",
    "torch_dtype", "transformers_version", "use_cache", "quantization_config", "rope_scaling",
    "scale_dtype", "max_batch_size_hint", "first_k_dense_replace",
}


def _normalise_keys(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Map HF-release names and nested rope/quantisation blocks onto ModelConfig fields."""
    out: Dict[str, Any] = {}
    for key, value in raw.items():
        out[HF_KEY_MAP.get(key, key)] = value
    rope = raw.get("rope_scaling") or {}
    if rope:
        out.setdefault("rope_factor", rope.get("factor", out.get("rope_factor")))
        out.setdefault("beta_fast", rope.get("beta_fast", 32))
        out.setdefault("beta_slow", rope.get("beta_slow", 1))
        if "original_max_position_embeddings" in rope:
            out.setdefault("original_seq_len", rope["original_max_position_embeddings"])
    quant = raw.get("quantization_config") or {}
    if quant:
        out.setdefault("dtype", "fp8" if quant.get("quant_method") == "fp8" else "bf16")
        out.setdefault("scale_fmt", quant.get("scale_fmt"))
    elif "torch_dtype" in raw and "dtype" not in raw:
        out["dtype"] = "bf16"
    return out


def from_dict(raw: Dict[str, Any], name: str = "custom") -> ModelConfig:
    """Build and validate a ModelConfig from official or HF-release keys."""
    data = _normalise_keys(raw)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    from ascend_v4.runtime import RUNTIME_KEYS as runtime_keys
    unknown = sorted(k for k in data if (k not in known or k == "runtime_defaults") and k not in IGNORED_KEYS
                     and k not in HF_KEY_MAP and k not in runtime_keys)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    from ascend_v4.runtime import RUNTIME_KEYS
    runtime = {k: data.pop(k) for k in RUNTIME_KEYS if k in data}
    known -= {"runtime_defaults"}
    kwargs = {k: v for k, v in data.items() if k in known}
    kwargs.setdefault("name", name)
    try:
        cfg = ModelConfig(**kwargs, runtime_defaults=runtime)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise ConfigError(str(exc)) from None
    cfg.compress_ratios = tuple(int(r) for r in (cfg.compress_ratios or ()))
    layer_ids = cfg.engram_layer_ids
    if not isinstance(layer_ids, (list, tuple)):
        raise ConfigError(f"engram_layer_ids must be a list of block indices, got {layer_ids!r}")
    cfg.engram_layer_ids = tuple(layer_ids)
    validate(cfg)
    from ascend_v4.runtime import RuntimeConfig
    RuntimeConfig.for_model(cfg)            # the runtime hints must be valid too
    return cfg


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: ModelConfig) -> None:
    """Check every constraint the model relies on; raise ConfigError naming the key."""
    ints = ["vocab_size", "dim", "moe_inter_dim", "n_layers", "n_heads", "n_routed_experts",
            "n_activated_experts", "q_lora_rank", "head_dim", "rope_head_dim", "o_groups",
            "o_lora_rank", "window_size", "index_n_heads", "index_head_dim", "index_topk",
            "hc_mult", "hc_sinkhorn_iters"]
    for key in ints:
        value = getattr(cfg, key)
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                 f"{key} must be a positive integer, got {value!r}")
    for key in ["n_hash_layers", "n_mtp_layers", "n_shared_experts"]:
        value = getattr(cfg, key)
        _require(isinstance(value, int) and value >= 0, f"{key} must be >= 0, got {value!r}")
    n_blocks = cfg.n_layers + cfg.n_mtp_layers
    _require(len(cfg.compress_ratios) == n_blocks,
             f"compress_ratios has {len(cfg.compress_ratios)} entries; expected n_layers + "
             f"n_mtp_layers = {cfg.n_layers} + {cfg.n_mtp_layers} = {n_blocks}")
    for i, r in enumerate(cfg.compress_ratios):
        _require(r == 0 or r >= 2, f"compress_ratios[{i}] = {r}: use 0 (window only) or a ratio >= 2")
    for i in range(cfg.n_layers, n_blocks):
        _require(cfg.compress_ratios[i] == 0,
                 f"compress_ratios[{i}] (MTP block) must be 0: the MTP block is window-only")
    _require(cfg.head_dim > cfg.rope_head_dim,
             f"head_dim ({cfg.head_dim}) must be larger than rope_head_dim ({cfg.rope_head_dim})")
    _require(cfg.rope_head_dim % 2 == 0, f"rope_head_dim ({cfg.rope_head_dim}) must be even")
    _require(cfg.nope_head_dim % 64 == 0,
             f"head_dim - rope_head_dim ({cfg.nope_head_dim}) must be a multiple of 64 "
             "(the KV cache is fp8-quantised in tiles of 64)")
    _require(cfg.n_heads % cfg.o_groups == 0,
             f"n_heads ({cfg.n_heads}) must be divisible by o_groups ({cfg.o_groups})")
    _require(cfg.score_func in SCORE_FUNCS,
             f"unknown score_func {cfg.score_func!r}; expected one of {', '.join(SCORE_FUNCS)}")
    _require(cfg.dtype in WEIGHT_DTYPES, f"dtype must be one of {WEIGHT_DTYPES}, got {cfg.dtype!r}")
    _require(cfg.expert_dtype in EXPERT_DTYPES,
             f"expert_dtype must be one of {EXPERT_DTYPES}, got {cfg.expert_dtype!r}")
    _require(cfg.scale_fmt in (None, "ue8m0"), f"scale_fmt must be ue8m0 or null, got {cfg.scale_fmt!r}")
    _require(cfg.n_activated_experts <= cfg.n_routed_experts,
             f"n_activated_experts ({cfg.n_activated_experts}) exceeds n_routed_experts "
             f"({cfg.n_routed_experts})")
    _require(cfg.n_shared_experts == 1,
             f"n_shared_experts must be 1 as in the release, got {cfg.n_shared_experts}")
    _require(cfg.n_hash_layers <= cfg.n_layers,
             f"n_hash_layers ({cfg.n_hash_layers}) exceeds n_layers ({cfg.n_layers})")
    _require(cfg.index_head_dim > cfg.rope_head_dim and
             cfg.index_head_dim & (cfg.index_head_dim - 1) == 0,
             f"index_head_dim ({cfg.index_head_dim}) must be a power of two (Hadamard rotation) "
             f"larger than rope_head_dim ({cfg.rope_head_dim})")
    _require(cfg.index_head_dim % 32 == 0,
             f"index_head_dim ({cfg.index_head_dim}) must be a multiple of 32 (FP4 blocks)")
    if cfg.routed_expert_dtype == "fp4":
        for key in ("dim", "moe_inter_dim"):
            _require(getattr(cfg, key) % 32 == 0,
                     f"{key} ({getattr(cfg, key)}) must be a multiple of 32 for FP4 experts")
    if cfg.dtype == "fp8":
        # FP8 linears quantise activations in tiles of 128 along their input dim.
        for key, value in (("dim", cfg.dim), ("q_lora_rank", cfg.q_lora_rank),
                           ("o_groups * o_lora_rank", cfg.o_groups * cfg.o_lora_rank),
                           ("moe_inter_dim", cfg.moe_inter_dim)):
            _require(value % 128 == 0, f"{key} ({value}) must be a multiple of 128 for FP8 "
                                       "weights (activation tiles of 128)")
    from ascend_v4.checkpoint.schema import QUANT_FORMATS, ROLES
    _require(isinstance(cfg.quantization, dict), f"quantization must be a mapping, got {cfg.quantization!r}")
    for role, fmt in cfg.quantization.items():
        _require(role in ROLES and fmt in QUANT_FORMATS,
                 f"quantization {role}: {fmt}: expected a role of {ROLES} -> one of {QUANT_FORMATS}")
    for key in ("norm_eps", "hc_eps"):
        _require(float(getattr(cfg, key)) > 0, f"{key} must be > 0")
    _validate_engram(cfg)


def _validate_engram(cfg: ModelConfig) -> None:
    """The Engram keys (checked only when engram_layer_ids is non-empty)."""
    ids = cfg.engram_layer_ids
    for layer in ids:
        _require(isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < cfg.n_layers,
                 f"engram_layer_ids: {layer!r} is not a block index in 0..{cfg.n_layers - 1}")
    _require(len(set(ids)) == len(ids), f"engram_layer_ids lists a layer twice: {list(ids)}")
    if not ids:
        return
    for key, low in (("engram_max_ngram_size", 2), ("engram_n_heads", 1), ("engram_head_dim", 1),
                     ("engram_vocab_size", 2), ("engram_pad_token_id", 0),
                     ("engram_compressed_vocab_size", 0)):
        value = getattr(cfg, key)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                 f"{key} must be an integer >= {low}, got {value!r}")
    _require(cfg.engram_pad_token_id < cfg.vocab_size,
             f"engram_pad_token_id ({cfg.engram_pad_token_id}) must be a token id < vocab_size "
             f"({cfg.vocab_size})")
    _require(cfg.engram_compressed_vocab_size <= cfg.vocab_size,
             f"engram_compressed_vocab_size ({cfg.engram_compressed_vocab_size}) exceeds vocab_size "
             f"({cfg.vocab_size})")


def preset_names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))


def load_config(source: str, **overrides) -> ModelConfig:
    """Load a preset name, a config.json/.yaml file, or a checkpoint folder holding config.json."""
    if os.path.isdir(source):
        path = os.path.join(source, "config.json")
        if not os.path.exists(path):
            raise ConfigError(f"{source}: no config.json in this folder")
        source = path
    if os.path.isfile(source):
        with open(source, "r", encoding="utf-8") as fh:
            try:
                raw = json.load(fh) if source.endswith(".json") else yaml.safe_load(fh)
            except (json.JSONDecodeError, yaml.YAMLError) as exc:
                raise ConfigError(f"{source}: not valid JSON/YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of config keys")
        name = os.path.basename(os.path.dirname(os.path.abspath(source))) or "custom"
    else:
        path = os.path.join(PRESET_DIR, f"{source}.yaml")
        if not os.path.exists(path):
            raise ConfigError(f"unknown preset or missing file {source!r}; presets: "
                              f"{', '.join(preset_names())}")
        with open(path, "r", encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        name = source
    return from_dict({**raw, **overrides}, name=name)
