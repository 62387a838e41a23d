"""Weights held in their checkpoint format, dequantised inside the graph at use (V4_SPEC 9).

A `StoredWeight` is one matrix [out, in], or a stack of experts [E, out, in], in one of the
checkpoint's formats (`kind`, from `checkpoint.schema.weight_kinds`):
  fp8   weight uint8 e4m3 codes [.., out, in]   + scale uint8 ue8m0 [.., ceil(out/128), ceil(in/128)]
  fp4   weight uint8 two e2m1 codes per byte [.., out, in/2] (low nibble = even column)
        + scale uint8 ue8m0 [.., out, in/32]
  bf16  weight bfloat16 [.., out, in]; for gathered weights (embedding, stacked experts) the bit
        patterns as uint16, since MindSpore's CPU Gather has no bf16 kernel
  mxfp8 weight uint8 e4m3 codes [.., out, in] + scale uint8 ue8m0 [.., out, in/32] (MXFP8,
        converted for the 950; an MXFP4 weight is held as fp4: the same bytes)
  int8  weight int8 [.., out, in] + scale float32 [.., out]: symmetric per-output-channel INT8
        (W8A8, converted checkpoints); `Linear` multiplies it as an integer matmul
        (`linear.w8a8_product`), `dequantized()` = weight * scale is for inspection only. An INT4
        checkpoint weight (W4A8: [.., out, in/2] packed) is held unpacked as int8 (values in [-7, 7]):
        the same integer product
  float weight in the compute dtype (fp32 checkpoint tensors, and every weight when the
        runtime option weight_storage is 'float', the verification layout)
The scales are ue8m0 (powers of two), kept as their exponent byte as stored (FP4's 1x32 scales
would cost 0.125 byte per weight as float32, a quarter of the codes) and decoded by a 256-value
lookup. Dequantisation is a table lookup of the codes (FP4: one lookup gives a byte's
two values; bf16 bits: a 65,536-value table) times the block scale, in the compute dtype: bit-identical to dequantising in
numpy. `take(index)` dequantises only the gathered experts (the sparse MoE's tiles).
"""
from __future__ import annotations

from typing import Tuple

import ml_dtypes
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ascend_v4 import quant
from ascend_v4.kernels import weight_dequant, weight_matmul

KINDS = ("fp8", "fp4", "mxfp8", "bf16", "int8", "float")
SCALED = ("fp8", "fp4", "mxfp8", "int8")       # kinds with a `.scale` tensor
CKPT_SCALED = SCALED + ("mxfp4", "int4")      # checkpoint kinds with one (MXFP4 held as fp4, INT4 as int8)
FP8_BLOCK = quant.FP8_BLOCK
FP4_BLOCK = quant.FP4_BLOCK


def fp8_code_values(dtype) -> np.ndarray:
    """e4m3 value of every byte [256] (the two NaN codes map to 0: they never occur in weights)."""
    v = np.arange(256, dtype=np.uint8).view(quant.E4M3).astype(np.float64)
    return np.where(np.isnan(v), 0.0, v).astype(dtype)


def fp4_pair_values(dtype) -> np.ndarray:
    """The two e2m1 values of every packed byte [256, 2]: (low nibble, high nibble)."""
    b = np.arange(256)
    return np.stack([quant.FP4_VALUES[b & 15], quant.FP4_VALUES[b >> 4]], -1).astype(dtype)


def e8m0_values(dtype) -> np.ndarray:
    """The value 2^(e - 127) of every ue8m0 exponent byte [256] (255, NaN, maps to 0: never a scale)."""
    e = np.arange(256, dtype=np.float64)
    return np.where(e < 255, np.exp2(e - 127), 0.0).astype(dtype)


def e8m0_bytes(scale) -> np.ndarray:
    """A ue8m0 scale array (float8_e8m0fnu, or float32 powers of two) -> its exponent bytes (uint8)."""
    scale = np.asarray(scale)
    if scale.dtype == quant.E8M0:
        return scale.view(np.uint8)
    as_e8m0 = scale.astype(np.float32).astype(quant.E8M0)
    if not np.array_equal(as_e8m0.astype(np.float32), scale.astype(np.float32)):
        raise ValueError("scales must be powers of two (ue8m0)")
    return as_e8m0.view(np.uint8)


def bf16_values(dtype) -> np.ndarray:
    """The value of every bf16 bit pattern [65536] (NaN patterns map to 0: never in weights)."""
    with np.errstate(invalid="ignore"):
        v = np.arange(65536, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)
    return np.where(np.isfinite(v), v, 0.0).astype(dtype)


_TABLES = {}


def _table(values, dtype) -> Tensor:
    """One shared constant tensor per (table, dtype) for all the cells of a process."""
    key = (values.__name__, np.dtype(dtype).name)
    if key not in _TABLES:
        _TABLES[key] = Tensor(values(dtype))
    return _TABLES[key]


