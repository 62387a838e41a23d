"""Random-initialised checkpoints in the converted reference format (bf16 or FP8/FP4).

`write_random_checkpoint(cfg, out_dir, weight_format, seed, mp)` writes
`model{r}-mp{mp}.safetensors` for r < mp plus `config.json` into a temporary folder that is
renamed into place, so nothing half-written is ever visible. It streams: every file's header
comes from `checkpoint_schema` up front, and each tensor goes to disk as soon as it is drawn and
quantised (the largest bf16 tensors, embed and head, in row chunks), so the writer holds one
tensor at a time, never the model. Draws (float32, seeded, in schema
order, so mp does not change the merged weights) are chosen for a numerically sane model:
linears and mHC `fn` N(0, 1/in), embed N(0, 1), norm weights 1 + 0.05 N, hc scale U(.5, 1),
hc base / ape 0.1 N, gate bias 0.05 N, attn_sink N(0, 1), tid2eid rows of distinct experts.
FP8 / FP4 tensors are quantised from the draws with block scales (ascend_v4.quant); wo_a is
stored as bf16 of its FP8 quant-dequant, as the release's converter does. Engram models also get
one table file per Engram layer (`engram.layers.{i}.table.bin`, ascend_v4/engram.py), drawn as
bytes in row blocks.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Iterator, List, Optional, Tuple

import ml_dtypes
import numpy as np

from ascend_v4 import quant
from ascend_v4.config import ModelConfig
from ascend_v4.safetensors_io import StreamWriter
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


# bf16 / fp32 tensors above this many elements are drawn and written in row chunks; numpy's
# Generator yields the same stream in chunks as in one call, so the values do not change
CHUNK_ELEMENTS = 1 << 23


def _random_parts(cfg: ModelConfig, weight_format: str, seed: int,
                  chunk_elements: Optional[int] = None) -> Iterator[Tuple[str, int, np.ndarray]]:
    """Yield (name, first row, stored array) for every tensor of the schema in schema order
    (scales right after weights); unquantised 2-D tensors of more than `chunk_elements` come
    as consecutive row blocks, everything else whole (first row 0)."""
    chunk_elements = chunk_elements or CHUNK_ELEMENTS
    schema = checkpoint_schema(cfg, weight_format)
    main = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 0xE9])   # Engram tensors: the other draws stay those of
    for name, spec in schema.items():             # the same config without Engram
        if spec.is_scale:
            continue
        rng = extra if ".engram." in name else main
        if spec.kind == "int":
            yield name, 0, _tid2eid(rng, cfg)
            continue
        shape = (spec.shape[0], spec.shape[1] * 2) if spec.kind == "fp4" else spec.shape
        fp8_wo_a = name.endswith("wo_a.weight") and weight_format == "fp8"
        if spec.kind not in ("fp8", "fp4") and not fp8_wo_a:
            out = BF16 if spec.dtype == "BF16" else np.float32
            step = max(1, chunk_elements // shape[1]) if len(shape) == 2 else shape[0]
            for row in range(0, shape[0], step):
                part = (min(step, shape[0] - row),) + tuple(shape[1:])
                yield name, row, _draw(rng, name, part, cfg).astype(out)
            continue
        x = _draw(rng, name, shape, cfg)
        if fp8_wo_a:                # bf16 of its FP8 quant-dequant (128x128 blocks: drawn whole)
            yield name, 0, quant.dequantize_fp8(*quant.quantize_fp8(x)).astype(BF16)
            continue
        w, s = quant.quantize_fp8(x) if spec.kind == "fp8" else quant.quantize_fp4(x)
        del x
        yield name, 0, w
        yield name[: -len(".weight")] + ".scale", 0, s


def random_tensors(cfg: ModelConfig, weight_format: str = "fp8",
                   seed: int = 0) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (name, stored array) for every tensor of the schema (scales right after weights):
    the tensors `write_random_checkpoint` writes (whole, merged over ranks)."""
    for name, _row, arr in _random_parts(cfg, weight_format, seed, chunk_elements=1 << 62):
        yield name, arr


