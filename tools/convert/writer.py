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
from typing import Dict, Iterator, Optional, Tuple

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
ACTIVATION_MXFP8 = ("dynamic MXFP8 (OCP MX v1.0) per 1x32 block along the input dim: scale = "
                    "2^(floor(log2 amax) - 8) (ue8m0), q = e4m3(clamp(x / scale, -448, 448)) round half to even")
WEIGHT_MXFP8 = ("MXFP8: e4m3 codes + one ue8m0 scale per 1x32 block along the input dim, scale = "
                "2^ceil(log2(amax / 448)) (the OCP scale 2^(floor(log2 amax) - 8), one power higher where "
                "that would saturate the block's largest element): an FP8 128x128-block source is kept "
                "exactly (`changed` counts weights whose value moved)")
WEIGHT_MXFP4 = ("MXFP4: e2m1 codes two per byte + one ue8m0 scale per 1x32 block: the release's FP4 experts "
                "are this format already (bytes copied); other sources quantised with scale "
                "2^ceil(log2(amax / 6)), round half to even")
WEIGHT_INT4 = ("static symmetric per-output-channel INT4 (W4A8): w_scale = amax(|w| of the row) / 7 "
               "(float32), q_w = clamp(round_half_even(w / w_scale), -7, 7), two's complement nibbles two per "
               "byte (low nibble = even input column); product as W8A8 with INT8 activations")
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
    if dtype in ("I8", "F8_E4M3", "F8_E8M0") and arr.dtype.itemsize == 1:
        return arr.view(target)
    return arr.astype(target)


def convert_tensors(ckpt: Checkpoint, schema: Dict[str, TensorSpec],
                    changed: Optional[Dict[str, int]] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, stored array) of every output tensor, one source tensor at a time. `changed` gets,
    per requantised MXFP8 / MXFP4 tensor, how many weights differ from the source's value."""
    changed = {} if changed is None else changed
    for name in ckpt.names():
        spec = schema[name]
        src = ckpt.formats[name]
        stem = name[: -len(".weight")]
        if spec.kind in ("int8", "int4"):                # [out, in] int8 | [out, in/2] int4 + scale [out]
            rows = quant.quantize_int8_rows if spec.kind == "int8" else quant.quantize_int4_rows
            q, s = rows(ckpt.dequantized(name))
            yield name, q
            yield stem + ".scale", s
        elif spec.kind == "mxfp4" and src == "fp4":      # the same bytes
            yield name, _stored(ckpt.raw(name), spec.dtype)
            yield stem + ".scale", _stored(ckpt.raw(stem + ".scale"), schema[stem + ".scale"].dtype)
            changed[name] = 0
        elif spec.kind in ("mxfp8", "mxfp4"):            # [out, in] codes + ue8m0 [out, in/32]
            value = ckpt.dequantized(name)
            if spec.kind == "mxfp8":
                q, s = quant.quantize_mxfp8(value)
                back = quant.dequantize_mxfp8(q, s)
            else:
                q, s = quant.quantize_fp4(value)
                back = quant.dequantize_fp4(q, s)
            changed[name] = int(np.count_nonzero(back != value))
            yield name, _stored(q, spec.dtype)
            yield stem + ".scale", _stored(s, schema[stem + ".scale"].dtype)
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


def describe(plan: ConvertPlan, ckpt: Checkpoint, schema: Dict[str, TensorSpec],
             changed: Optional[Dict[str, int]] = None) -> Dict[str, object]:
    """The quant_config.json description (`changed`: convert_tensors' counts)."""
    changed = changed or {}
    tensors = {}
    for name in ckpt.names():
        spec = schema[name]
        entry = {"format": spec.kind, "dtype": spec.dtype, "shape": list(spec.shape),
                 "source_format": ckpt.formats[name], "role": weight_role(name)}
        scale = name[: -len(".weight")] + ".scale"
        if scale in schema:
            s = schema[scale]
            entry["scale"] = {"name": scale, "dtype": s.dtype, "shape": list(s.shape),
                              "granularity": {"int8": "per-output-channel", "int4": "per-output-channel",
                                              "fp8": "128x128 blocks",
                                              "fp4": "1x32 blocks", "mxfp8": "1x32 blocks",
                                              "mxfp4": "1x32 blocks"}[spec.kind]}
        if name in changed:
            entry["changed"] = changed[name]
        tensors[name] = entry
    int8 = any(f in ("int8", "int4") for f in plan.roles.values()) and not plan.copy
    int4 = any(f == "int4" for f in plan.roles.values()) and not plan.copy
    mx = any(f in ("mxfp8", "mxfp4") for f in plan.roles.values()) and not plan.copy
    return {"format": "ascend-v4 converted", "soc": plan.soc, "scheme": plan.scheme,
            "role_formats": plan.roles, "kv_cache": plan.kv_cache, "indexer_cache": plan.indexer_cache,
            "weights_int8": WEIGHT_INT8 if int8 else None, "weights_int4": WEIGHT_INT4 if int4 else None,
            "kv_cache_rounding": KV_CACHE_ROUNDING[plan.kv_cache],
            "indexer_cache_rounding": INDEXER_CACHE_ROUNDING[plan.indexer_cache],
            "cache_storage": "the model rounds the cache entries as these formats store them (config.json "
                             "kv_cache / indexer_cache); its state slots hold the rounded values in the compute dtype",
            "activations_int8": ACTIVATION_INT8 if int8 else None,
            "product_int8": PRODUCT_INT8 if int8 else None,
            "weights_mxfp8": WEIGHT_MXFP8 if mx else None, "weights_mxfp4": WEIGHT_MXFP4 if mx else None,
            "activations_mxfp8": ACTIVATION_MXFP8 if mx else None,
            "weights_changed": sum(changed.values()) if mx else None,
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
        changed: Dict[str, int] = {}
        for name, arr in convert_tensors(ckpt, schema, changed):
            writer.write(name, arr)
            del arr
        writer.close()
        log(f"wrote {len(schema)} tensors in {time.perf_counter() - t0:.1f} s")
        description = describe(plan, ckpt, schema, changed)
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
