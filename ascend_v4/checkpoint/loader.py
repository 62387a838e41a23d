"""Open a checkpoint (converted `model{r}-mp{N}.safetensors` or HF release) and stream it.

`open_checkpoint(path_or_dir, cfg=None)` reads only the safetensors headers and config.json,
then validates every tensor name, dtype and shape against `checkpoint_schema` and raises ONE
CheckpointError listing all problems before any tensor data is touched.
`Checkpoint.iter_dequantized()` then yields (name, float32 array) one tensor at a time from
memory-mapped files (mp shards are concatenated per tensor; int tables stay int32).
HF-release names are renamed as the release's convert.py does (see names.py); its FP8 `wo_a`
is dequantised to the converted bf16 layout.
"""
from __future__ import annotations

import glob
import json
import os
import re
import dataclasses
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import ml_dtypes
import numpy as np

from ascend_v4 import quant
from ascend_v4.config import ConfigError, ModelConfig, load_config
from ascend_v4.runtime import RUNTIME_KEYS, RuntimeConfig
from ascend_v4.safetensors_io import SafeFile, SafetensorsError
from ascend_v4.checkpoint.errors import CheckpointError
from ascend_v4.checkpoint.names import hf_to_converted
from ascend_v4.checkpoint.schema import TensorSpec, checkpoint_schema, expert_index, split_dim

SHARD_RE = re.compile(r"^model(\d+)-mp(\d+)\.safetensors$")
# fields that do not change the tensors (weight formats are checked through the tensors)
# keys a caller's expected config may differ in (formats are checked tensor by tensor; runtime hints)
UNCHECKED_KEYS = {"dtype", "scale_fmt", "expert_dtype", "name", *RUNTIME_KEYS}
OVERRIDABLE = {"name", *RUNTIME_KEYS}
MAX_LISTED = 100
# stored dtypes accepted in place of the schema's (dequantised to float32 all the same)
ALTERNATIVES = {"F8_E8M0": {"F32"}, "BF16": {"F32", "F16"}, "I8": {"U8"}}


@dataclass
class _Part:
    """Where (part of) a converted tensor lives: file, stored name, rank order key."""
    file: SafeFile
    stored: str
    rank: int


def _err(problems: List[str], title: str) -> CheckpointError:
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return CheckpointError(f"{title} ({len(problems)} problem(s)):\n  " + "\n  ".join(shown) + more)


def _open(path: str) -> SafeFile:
    try:
        return SafeFile(path)
    except SafetensorsError as exc:
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from None


def _converted_parts(folder: str, files: List[str]) -> Dict[str, List[_Part]]:
    """name -> parts over all ranks of model{r}-mp{N}.safetensors."""
    ranks = {}
    sizes = set()
    for f in files:
        r, n = map(int, SHARD_RE.match(os.path.basename(f)).groups())
        ranks[r] = f
        sizes.add(n)
    if len(sizes) != 1:
        raise CheckpointError(f"{folder}: shards from different mp sizes: {sorted(sizes)}")
    mp = sizes.pop()
    missing = [f"model{r}-mp{mp}.safetensors" for r in range(mp) if r not in ranks]
    if missing or len(ranks) != mp:
        raise CheckpointError(f"{folder}: incomplete mp={mp} checkpoint, missing shard file(s): "
                              f"{', '.join(missing) or 'ranks out of range'}")
    parts: Dict[str, List[_Part]] = {}
    for r in range(mp):
        sf = _open(ranks[r])
        for name in sf.keys():
            parts.setdefault(name, []).append(_Part(sf, name, r))
    return parts


