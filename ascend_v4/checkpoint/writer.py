"""Random-initialised checkpoints in the converted reference format (bf16 or FP8/FP4).

`write_random_checkpoint(cfg, out_dir, weight_format, seed, mp)` writes
`model{r}-mp{mp}.safetensors` for r < mp plus `config.json` into a temporary folder that is
renamed into place, so nothing half-written is ever visible. Draws (float32, seeded, in schema
order, so mp does not change the merged weights) are chosen for a numerically sane model:
linears and mHC `fn` N(0, 1/in), embed N(0, 1), norm weights 1 + 0.05 N, hc scale U(.5, 1),
hc base / ape 0.1 N, gate bias 0.05 N, attn_sink N(0, 1), tid2eid rows of distinct experts.
FP8 / FP4 tensors are quantised from the draws with block scales (ascend_v4.quant); wo_a is
stored as bf16 of its FP8 quant-dequant, as the release's converter does.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Iterator, Tuple

import ml_dtypes
import numpy as np

from ascend_v4 import quant
from ascend_v4.config import ModelConfig
from ascend_v4.safetensors_io import save
from ascend_v4.tokenizer import copy_builtin
from ascend_v4.checkpoint.errors import CheckpointError
from ascend_v4.checkpoint.schema import (WEIGHT_FORMATS, TensorSpec, checkpoint_schema, expert_index,
                                         split_dim, weight_name)

BF16 = np.dtype(ml_dtypes.bfloat16)


def checkpoint_config(cfg: ModelConfig, weight_format: str) -> ModelConfig:
    """The config a checkpoint of `weight_format` declares (bf16: every linear bf16)."""
    if weight_format == "bf16":
        return cfg.replace(dtype="bf16", expert_dtype=None)
    return cfg.replace(dtype="fp8", scale_fmt="ue8m0")


def _draw(rng: np.random.Generator, name: str, shape: Tuple[int, ...], cfg: ModelConfig) -> np.ndarray:
    """float32 initial value of logical tensor `name` (see module docstring)."""
    leaf = name.rsplit(".", 1)[-1]
    normal = lambda: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    if name == "embed.weight":
        return normal()
    if name.endswith("norm.weight"):
        return 1.0 + np.float32(0.05) * normal()
    if leaf.endswith("_scale") and leaf.startswith("hc_"):
        return rng.uniform(0.5, 1.0, shape).astype(np.float32)
    if leaf.endswith("_base") or leaf == "ape":
        return np.float32(0.1) * normal()
    if leaf == "attn_sink":
        return normal()
    if leaf == "bias":
        return np.float32(0.05) * normal()
    if len(shape) == 2:                  # linears, gate, hc_*_fn, head: N(0, 1/in)
        return normal() * np.float32(shape[1] ** -0.5)
    raise CheckpointError(f"no initialiser for tensor {name} {shape}")  # pragma: no cover


def _tid2eid(rng: np.random.Generator, cfg: ModelConfig) -> np.ndarray:
    """[vocab, k] int32, each row k distinct expert ids."""
    keys = rng.random((cfg.vocab_size, cfg.n_routed_experts), dtype=np.float32)
    return np.argsort(keys, axis=1)[:, :cfg.n_activated_experts].astype(np.int32)


def random_tensors(cfg: ModelConfig, weight_format: str = "fp8",
                   seed: int = 0) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (name, stored array) for every tensor of the schema (scales right after weights)."""
    schema = checkpoint_schema(cfg, weight_format)
    rng = np.random.default_rng(seed)
    for name, spec in schema.items():
        if spec.is_scale:
            continue
        if spec.kind == "int":
            yield name, _tid2eid(rng, cfg)
            continue
        shape = (spec.shape[0], spec.shape[1] * 2) if spec.kind == "fp4" else spec.shape
        x = _draw(rng, name, shape, cfg)
        if name.endswith("wo_a.weight") and weight_format == "fp8":
            x = quant.dequantize_fp8(*quant.quantize_fp8(x))
        if spec.kind == "fp8":
            w, s = quant.quantize_fp8(x)
        elif spec.kind == "fp4":
            w, s = quant.quantize_fp4(x)
        else:
            yield name, x.astype(BF16 if spec.dtype == "BF16" else np.float32)
            continue
        yield name, w
        yield name[: -len(".weight")] + ".scale", s


def _shard(name: str, arr: np.ndarray, spec: TensorSpec, rank: int, mp: int,
           cfg: ModelConfig):
    """This rank's part of `arr` (None when another rank owns the expert)."""
    e = expert_index(name)
    if e is not None:
        per = cfg.n_routed_experts // mp
        return arr if rank * per <= e < (rank + 1) * per else None
    dim = split_dim(name)
    if dim is None or mp == 1:
        return arr
    full = arr.shape[dim]
    if full % mp:
        raise CheckpointError(f"cannot split {name} {arr.shape} along dim {dim} into {mp} ranks")
    if spec.kind == "fp8" and not spec.is_scale:
        # the scale is split with the weight: each rank needs whole 128-row/column blocks
        if (full // mp) % 128:
            raise CheckpointError(f"cannot split FP8 {name} {arr.shape} along dim {dim} into {mp} "
                                  "ranks: each part must hold whole 128-wide scale blocks")
    part = full // mp
    return np.take(arr, np.arange(rank * part, (rank + 1) * part), axis=dim)


def write_random_checkpoint(cfg: ModelConfig, out_dir: str, weight_format: str = "fp8",
                            seed: int = 0, mp: int = 1, overwrite: bool = False) -> str:
    """Write a random checkpoint of `cfg` to `out_dir` (created; must be absent or empty)."""
    if weight_format not in WEIGHT_FORMATS:
        raise CheckpointError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, "
                              f"got {weight_format!r}")
    if not isinstance(mp, int) or mp < 1 or cfg.n_routed_experts % mp:
        raise CheckpointError(f"mp={mp!r} must be a positive divisor of n_routed_experts "
                              f"({cfg.n_routed_experts})")
    ckpt_cfg = checkpoint_config(cfg, weight_format)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
        raise CheckpointError(f"{out_dir} exists and is not empty (pass overwrite=True)")
    tmp = f"{out_dir}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        schema = checkpoint_schema(ckpt_cfg, weight_format)
        shards: Dict[int, Dict[str, np.ndarray]] = {r: {} for r in range(mp)}
        for name, arr in random_tensors(ckpt_cfg, weight_format, seed):
            spec = schema[name]
            for r in range(mp):
                part = _shard(weight_name(name) if spec.is_scale else name, arr, spec, r, mp, ckpt_cfg)
                if part is not None:
                    shards[r][name] = part
        meta = {"format": "ascend-v4 converted", "weight_format": weight_format, "seed": str(seed)}
        for r in range(mp):
            save(shards[r], os.path.join(tmp, f"model{r}-mp{mp}.safetensors"), metadata=meta)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(ckpt_cfg.to_dict(), fh, indent=2)
        copy_builtin(tmp, ckpt_cfg.vocab_size)     # text prompts and chat for random checkpoints
        old = None
        if os.path.exists(out_dir):
            old = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