def _param(array: np.ndarray, name: str) -> ms.Parameter:
    return ms.Parameter(Tensor(array), name=name, requires_grad=False)


def _zeros(shape, dtype) -> np.ndarray:
    if dtype == "bf16":
        return np.zeros(shape, ml_dtypes.bfloat16)
    return np.zeros(shape, dtype)


class StoredWeight(nn.Cell):
    """A weight [*lead, out, in] in checkpoint format `kind`; `dequantized()` -> compute dtype."""

    def __init__(self, shape: Tuple[int, ...], kind: str, dtype, row_lookup: bool = False,
                 kernels: str = "composite"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"weight kind must be one of {KINDS}, got {kind!r}")
        *lead, out, inp = shape
        self.kind, self.shape, self.lead = kind, tuple(shape), tuple(lead)
        self.expert_ids = tuple(range(lead[0])) if lead else ()   # a stack's global expert ids (EP)
        self.bits = kind == "bf16" and (row_lookup or bool(lead))     # gathered: see below
        self.compute = ms.float64 if np.dtype(dtype) == np.float64 else ms.float32
        if kind == "fp8":
            self.weight = _param(np.zeros(shape, np.uint8), "weight")
            self.scale = _param(np.zeros((*lead, -(-out // FP8_BLOCK), -(-inp // FP8_BLOCK)), np.uint8),
                                "scale")
            self.table = _table(fp8_code_values, dtype)
            self.scale_table = _table(e8m0_values, dtype)
            self.row_block = Tensor(np.arange(out, dtype=np.int32) // FP8_BLOCK)
            self.col_block = Tensor(np.arange(inp, dtype=np.int32) // FP8_BLOCK)
        elif kind == "fp4":
            if inp % FP4_BLOCK:
                raise ValueError(f"an FP4 weight needs in % {FP4_BLOCK} == 0, got shape {shape}")
            self.weight = _param(np.zeros((*lead, out, inp // 2), np.uint8), "weight")
            self.scale = _param(np.zeros((*lead, out, inp // FP4_BLOCK), np.uint8), "scale")
            self.table = _table(fp4_pair_values, dtype)
            self.scale_table = _table(e8m0_values, dtype)
        elif kind == "mxfp8":
            if inp % FP4_BLOCK:
                raise ValueError(f"an MXFP8 weight needs in % {FP4_BLOCK} == 0, got shape {shape}")
            self.weight = _param(np.zeros(shape, np.uint8), "weight")                 # [*lead, out, in]
            self.scale = _param(np.zeros((*lead, out, inp // FP4_BLOCK), np.uint8), "scale")
            self.table = _table(fp8_code_values, dtype)
            self.scale_table = _table(e8m0_values, dtype)
        elif kind == "int8":
            self.weight = _param(np.zeros(shape, np.int8), "weight")              # [*lead, out, in]
            self.scale = _param(np.zeros((*lead, out), np.float32), "scale")      # [*lead, out]
        elif kind == "bf16":
            # gathered weights (an embedding, stacked experts) keep the bit patterns as uint16,
            # since the CPU Gather has no bf16 kernel; gathered rows are decoded by a lookup
            self.weight = _param(np.zeros(shape, np.uint16) if self.bits else _zeros(shape, "bf16"), "weight")
            if self.bits:
                self.table = _table(bf16_values, dtype)
        else:
            self.weight = _param(np.zeros(shape, dtype), "weight")
        # the fused weight-quant matmul over the stored bytes (kernels 'fused'), else None
        self.matmul = weight_matmul(kernels, kind, out, bool(lead)) if not row_lookup else None
        self.dequant = weight_dequant(kernels, kind, shape, dtype)      # one-kernel dequantisation, or None

    # ---- graph side -------------------------------------------------------------------------
    def _dequant(self, codes, scale):
        """codes/scale of n matrices [n.., ...] -> [n.., out, in] in the compute dtype."""
        if self.kind == "fp8":
            values = ops.gather(self.table, codes.astype(ms.int32), 0)             # [.., out, in]
            full = ops.gather(ops.gather(scale, self.row_block, scale.ndim - 2), self.col_block,
                              scale.ndim - 1)
            return values * self._scale_value(full)
        if self.kind == "fp4":
            pairs = ops.gather(self.table, codes.astype(ms.int32), 0)              # [.., out, in/2, 2]
            lead, out, half = codes.shape[:-2], codes.shape[-2], codes.shape[-1]
            blocks = pairs.reshape(lead + (out, 2 * half // FP4_BLOCK, FP4_BLOCK))
            return (blocks * self._scale_value(scale).expand_dims(-1)).reshape(lead + (out, 2 * half))
        if self.kind == "mxfp8":
            values = ops.gather(self.table, codes.astype(ms.int32), 0)             # [.., out, in]
            lead, out, inp = codes.shape[:-2], codes.shape[-2], codes.shape[-1]
            blocks = values.reshape(lead + (out, inp // FP4_BLOCK, FP4_BLOCK))
            return (blocks * self._scale_value(scale).expand_dims(-1)).reshape(lead + (out, inp))
        if self.kind == "int8":
            return codes.astype(self.compute) * scale.astype(self.compute).expand_dims(-1)
        if self.bits:
            return self._bf16_bits_value(codes)
        return codes.astype(self.compute)

    def dequantized(self, after=None):
        """The whole weight [*lead, out, in] in the compute dtype, computed after `after` (below)."""
        weight, scale = self._ordered(after)
        if self.dequant is not None:
            return self.dequant(weight, scale)
        return self._dequant(weight, scale)

    def scale_or_none(self):
        """The scale parameter of a scaled kind, else None (the fused matmul's scale input)."""
        return self.scale if self.kind in SCALED else None

    def _ordered(self, after):
        """(weight, scale or None), made to depend on the activation `after` when given. A
        dequantisation reads parameters only, so the graph scheduler may otherwise run every
        layer's at the start and hold all their full-size outputs at once (measured: the `small`
        preset's prefill peaked at 12.8 GB for a 2.4 GB checkpoint); ordered after its input, each
        is computed just before its product and its memory reused by the next."""
        scale = self.scale_or_none()
        if after is None:
            return self.weight, scale
        weight = ops.depend(self.weight, after)
        return weight, (None if scale is None else ops.depend(scale, after))

    def take(self, index, after=None):
        """Experts `index` [n] of a stacked weight -> [n, out, in] (only those are dequantised),
        computed after `after`."""
        weight, scale = self._ordered(after)
        if self.dequant is not None:
            return self.dequant(weight, scale, index)
        codes = ops.gather(weight, index, 0)
        return self._dequant(codes, None if scale is None else ops.gather(scale, index, 0))

    def rows(self, index):
        """Rows `index` [...] of a 2-D weight (an embedding) -> [..., in] in the compute dtype."""
        if self.bits:
            return self._bf16_bits_value(ops.gather(self.weight, index, 0))
        if self.kind == "float":
            return ops.gather(self.weight, index, 0)
        return ops.gather(self.dequantized(after=index), index, 0)

    def _scale_value(self, exponents):
        """ue8m0 exponent bytes -> 2^(e - 127) in the compute dtype (a lookup: exact)."""
        return ops.gather(self.scale_table, exponents.astype(ms.int32), 0)

    def _bf16_bits_value(self, bits):
        """bf16 bit patterns (uint16) -> exact values, by a lookup in the 65,536-value table."""
        return ops.gather(self.table, bits.astype(ms.int32), 0)

    # ---- load side --------------------------------------------------------------------------
    def stored_arrays(self, ckpt_kind: str, weight: np.ndarray, scale) -> Tuple[np.ndarray, object]:
        """One matrix as the checkpoint stores it (format `ckpt_kind`) -> (weight, scale) arrays
        for this cell's parameters (one expert's when stacked; scale None without one)."""
        ckpt_kind = "fp4" if ckpt_kind == "mxfp4" else ckpt_kind      # the same bytes
        if self.kind == ckpt_kind and ckpt_kind in ("fp8", "fp4", "mxfp8"):
            return np.asarray(weight).view(np.uint8), e8m0_bytes(scale)
        if self.kind == ckpt_kind == "int8":
            return np.asarray(weight).view(np.int8), np.asarray(scale, np.float32)
        if self.kind == "int8" and ckpt_kind == "int4":
            return quant.unpack_int4(weight), np.asarray(scale, np.float32)
        if "int8" in (self.kind, ckpt_kind):
            raise ValueError(f"an int8 weight holds only an int8 checkpoint tensor, got {ckpt_kind} "
                             f"for {self.kind}")
        if ckpt_kind == "fp8":
            value = quant.dequantize_fp8(np.asarray(weight).view(quant.E4M3), scale)
        elif ckpt_kind == "fp4":
            value = quant.dequantize_fp4(weight, scale)
        elif ckpt_kind == "mxfp8":
            value = quant.dequantize_mxfp8(weight, e8m0_bytes(scale))
        else:
            value = np.asarray(weight)
        if self.kind == "bf16":
            b = value.astype(ml_dtypes.bfloat16)
            if value.dtype != b.dtype and not np.array_equal(b.astype(np.float32), value.astype(np.float32)):
                raise ValueError("a bf16 weight stored as float32 is not bf16-exact")
            return (b.view(np.uint16) if self.bits else b), None
        if self.kind != "float":
            raise ValueError(f"a {ckpt_kind} checkpoint tensor cannot fill a {self.kind} weight")
        return value.astype(_np_of(self.compute)), None

    def set_arrays(self, weight: np.ndarray, scale) -> None:
        self.weight.set_data(Tensor(np.ascontiguousarray(weight)))
        if scale is not None:
            self.scale.set_data(Tensor(np.ascontiguousarray(scale)))


def _np_of(ms_dtype):
    return np.float64 if ms_dtype == ms.float64 else np.float32
