"""Convert a checkpoint tensor by tensor into a temporary folder next to `out`, renamed at the end.

Output: `model0-mp1.safetensors` (names, dtypes and shapes = `checkpoint_schema` of the output
config, so the loader reads it back), `config.json` (with its `quantization` entry: role ->
format), `quant_config.json` (the description: SoC, scheme, per tensor its format, source format
and scale; activation scheme; source checkpoint size and header hash) and the tokenizer files.
Memory: one source tensor (float32 when it is requantised) and its output at a time. On any
error, or an interrupt, the temporary folder is removed: no partial output is ever left.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Dict, Iterator, Tuple

import ml_dtypes
import numpy as np

from ascend_v4 import quant
from ascend_v4.checkpoint import Checkpoint, open_checkpoint
from ascend_v4.checkpoint.schema import TensorSpec, weight_role
from ascend_v4.safetensors_io import DTYPES, StreamWriter
from ascend_v4.tokenizer import FILES as TOKENIZER_FILES

from . import ConvertError
from .plan import ConvertPlan, make_plan

OUT_FILE = "model0-mp1.safetensors"
DESCRIPTION = "quant_config.json"
ACTIVATION_INT8 = ("dynamic per-token symmetric INT8 (npu_dynamic_quant): x_scale = rowmax|x| / 127, "
                   "q = clamp(round_half_even(x / x_scale), -127, 127)")
PRODUCT_INT8 = ("npu_quant_matmul: y = (q_x @ q_w^T, INT32 accumulation) * w_scale[out] * "
                "x_scale[token]")
KV_CACHE_ROUNDING = {
    "fp8": "release MODEL1: 448 non-RoPE dims e4m3 per 64 with ue8m0 scales, 64 RoPE dims bf16",
    "bf16": "C16: every dim bf16 (round half to even)",
    "int8": ("C8: non-RoPE dims symmetric INT8 per token per 64-dim tile, scale = max(amax, 1e-4) / 127 "
             "(float32), q = clamp(round_half_even(x / scale), -127, 127); RoPE dims bf16")}
INDEXER_CACHE_ROUNDING = {
    "fp4": "release: Hadamard-rotated keys and queries e2m1 per 32 with ue8m0 scales",
    "int8": ("A8C8: Hadamard-rotated keys per token, queries per token-head, symmetric INT8: scale = "
             "amax / 127, q = clamp(round_half_even(x / scale), -127, 127)")}
WEIGHT_INT8 = ("static symmetric per-output-channel INT8: w_scale = amax(|w| of the row) / 127 (float32), "
               "q_w = clamp(round_half_even(w / w_scale), -127, 127), w = the exact dequantised source")


def _stored(arr: np.ndarray, dtype: str) -> np.ndarray:
    """A source array in the output's safetensors dtype (codes re-viewed, floats cast)."""
    target = DTYPES[dtype]
    arr = np.asarray(arr)
    if arr.dtype == target:
        return arr
    if dtype in ("I8", "F8_E4M3") and arr.dtype.itemsize == 1:
        return arr.view(target)
    return arr.astype(target)


def convert_tensors(ckpt: Checkpoint, schema: Dict[str, TensorSpec]) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, stored array) of every output tensor, one source tensor at a time."""
    for name in ckpt.names():
        spec = schema[name]
        src = ckpt.formats[name]
        if spec.kind == "int8":                          # [out, in] int8 + scale [out] float32
            q, s = quant.quantize_int8_rows(ckpt.dequantized(name))
            yield name, q
            yield name[: -len(".weight")] + ".scale", s
        elif spec.kind == src:                           # same format: the stored bytes
            yield name, _stored(ckpt.raw(name), spec.dtype)
            if spec.kind in ("fp8", "fp4"):
                scale = name[: -len(".weight")] + ".scale"
                yield scale, _stored(ckpt.raw(scale), schema[scale].dtype)
        elif spec.kind == "bf16":                        # fp8 / fp4 -> exact value rounded to bf16
            yield name, ckpt.dequantized(name).astype(ml_dtypes.bfloat16)
        else:
            raise ConvertError(f"{name}: no conversion from {src} to {spec.kind}")


def _source_id(ckpt: Checkpoint) -> Dict[str, object]:
    """Size and a hash of the headers (names, dtypes, shapes, offsets) of the source files: cheap
    on a terabyte checkpoint, and it changes when any tensor's layout does."""
    files = ckpt.files()
    h, size = hashlib.sha256(), 0
    for path in files:
        size += os.path.getsize(path)
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            h.update(os.path.basename(path).encode() + fh.read(n))
    return {"folder": os.path.abspath(ckpt.folder), "layout": ckpt.layout, "weight_format": ckpt.weight_format,
            "expert_dtype": ckpt.config.routed_expert_dtype, "files": len(files), "bytes": size,
            "header_sha256": h.hexdigest()}


