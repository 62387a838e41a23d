"""Checkpoint tensors -> float32 weights, and the quantisation-aware `linear` (V4_SPEC section 9).

Stored formats (converted reference checkpoint, section 10):
  fp8  `X.weight` float8_e4m3fn [out, in] + `X.scale` float8_e8m0fnu [ceil(out/128), ceil(in/128)]
  fp4  `X.weight` int8/uint8 [out, in/2] (two e2m1 codes per byte, low nibble = element 2j)
       + `X.scale` float8_e8m0fnu [out, in/32]
  bf16 / fp32 tensors as they are; integer tables (tid2eid) stay integer.
Converted for the 950 (cfg.quantization names the role 'mxfp8' / 'mxfp4'):
  mxfp8 `X.weight` float8_e4m3fn [out, in] + `X.scale` float8_e8m0fnu [out, in/32]
  mxfp4 the fp4 bytes; its activations are MXFP8 like mxfp8's.
Converted for the 910B/910C ('int8' W8A8, 'int4' W4A8): `X.weight` int8 [out, in] (int4: [out, in/2],
two's complement nibbles, low = even column) + `X.scale` float32 [out]; `linear` quantises x per token
to INT8 (scale rowmax|x| / 127, round half even), sums q_x q_w exactly (int64) and scales by w_scale
and x_scale (npu_dynamic_quant + npu_quant_matmul).
`dequantize` records each weight's stored format in W['__formats__'] so that `linear` applies
the activation fp8 quant-dequant exactly where the reference's `linear` does (fp8/fp4 weights),
and the MXFP8 one (1x32, OCP scales) for mxfp8/mxfp4 weights.
"""
from __future__ import annotations

from typing import Dict

import ml_dtypes
import numpy as np

from .numerics import E2M1_VALUES, fp8_quant_dequant, mxfp8_quant_dequant, real

BLOCK = 128
FP4_BLOCK = 32


class WeightError(ValueError):
    """A checkpoint tensor has the wrong dtype or shape, or its scale is missing."""


