"""Tensor names, dtypes and shapes of the converted reference checkpoint (V4_SPEC section 10).

`checkpoint_schema(cfg, weight_format)` lists every tensor of `model{rank}-mp{N}.safetensors`
merged over ranks, as the release's `inference/model.py` declares it:
- FP8 linears (wq_a, wq_b, wkv, wo_b, indexer.wq_b, shared experts, MTP e_proj/h_proj):
  F8_E4M3 [out, in] + `.scale` F8_E8M0 [ceil(out/128), ceil(in/128)];
- routed experts: FP4 I8 [out, in/2] + `.scale` F8_E8M0 [out, in/32] (or FP8 when
  expert_dtype is fp8, BF16 when bf16);
- BF16: embed, head, every RMSNorm weight, wo_a (the converter dequantises it),
  compressor wkv/wgate, indexer weights_proj, gate.weight;
- F32: hc_* (mHC), attn_sink, compressor ape, gate.bias;  I32: gate.tid2eid (hash layers).
weight_format 'bf16' stores every linear as BF16 without scales.
Engram blocks (engram_layer_ids) add `layers.{i}.engram.{key_proj,value_proj}.weight` and
`.{key_norm,query_norm}.weight` (BF16); their tables are not safetensors tensors but one raw file
per layer, `engram.layers.{i}.table.bin` (geometry and byte layout: ascend_v4/engram.py).
A converted checkpoint (`ascend-v4 convert`) names per-role formats in `cfg.quantization`
(role -> QUANT_FORMATS, roles as `weight_role`): 'int8' linears are I8 [out, in] + `.scale` F32
[out] (symmetric per-output-channel INT8, W8A8); 'int4' I8 [out, in/2] (two's complement nibbles,
low = even column) + `.scale` F32 [out] (W4A8); 'mxfp8' F8_E4M3 [out, in] + `.scale` F8_E8M0
[out, in/32]; 'mxfp4' the FP4 layout (I8 [out, in/2] + F8_E8M0 [out, in/32]); the other linears
follow `weight_format` (wo_a, role `attn_o`, is BF16 unless named).
The MTP block `mtp.{j}` is block n_layers + j: never hash-routed, and it shares embed and head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from ascend_v4.config import ModelConfig

WEIGHT_FORMATS = ("fp8", "bf16")
KINDS = ("fp8", "fp4", "mxfp8", "mxfp4", "bf16", "fp32", "int", "int8", "int4")
# Weight roles (the planner's SCHEMES keys, tools/deploy/model_stats): `attn_a` wq_a + wkv, `attn`
# wq_b + wo_b + indexer wq_b + MTP e_proj/h_proj, `attn_o` wo_a, `attn_bf16` compressor wkv/wgate +
# indexer weights_proj, `expert` routed, `shared` shared expert, `gate`, `embed`, `head`.
ROLES = ("attn_a", "attn", "attn_o", "attn_bf16", "expert", "shared", "gate", "embed", "head")
QUANT_FORMATS = ("int8", "int4", "mxfp8", "mxfp4")      # role formats a converted checkpoint may name in cfg.quantization
# module leaf -> dim split across tensor-parallel ranks (as the release's convert.py)
SPLIT_DIMS = {"embed": 0, "head": 0, "wq_b": 0, "wo_a": 0, "attn_sink": 0, "weights_proj": 0,
              "wo_b": 1}


@dataclass(frozen=True)
class TensorSpec:
    dtype: str                  # safetensors dtype name (F8_E4M3, F8_E8M0, I8, BF16, F32, I32)
    shape: Tuple[int, ...]
    kind: str                   # fp8 | fp4 | bf16 | fp32 | int  (a scale has its weight's kind)

    @property
    def is_scale(self) -> bool:
        """ue8m0 block scales, or the float32 per-channel scales of an int8 / int4 weight."""
        return self.dtype == "F8_E8M0" or (self.kind in ("int8", "int4") and self.dtype == "F32")

    @property
    def numel(self) -> int:
        """Logical element count (an FP4 byte holds two parameters)."""
        n = 1
        for s in self.shape:
            n *= s
        return 2 * n if self.kind in ("fp4", "mxfp4", "int4") and not self.is_scale else n

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "BF16": 2, "F32": 4, "I32": 4}[self.dtype]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def weight_kinds(cfg: ModelConfig, weight_format: Optional[str] = None) -> Tuple[str, str]:
    """(kind of the quantisable linears, kind of the routed experts) of a checkpoint in
    `weight_format` (default: the config's dtype): ('fp8', 'fp4') for the release, bf16 else."""
    fmt = weight_format or cfg.dtype
    if fmt != "fp8":
        return "bf16", "bf16"
    return "fp8", cfg.routed_expert_dtype


class _Builder:
    """Accumulates name -> TensorSpec for one weight format."""

    def __init__(self, cfg: ModelConfig, weight_format: str):
        if weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {weight_format!r}")
        self.cfg = cfg
        self.linear_kind, self.expert_kind = weight_kinds(cfg, weight_format)
        self.out: Dict[str, TensorSpec] = {}

    def add(self, name: str, dtype: str, shape, kind: str) -> None:
        self.out[name] = TensorSpec(dtype, tuple(int(s) for s in shape), kind)

    def bf16(self, name: str, *shape) -> None:
        self.add(name, "BF16", shape, "bf16")

    def fp32(self, name: str, *shape) -> None:
        self.add(name, "F32", shape, "fp32")

    def linear(self, stem: str, in_f: int, out_f: int, kind: Optional[str] = None) -> None:
        """`stem.weight` [out, in] (+ `stem.scale`) in format `kind`."""
        kind = self.cfg.quantization.get(weight_role(stem + ".weight")) or kind or self.linear_kind
        if kind == "int8":
            self.add(f"{stem}.weight", "I8", (out_f, in_f), "int8")
            self.add(f"{stem}.scale", "F32", (out_f,), "int8")
        elif kind == "fp8":
            self.add(f"{stem}.weight", "F8_E4M3", (out_f, in_f), "fp8")
            self.add(f"{stem}.scale", "F8_E8M0", (_cdiv(out_f, 128), _cdiv(in_f, 128)), "fp8")
        elif kind == "int4":
            self.add(f"{stem}.weight", "I8", (out_f, in_f // 2), "int4")
            self.add(f"{stem}.scale", "F32", (out_f,), "int4")
        elif kind == "mxfp8":
            self.add(f"{stem}.weight", "F8_E4M3", (out_f, in_f), "mxfp8")
            self.add(f"{stem}.scale", "F8_E8M0", (out_f, in_f // 32), "mxfp8")
        elif kind in ("fp4", "mxfp4"):
            self.add(f"{stem}.weight", "I8", (out_f, in_f // 2), kind)
            self.add(f"{stem}.scale", "F8_E8M0", (out_f, in_f // 32), kind)
        else:
            self.bf16(f"{stem}.weight", out_f, in_f)

    def hc(self, prefix: str, rows: int, n_scale: int) -> None:
        c = self.cfg
        self.fp32(f"{prefix}_fn", rows, c.hc_mult * c.dim)
        self.fp32(f"{prefix}_base", rows)
        self.fp32(f"{prefix}_scale", n_scale)

    def compressor(self, p: str, ratio: int, head_dim: int) -> None:
        coff = 2 if ratio == 4 else 1
        self.fp32(f"{p}.ape", ratio, coff * head_dim)
        self.bf16(f"{p}.wkv.weight", coff * head_dim, self.cfg.dim)
        self.bf16(f"{p}.wgate.weight", coff * head_dim, self.cfg.dim)
        self.bf16(f"{p}.norm.weight", head_dim)

    def block(self, p: str, layer_id: int) -> None:
        c = self.cfg
        self.bf16(f"{p}.attn_norm.weight", c.dim)
        self.bf16(f"{p}.ffn_norm.weight", c.dim)
        self.hc(f"{p}.hc_attn", c.mix_hc, 3)
        self.hc(f"{p}.hc_ffn", c.mix_hc, 3)
        a = f"{p}.attn"
        self.fp32(f"{a}.attn_sink", c.n_heads)
        self.linear(f"{a}.wq_a", c.dim, c.q_lora_rank)
        self.bf16(f"{a}.q_norm.weight", c.q_lora_rank)
        self.linear(f"{a}.wq_b", c.q_lora_rank, c.n_heads * c.head_dim)
        self.linear(f"{a}.wkv", c.dim, c.head_dim)
        self.bf16(f"{a}.kv_norm.weight", c.head_dim)
        self.linear(f"{a}.wo_a", c.n_heads * c.head_dim // c.o_groups, c.o_groups * c.o_lora_rank, "bf16")
        self.linear(f"{a}.wo_b", c.o_groups * c.o_lora_rank, c.dim)
        ratio = c.compress_ratios[layer_id]
        if ratio:
            self.compressor(f"{a}.compressor", ratio, c.head_dim)
        if ratio == 4:
            self.linear(f"{a}.indexer.wq_b", c.q_lora_rank, c.index_n_heads * c.index_head_dim)
            self.bf16(f"{a}.indexer.weights_proj.weight", c.index_n_heads, c.dim)
            self.compressor(f"{a}.indexer.compressor", ratio, c.index_head_dim)
        if layer_id in c.engram_layer_ids:
            self.engram(f"{p}.engram")
        f = f"{p}.ffn"
        self.bf16(f"{f}.gate.weight", c.n_routed_experts, c.dim)
        if layer_id < c.n_hash_layers:          # MTP blocks (layer_id >= n_layers) never hash
            self.add(f"{f}.gate.tid2eid", "I32", (c.vocab_size, c.n_activated_experts), "int")
        else:
            self.fp32(f"{f}.gate.bias", c.n_routed_experts)
        for e in range(c.n_routed_experts):
            self.ffn(f"{f}.experts.{e}", self.expert_kind)
        self.ffn(f"{f}.shared_experts", None)

    def engram(self, p: str) -> None:
        """An Engram block's projections and norms (its table is a file of its own: engram.py)."""
        c = self.cfg
        emb = (c.engram_max_ngram_size - 1) * c.engram_n_heads * c.engram_head_dim
        self.bf16(f"{p}.key_proj.weight", c.hc_mult * c.dim, emb)
        self.bf16(f"{p}.value_proj.weight", c.dim, emb)
        self.bf16(f"{p}.key_norm.weight", c.hc_mult, c.dim)
        self.bf16(f"{p}.query_norm.weight", c.hc_mult, c.dim)

    def ffn(self, p: str, kind: Optional[str]) -> None:
        c = self.cfg
        self.linear(f"{p}.w1", c.dim, c.moe_inter_dim, kind)
        self.linear(f"{p}.w2", c.moe_inter_dim, c.dim, kind)
        self.linear(f"{p}.w3", c.dim, c.moe_inter_dim, kind)

    def build(self) -> Dict[str, TensorSpec]:
        c = self.cfg
        self.bf16("embed.weight", c.vocab_size, c.dim)
        for i in range(c.n_layers):
            self.block(f"layers.{i}", i)
        self.bf16("norm.weight", c.dim)
        self.bf16("head.weight", c.vocab_size, c.dim)
        self.hc("hc_head", c.hc_mult, 1)
        for j in range(c.n_mtp_layers):
            p = f"mtp.{j}"
            self.block(p, c.n_layers + j)
            self.linear(f"{p}.e_proj", c.dim, c.dim)
            self.linear(f"{p}.h_proj", c.dim, c.dim)
            for norm in ("enorm", "hnorm", "norm"):
                self.bf16(f"{p}.{norm}.weight", c.dim)
            self.hc(f"{p}.hc_head", c.hc_mult, 1)
        return self.out


def checkpoint_schema(cfg: ModelConfig, weight_format: str = "fp8") -> Dict[str, TensorSpec]:
    """name -> TensorSpec for every tensor of the converted checkpoint (all ranks merged)."""
    return _Builder(cfg, weight_format).build()


def weight_role(name: str) -> Optional[str]:
    """Role (ROLES) of a matrix weight `....weight` / its `.scale`; None for norms, mHC, tables."""
    parts = name.split(".")
    if parts[-1] not in ("weight", "scale") or len(parts) < 2:
        return None
    leaf, path = parts[-2], parts[:-2]
    if leaf in ("embed", "head") and not path:
        return leaf
    if "experts" in path:
        return "expert"
    if "shared_experts" in path:
        return "shared"
    if leaf == "gate" and path[-1:] == ["ffn"]:
        return "gate"
    if "compressor" in path or leaf == "weights_proj":
        return "attn_bf16"
    if leaf in ("wq_a", "wkv"):
        return "attn_a"
    if leaf == "wo_a":
        return "attn_o"
    if leaf in ("wq_b", "wo_b", "e_proj", "h_proj"):
        return "attn"
    return None


def linear_kind(cfg: ModelConfig, role: str) -> str:
    """Checkpoint kind of the linears of `role`: the converted format cfg.quantization names,
    else the release's (weight_kinds: routed experts their own, the rest the linear kind)."""
    return cfg.quantization.get(role) or weight_kinds(cfg)[1 if role == "expert" else 0]


def weight_name(name: str) -> str:
    """`x.scale` -> `x.weight` (the tensor a scale belongs to); other names unchanged."""
    return name[: -len(".scale")] + ".weight" if name.endswith(".scale") else name


def module_leaf(name: str) -> str:
    """Last module name of a tensor: `layers.0.attn.wq_b.scale` -> `wq_b`, `...attn_sink` -> itself."""
    parts = name.split(".")
    return parts[-2] if parts[-1] in ("weight", "scale") and len(parts) > 1 else parts[-1]


def expert_index(name: str) -> Optional[int]:
    """Routed expert index of `...ffn.experts.{e}....`, else None (shared experts: None)."""
    parts = name.split(".")
    for k, part in enumerate(parts[:-1]):
        if part == "experts" and parts[k + 1].isdigit():
            return int(parts[k + 1])
    return None


def split_dim(name: str) -> Optional[int]:
    """Dim along which tensor-parallel ranks split `name` (None: replicated or expert)."""
    return SPLIT_DIMS.get(module_leaf(name))