def _hf_parts(folder: str) -> Dict[str, List[_Part]]:
    """name -> [part] for an HF-release folder (model.safetensors.index.json or *.safetensors)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        try:
            with open(index, "r", encoding="utf-8") as fh:
                weight_map = json.load(fh)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        files = sorted(set(weight_map.values()))
        absent = [f for f in files if not os.path.exists(os.path.join(folder, f))]
        if absent:
            raise CheckpointError(f"{index} names missing shard file(s): {', '.join(absent)}")
    else:
        files = sorted(os.path.basename(f) for f in glob.glob(os.path.join(folder, "*.safetensors")))
        weight_map = None
    parts: Dict[str, List[_Part]] = {}
    seen = set()
    for fname in files:
        sf = _open(os.path.join(folder, fname))
        for stored in sf.keys():
            if weight_map is not None and weight_map.get(stored) != fname:
                continue
            seen.add(stored)
            name = hf_to_converted(stored)
            if name is not None:
                parts.setdefault(name, []).append(_Part(sf, stored, 0))
    if weight_map is not None:
        lost = [k for k in weight_map if k not in seen]
        if lost:
            raise CheckpointError(f"{index}: tensor(s) listed but absent from their file: "
                                  f"{', '.join(lost[:MAX_LISTED])}")
    return parts


def _merged_info(name: str, parts: List[_Part]) -> Tuple[str, Tuple[int, ...], Optional[str]]:
    """(dtype, merged shape, problem) from the shard headers."""
    infos = [p.file.info(p.stored) for p in parts]
    dtypes = {d for d, _ in infos}
    if len(dtypes) != 1:
        return infos[0][0], infos[0][1], f"{name}: shards disagree on dtype {sorted(dtypes)}"
    dtype = dtypes.pop()
    dim = split_dim(name)
    if len(parts) == 1 or dim is None:
        shapes = {s for _, s in infos}
        if len(parts) > 1 and expert_index(name) is not None:
            return dtype, infos[0][1], f"{name}: expert stored in {len(parts)} shards"
        if len(shapes) != 1:
            return dtype, infos[0][1], f"{name}: replicated tensor has shapes {sorted(shapes)}"
        return dtype, infos[0][1], None
    shape = list(infos[0][1])
    if any(len(s) != len(shape) or [x for i, x in enumerate(s) if i != dim] !=
           [x for i, x in enumerate(shape) if i != dim] for _, s in infos):
        return dtype, tuple(shape), f"{name}: shards do not line up along dim {dim}"
    shape[dim] = sum(s[dim] for _, s in infos)
    return dtype, tuple(shape), None


class Checkpoint:
    """A validated checkpoint: `config`, `runtime`, `weight_format`, `formats`, `raw`, `iter_dequantized`."""

    def __init__(self, folder: str, layout: str, config: ModelConfig,
                 parts: Dict[str, List[_Part]], runtime: Optional[RuntimeConfig] = None):
        self.folder = folder
        self.layout = layout                      # 'converted' | 'hf'
        self.config = config
        self.runtime = runtime or RuntimeConfig.for_model(config)   # how it is to be run
        self.weight_format = config.dtype         # 'fp8' (release) | 'bf16'
        self.schema: Dict[str, TensorSpec] = checkpoint_schema(config, self.weight_format)
        self.formats: Dict[str, str] = {n: s.kind for n, s in self.schema.items() if not s.is_scale}
        self._parts = parts

    def engram_host(self, mode: Optional[str] = None):
        """The Engram tables (one file per layer, `mode` host | disk, default the runtime's
        engram_table) and compressed-id map, or None without Engram."""
        if not self.config.has_engram:
            return None
        from ascend_v4.engram import EngramHost
        dtype = np.float64 if self.runtime.compute_dtype == "float64" else np.float32
        return EngramHost.open(self.config, self.folder, mode or self.runtime.engram_table, dtype)

    def files(self) -> List[str]:
        """Paths of the safetensors files holding this checkpoint's tensors."""
        return sorted({p.file.path for parts in self._parts.values() for p in parts})

    def names(self) -> List[str]:
        """Logical tensor names (scales excluded), in schema order."""
        return list(self.formats)

    def _stored(self, name: str) -> np.ndarray:
        parts = sorted(self._parts[name], key=lambda p: p.rank)
        dim = split_dim(name)
        if len(parts) == 1 or dim is None:          # unsplit, expert, or replicated: rank 0's
            return parts[0].file.get(parts[0].stored)
        return np.concatenate([p.file.get(p.stored) for p in parts], axis=dim)

    def rank_part(self, name: str, parts: int, index: int) -> Optional[np.ndarray]:
        """Part `index` of a split tensor when the checkpoint's mp files are split `parts` ways
        (read from that rank's file only), else None."""
        stored = sorted(self._parts[name], key=lambda p: p.rank)
        if self.layout != "converted" or len(stored) != parts or split_dim(name) is None:
            return None
        return stored[index].file.get(stored[index].stored)

    def raw(self, name: str) -> np.ndarray:
        """Stored array of `name` in the converted layout (mp shards merged; read-only memmap
        when unsplit). HF FP8 `wo_a` comes back dequantised to bf16 like the converter's."""
        if name not in self.schema:
            raise KeyError(f"{name} is not a tensor of this checkpoint")
        if self.layout == "hf" and name.endswith("wo_a.weight") and self.weight_format == "fp8":
            w = quant.dequantize_fp8(self._stored(name), self._stored(name[: -len(".weight")] + ".scale"))
            return w.astype(ml_dtypes.bfloat16)
        return self._stored(name)

    def dequantized(self, name: str) -> np.ndarray:
        """float32 value of logical tensor `name` (int tables as int32)."""
        kind = self.formats[name]
        if kind == "int":                        # copies: never a view into the mapped file
            return np.array(self.raw(name), np.int32)
        if kind in ("fp8", "fp4", "mxfp8", "mxfp4", "int8", "int4"):
            scale = self.raw(name[: -len(".weight")] + ".scale")
            if kind in ("int8", "int4"):         # [out, in] * per-channel scale [out]
                q = quant.unpack_int4(self.raw(name)) if kind == "int4" else self.raw(name)
                return np.asarray(q, np.float32) * np.asarray(scale, np.float32)[:, None]
            if kind == "fp8":
                return quant.dequantize_fp8(self.raw(name), scale)
            if kind == "mxfp8":
                return quant.dequantize_mxfp8(self.raw(name), scale)
            return quant.dequantize_fp4(self.raw(name), scale)
        return np.array(self.raw(name), np.float32)

    def iter_dequantized(self) -> Iterator[Tuple[str, np.ndarray]]:
        """Yield (name, float32 array) one tensor at a time, in schema order."""
        for name in self.formats:
            yield name, self.dequantized(name)