def _fp8_weight(name, w, scale):
    out, inp = w.shape
    want = (-(-out // BLOCK), -(-inp // BLOCK))
    if scale.shape != want:
        raise WeightError(f"{name}: fp8 weight {w.shape} needs a scale of shape {want}, "
                          f"got {scale.shape}")
    s = np.repeat(np.repeat(scale.astype(real()), BLOCK, 0), BLOCK, 1)[:out, :inp]
    return w.astype(real()) * s


def _mxfp8_weight(name, w, scale):
    out, inp = w.shape
    if inp % FP4_BLOCK or scale.shape != (out, inp // FP4_BLOCK):
        raise WeightError(f"{name}: mxfp8 weight {w.shape} needs a scale of shape "
                          f"{(out, inp // FP4_BLOCK)}, got {scale.shape}")
    return w.astype(real()) * np.repeat(scale.astype(real()), FP4_BLOCK, 1)


def _role_formats(cfg):
    """weight name -> its converted format (cfg.quantization by role: int8 | int4 | mxfp8 | mxfp4) or None."""
    from ascend_v4.checkpoint.schema import weight_role
    q = dict(getattr(cfg, "quantization", None) or {})
    return (lambda name: q.get(weight_role(name))) if q else (lambda name: None)


def _int_weight(name, w, scale, fmt):
    """int8 [out, in] or packed int4 [out, in/2] + scale [out] -> (integer values int64 [out, in], scale)."""
    b = np.asarray(w).view(np.int8)
    if fmt == "int4":
        lo = (b.view(np.uint8) & 0x0F).astype(np.int64)
        hi = (b.view(np.uint8) >> 4).astype(np.int64)
        q = np.empty((b.shape[0], 2 * b.shape[1]), np.int64)
        q[:, 0::2], q[:, 1::2] = lo, hi
        q = np.where(q >= 8, q - 16, q)
    else:
        q = b.astype(np.int64)
    if np.asarray(scale).shape != (q.shape[0],):
        raise WeightError(f"{name}: {fmt} weight {q.shape} needs a scale of shape ({q.shape[0]},)")
    return q, np.asarray(scale, np.float32)


def int8_linear(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x [..., in] (real) through integer weights q [out, in] with per-channel scale [out]."""
    x = np.asarray(x, real())
    amax = np.abs(x).max(-1, keepdims=True)
    xs = np.where(amax > 0, amax / real()(127), real()(1)).astype(real())
    qx = np.clip(np.rint(x / xs), -127, 127).astype(np.int64)
    acc = np.matmul(qx, q.T)
    return (acc.astype(real()) * scale.astype(real()) * xs).astype(real())


def unpack_fp4(packed: np.ndarray) -> np.ndarray:
    """int8/uint8 [out, in/2] -> e2m1 values float32 [out, in]; low nibble is element 2j."""
    b = packed.view(np.uint8)
    vals = np.empty((b.shape[0], b.shape[1] * 2), real())
    vals[:, 0::2] = E2M1_VALUES[b & 0x0F]
    vals[:, 1::2] = E2M1_VALUES[b >> 4]
    return vals


def _fp4_weight(name, w, scale):
    out, half = w.shape
    want = (out, 2 * half // FP4_BLOCK)
    if (2 * half) % FP4_BLOCK or scale.shape != want:
        raise WeightError(f"{name}: fp4 weight {w.shape} (packed) needs a scale of shape "
                          f"{want}, got {scale.shape}")
    return unpack_fp4(w) * np.repeat(scale.astype(real()), FP4_BLOCK, 1)


def dequantize(tensors: Dict[str, np.ndarray], cfg) -> Dict[str, object]:
    """Stored tensors -> {name: float32 array} (int tables stay int) + '__formats__'.

    '__formats__' maps every float tensor name to 'fp8' | 'fp4' | 'bf16' | 'fp32' | 'fp16';
    '__scale_fmt__' holds cfg.scale_fmt (the activation-scale rounding used by `linear`).
    """
    W: Dict[str, object] = {}
    formats: Dict[str, str] = {}
    mx = _role_formats(cfg)
    ints: Dict[str, object] = {}
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if name.endswith(".scale"):
            if name[:-len(".scale")] + ".weight" not in tensors:
                raise WeightError(f"{name}: scale without a matching weight")
            continue
        scale_name = name[:-len(".weight")] + ".scale" if name.endswith(".weight") else None
        if mx(name) in ("int8", "int4") and scale_name in tensors:
            ints[name] = _int_weight(name, arr, tensors[scale_name], mx(name))
            W[name], formats[name] = ints[name][0].astype(real()) * ints[name][1][:, None].astype(real()), mx(name)
        elif mx(name) == "mxfp8":
            if scale_name not in tensors or arr.dtype != ml_dtypes.float8_e4m3fn or arr.ndim != 2:
                raise WeightError(f"{name}: an mxfp8 weight is 2-D float8_e4m3fn with a scale tensor")
            W[name], formats[name] = _mxfp8_weight(name, arr, np.asarray(tensors[scale_name])), "mxfp8"
        elif arr.dtype == ml_dtypes.float8_e4m3fn:
            if scale_name not in tensors:
                raise WeightError(f"{name}: fp8 weight without its scale tensor {scale_name}")
            if arr.ndim != 2:
                raise WeightError(f"{name}: fp8 weight must be 2-D, got shape {arr.shape}")
            W[name], formats[name] = _fp8_weight(name, arr, np.asarray(tensors[scale_name])), "fp8"
        elif arr.dtype in (np.int8, np.uint8):
            if scale_name not in tensors:
                raise WeightError(f"{name}: packed fp4 weight without its scale tensor {scale_name}")
            if arr.ndim != 2:
                raise WeightError(f"{name}: packed fp4 weight must be 2-D, got shape {arr.shape}")
            W[name], formats[name] = _fp4_weight(name, arr, np.asarray(tensors[scale_name])), mx(name) or "fp4"
        elif arr.dtype == ml_dtypes.bfloat16:
            W[name], formats[name] = arr.astype(real()), "bf16"
        elif arr.dtype == np.float32:
            W[name], formats[name] = arr.astype(real(), copy=True), "fp32"
        elif arr.dtype == np.float16:
            W[name], formats[name] = arr.astype(real()), "fp16"
        elif np.issubdtype(arr.dtype, np.integer):
            W[name] = arr.astype(np.int64)
        else:
            raise WeightError(f"{name}: unsupported stored dtype {arr.dtype}")
    W["__formats__"] = formats
    W["__int__"] = ints
    W["__scale_fmt__"] = "ue8m0"  # reference: scale_dtype fp8 forces ue8m0 whatever scale_fmt says
    return W


def get(W, name: str) -> np.ndarray:
    """W[name] with an error naming the missing tensor."""
    try:
        return W[name]
    except KeyError:
        raise WeightError(f"missing tensor {name!r}") from None


def linear(x: np.ndarray, W, name: str) -> np.ndarray:
    """x [..., in] @ weight[out, in]^T -> [..., out] float32, like the reference `linear`.

    `name` is the module ('layers.0.attn.wq_a') or its weight ('...wq_a.weight'). If the weight
    was stored fp8 or fp4, x is first fp8 quant-dequantised in tiles of 128 along `in`
    (scales rounded per W['__scale_fmt__']); bf16/fp32 weights multiply x as it is.
    """
    wname = name if name.endswith(".weight") else name + ".weight"
    w = get(W, wname)
    if x.shape[-1] != w.shape[1]:
        raise WeightError(f"{wname}: input has {x.shape[-1]} features, weight expects {w.shape[1]}")
    fmt = W.get("__formats__", {}).get(wname)
    if fmt in ("int8", "int4"):
        return int8_linear(x, *W["__int__"][wname])
    if fmt in ("fp8", "fp4"):
        x = fp8_quant_dequant(x, BLOCK, W.get("__scale_fmt__", "ue8m0"))
    elif fmt in ("mxfp8", "mxfp4"):
        x = mxfp8_quant_dequant(x)
    return np.matmul(np.asarray(x, real()), w.T).astype(real())