def _rank_shape(name: str, spec: TensorSpec, rank: int, mp: int, cfg: ModelConfig) -> Optional[Tuple[int, ...]]:
    """Shape of rank `rank`'s part of tensor `name` (None: another rank owns the expert); raises
    CheckpointError where the converter could not split it (checked before anything is drawn)."""
    owner = weight_name(name) if spec.is_scale else name
    e = expert_index(owner)
    if e is not None:
        per = cfg.n_routed_experts // mp
        return spec.shape if rank * per <= e < (rank + 1) * per else None
    dim = split_dim(owner)
    if dim is None or mp == 1:
        return spec.shape
    full = spec.shape[dim]
    if full % mp:
        raise CheckpointError(f"cannot split {owner} {spec.shape} along dim {dim} into {mp} ranks")
    if spec.kind == "fp8" and not spec.is_scale and (full // mp) % 128:
        raise CheckpointError(f"cannot split FP8 {name} {spec.shape} along dim {dim} into {mp} "
                              "ranks: each part must hold whole 128-wide scale blocks")
    return spec.shape[:dim] + (full // mp,) + spec.shape[dim + 1:]


def _write_part(files: List[StreamWriter], name: str, spec: TensorSpec, row: int, arr: np.ndarray,
                mp: int, cfg: ModelConfig) -> None:
    """Write rows [row, row + len(arr)) of tensor `name` into every rank file that holds them."""
    if mp == 1:
        files[0].write(name, arr, row)
        return
    owner = weight_name(name) if spec.is_scale else name
    e = expert_index(owner)
    dim = split_dim(owner)
    if e is not None:
        files[e // (cfg.n_routed_experts // mp)].write(name, arr, row)
        return
    if dim is None:
        for f in files:
            f.write(name, arr, row)
        return
    part = spec.shape[dim] // mp
    if dim == 0:                              # row blocks: each rank takes the rows it owns
        for r, f in enumerate(files):
            lo, hi = max(row, r * part), min(row + arr.shape[0], (r + 1) * part)
            if lo < hi:
                f.write(name, arr[lo - row:hi - row], lo - r * part)
        return
    for r, f in enumerate(files):             # split along a later dim: each rank its columns
        f.write(name, np.take(arr, np.arange(r * part, (r + 1) * part), axis=dim), row)


def _write_engram_tables(cfg: ModelConfig, folder: str, seed: int) -> None:
    """One random table file per Engram layer, streamed in row blocks (never a float copy)."""
    from ascend_v4.engram import geometry, table_file, write_table
    geo = geometry(cfg)
    for layer in (geo.layer_ids if geo else ()):
        write_table(table_file(folder, layer), geo, layer, seed)


def write_random_checkpoint(cfg: ModelConfig, out_dir: str, weight_format: str = "fp8",
                            seed: int = 0, mp: int = 1, overwrite: bool = False) -> str:
    """Write a random checkpoint of `cfg` to `out_dir` (created; must be absent or empty).
    Streams one tensor at a time (module docstring); the bytes do not depend on the chunking."""
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
    schema = checkpoint_schema(ckpt_cfg, weight_format)
    layouts: List[Dict[str, Tuple[str, Tuple[int, ...]]]] = [{} for _ in range(mp)]
    for name, spec in schema.items():         # every shard's header, and every split checked
        for r in range(mp):
            shape = _rank_shape(name, spec, r, mp, ckpt_cfg)
            if shape is not None:
                layouts[r][name] = (spec.dtype, shape)
    tmp = f"{out_dir}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    files: List[StreamWriter] = []
    try:
        meta = {"format": "ascend-v4 converted", "weight_format": weight_format, "seed": str(seed)}
        for r in range(mp):
            files.append(StreamWriter(os.path.join(tmp, f"model{r}-mp{mp}.safetensors"), layouts[r], meta))
        for name, row, arr in _random_parts(ckpt_cfg, weight_format, seed):
            _write_part(files, name, schema[name], row, arr, mp, ckpt_cfg)
            del arr
        while files:
            files.pop(0).close()
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(ckpt_cfg.to_dict(), fh, indent=2)
        copy_builtin(tmp, ckpt_cfg.vocab_size)     # text prompts and chat for random checkpoints
        _write_engram_tables(ckpt_cfg, tmp, seed)
        old = None
        if os.path.exists(out_dir):
            old = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        for f in files:
            f.abort()
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