def _hf_schema(schema: Dict[str, TensorSpec], weight_format: str) -> Dict[str, TensorSpec]:
    """The HF release stores wo_a as FP8 with a scale (the converter dequantises it)."""
    if weight_format != "fp8":
        return schema
    out = dict(schema)
    for name, spec in schema.items():
        if name.endswith("wo_a.weight"):
            o, i = spec.shape
            out[name] = TensorSpec("F8_E4M3", spec.shape, "fp8")
            out[name[:-7] + ".scale"] = TensorSpec("F8_E8M0", (-(-o // 128), -(-i // 128)), "fp8")
    return out


def _validate(expected: Dict[str, TensorSpec], parts: Dict[str, List[_Part]], folder: str) -> None:
    problems = []
    for name, spec in expected.items():
        if name not in parts:
            problems.append(f"missing    {name}: expected {spec.dtype} {list(spec.shape)}")
            continue
        dtype, shape, issue = _merged_info(name, parts[name])
        if issue:
            problems.append(f"bad shards {issue}")
        elif shape != spec.shape or (dtype != spec.dtype and dtype not in ALTERNATIVES.get(spec.dtype, ())):
            problems.append(f"mismatch   {name}: expected {spec.dtype} {list(spec.shape)}, "
                            f"found {dtype} {list(shape)}")
    for name in parts:
        if name not in expected:
            dtype, shape, _ = _merged_info(name, parts[name])
            problems.append(f"unexpected {name}: found {dtype} {list(shape)}")
    if problems:
        raise _err(problems, f"{folder}: checkpoint does not match its config")


def _check_same_model(ckpt_cfg: ModelConfig, cfg: ModelConfig, folder: str) -> None:
    a, b = ckpt_cfg.to_dict(), cfg.to_dict()
    diffs = [f"{k}: checkpoint {a[k]!r} vs requested {b[k]!r}" for k in sorted(a)
             if k not in UNCHECKED_KEYS and a[k] != b.get(k)]
    if diffs:
        raise _err(diffs, f"{folder}: checkpoint is for another model config")


def _apply_overrides(ckpt_cfg: ModelConfig, overrides: Optional[Dict], folder: str):
    """Runtime options (RuntimeConfig) and the name may be overridden; nothing else.
    -> (config, runtime)."""
    overrides = dict(overrides or {})
    fixed = sorted(k for k in overrides if k not in OVERRIDABLE)
    if fixed:
        raise CheckpointError(f"{folder}: cannot override {', '.join(fixed)} of a checkpoint (its "
                              f"tensors fix them); only {', '.join(sorted(OVERRIDABLE))} may change")
    try:
        if "name" in overrides:
            ckpt_cfg = ckpt_cfg.replace(name=overrides.pop("name"))
        return ckpt_cfg, RuntimeConfig.for_model(ckpt_cfg, **overrides)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder}: {exc}") from None


def open_checkpoint(path_or_dir: str, cfg: Optional[ModelConfig] = None,
                    overrides: Optional[Dict] = None) -> Checkpoint:
    """Open and validate a checkpoint folder (or one of its .safetensors files).

    cfg: the config the caller expects (CheckpointError if the checkpoint's differs; its runtime
    runtime hints are kept). overrides: runtime options (RuntimeConfig fields) and the name.
    """
    folder = path_or_dir if os.path.isdir(path_or_dir) else os.path.dirname(os.path.abspath(path_or_dir))
    if not os.path.exists(path_or_dir):
        raise CheckpointError(f"{path_or_dir}: no such checkpoint file or folder")
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    converted = [f for f in files if SHARD_RE.match(os.path.basename(f))]
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors files")
    has_config = os.path.exists(os.path.join(folder, "config.json"))
    if has_config:
        try:
            ckpt_cfg = load_config(folder)
        except ConfigError as exc:
            raise CheckpointError(f"{folder}/config.json: {exc}") from None
        if cfg is not None:
            _check_same_model(ckpt_cfg, cfg, folder)
            ckpt_cfg = dataclasses.replace(ckpt_cfg, runtime_defaults=dict(cfg.runtime_defaults))
    elif cfg is not None:
        ckpt_cfg = cfg
    else:
        raise CheckpointError(f"{folder}: no config.json; pass the model config explicitly")
    ckpt_cfg, runtime = _apply_overrides(ckpt_cfg, overrides, folder)
    if converted:
        layout, parts = "converted", _converted_parts(folder, converted)
        expected = checkpoint_schema(ckpt_cfg, ckpt_cfg.dtype)
    else:
        layout, parts = "hf", _hf_parts(folder)
        expected = _hf_schema(checkpoint_schema(ckpt_cfg, ckpt_cfg.dtype), ckpt_cfg.dtype)
    _validate(expected, parts, folder)
    _validate_engram_files(ckpt_cfg, folder)
    return Checkpoint(folder, layout, ckpt_cfg, parts, runtime)


def _validate_engram_files(cfg: ModelConfig, folder: str) -> None:
    """Every Engram layer's table file exists with the geometry's size (read nothing yet)."""
    from ascend_v4.engram import geometry, table_file
    geo = geometry(cfg)
    problems = []
    for layer in (geo.layer_ids if geo else ()):
        path = table_file(folder, layer)
        size = os.path.getsize(path) if os.path.exists(path) else None
        if size != geo.table_bytes:
            problems.append(f"{path}: {'missing' if size is None else f'{size} bytes'}; expected "
                            f"{geo.table_bytes} bytes = {geo.rows} rows x {geo.row_bytes} bytes")
    if problems:
        raise _err(problems, f"{folder}: Engram table files do not match the config")