def describe(plan: ConvertPlan, ckpt: Checkpoint, schema: Dict[str, TensorSpec]) -> Dict[str, object]:
    """The quant_config.json description."""
    tensors = {}
    for name in ckpt.names():
        spec = schema[name]
        entry = {"format": spec.kind, "dtype": spec.dtype, "shape": list(spec.shape),
                 "source_format": ckpt.formats[name], "role": weight_role(name)}
        scale = name[: -len(".weight")] + ".scale"
        if scale in schema:
            s = schema[scale]
            entry["scale"] = {"name": scale, "dtype": s.dtype, "shape": list(s.shape),
                              "granularity": {"int8": "per-output-channel", "fp8": "128x128 blocks",
                                              "fp4": "1x32 blocks"}[spec.kind]}
        tensors[name] = entry
    int8 = any(f == "int8" for f in plan.roles.values()) and not plan.copy
    return {"format": "ascend-v4 converted", "soc": plan.soc, "scheme": plan.scheme,
            "role_formats": plan.roles, "kv_cache": plan.kv_cache, "indexer_cache": plan.indexer_cache,
            "kv_cache_rounding": KV_CACHE_ROUNDING[plan.kv_cache],
            "indexer_cache_rounding": INDEXER_CACHE_ROUNDING[plan.indexer_cache],
            "cache_storage": "the model rounds the cache entries as these formats store them (config.json "
                             "kv_cache / indexer_cache); its state slots hold the rounded values in the compute dtype",
            "weights_int8": WEIGHT_INT8 if int8 else None,
            "activations_int8": ACTIVATION_INT8 if int8 else None,
            "product_int8": PRODUCT_INT8 if int8 else None,
            "source": _source_id(ckpt), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tensors": tensors}


def convert_checkpoint(source: str, out: str, soc: str, scheme=None, kv_cache=None,
                       log=lambda m: None) -> Dict[str, object]:
    """Convert checkpoint folder `source` for `soc` into the new folder `out`; -> the description."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        raise ConvertError(f"{out} exists: choose a new --out folder")
    if not os.path.isdir(os.path.dirname(out)):
        raise ConvertError(f"{os.path.dirname(out)}: the parent of --out does not exist")
    if not os.path.isdir(source):
        raise ConvertError(f"{source}: not a checkpoint folder")
    ckpt = open_checkpoint(source)
    if ckpt.config.quantization:
        raise ConvertError(f"{source} is already converted ({ckpt.config.quantization}): convert the "
                           "official checkpoint instead")
    plan = make_plan(ckpt.config, soc, scheme, kv_cache)
    schema = plan.schema()
    missing = sorted(set(ckpt.names()) - set(schema))
    if missing:
        raise ConvertError(f"no output tensor for {missing[:5]}")
    tmp = f"{out}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    writer = None
    try:
        layout = {n: (s.dtype, s.shape) for n, s in schema.items()}
        writer = StreamWriter(os.path.join(tmp, OUT_FILE), layout,
                              {"format": "ascend-v4 converted", "scheme": plan.scheme, "soc": plan.soc})
        t0 = time.perf_counter()
        for name, arr in convert_tensors(ckpt, schema):
            writer.write(name, arr)
            del arr
        writer.close()
        log(f"wrote {len(schema)} tensors in {time.perf_counter() - t0:.1f} s")
        description = describe(plan, ckpt, schema)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(plan.config.to_dict(), fh, indent=2)
        with open(os.path.join(tmp, DESCRIPTION), "w", encoding="utf-8") as fh:
            json.dump(description, fh, indent=1)
        for fname in TOKENIZER_FILES:
            path = os.path.join(ckpt.folder, fname)
            if os.path.exists(path):
                shutil.copyfile(path, os.path.join(tmp, fname))
        os.rename(tmp, out)
        return description
    finally:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
