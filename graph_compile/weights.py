"""ONNX initializers for the model's parameters: weights stay in their checkpoint format (V4_SPEC 9).

Storage-format graphs (runtime weight_storage 'checkpoint', the export default) hold each weight
as the checkpoint's bytes and dequantise it in the graph by table lookups (ascend_v4/weights.py).
Every such parameter is checked byte for byte against the checkpoint, then stored as:
  FP8 e4m3 codes of a 2-D weight   FLOAT8E4M3FN; the code lookup lowers to a Cast (primitives.py)
  bf16 weights and bf16 bit rows   BFLOAT16 (uint16 bit patterns retyped; lookup -> Cast)
  FP4 packed codes, ue8m0 scales   UINT8, as stored, read by the graph's own lookups (Gather)
  stacked FP8 experts              UINT8 (ONNX Gather takes no float8), lookup as in MindIR
  int8 codes, fp32 tensors         as stored
Float-layout graphs (weight_storage 'float', the verification option) hold dequantised weights:
an FP8 weight [out, in] is then re-encoded as a FLOAT8E4M3FN initializer with its ue8m0 block
scales repeated per row ([out, ceil(in/128)], float32) and read through a blocked
DequantizeLinear (axis 1, block_size 128); FP4 experts are recast losslessly to FP8
(onnxruntime has no CPU FP4 DequantizeLinear); each reconstruction is checked bit for bit.
Other float weights are stored in the smallest float type that holds them exactly and Cast.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import ml_dtypes
import numpy as np
from onnx import TensorProto, numpy_helper

from ascend_v4 import quant
from graph_compile.emit import ONNX_DTYPE, Emitter, LoweringError, Val
from graph_compile.mindir import Meta

FP8_BLOCK = 128


def _typed_tensor(name: str, arr: np.ndarray, dtype) -> TensorProto:
    """An initializer of ONNX type `dtype` (e4m3 / bfloat16) holding `arr`'s bytes as they are."""
    t = TensorProto()
    t.name = name
    t.data_type = ONNX_DTYPE[np.dtype(dtype)]
    t.dims.extend(arr.shape)
    t.raw_data = np.ascontiguousarray(arr).tobytes()
    return t


def _row_scales(block_scale: np.ndarray, out: int) -> np.ndarray:
    """[ceil(out/128), ceil(in/128)] block scales -> [out, ceil(in/128)] float32."""
    return np.repeat(np.asarray(block_scale).astype(np.float32), FP8_BLOCK, axis=0)[:out]


class WeightTable:
    """MindIR parameter name -> how to store it (FP8 + scale, or plain) in the ONNX file."""

    def __init__(self, checkpoint, param_names: Dict[str, Tuple[str, int]]):
        self.ckpt = checkpoint                # ascend_v4.checkpoint.Checkpoint
        self.names = param_names              # mindir short name -> (checkpoint name, expert slot)
        self.initializers: List[TensorProto] = []
        self.stats = {"fp8_bytes": 0, "plain_bytes": 0, "fp8_tensors": 0, "plain_tensors": 0,
                      "bytes_by_type": {}}      # ONNX data type name -> initializer bytes
        self._done: Dict[str, Val] = {}

    def onnx_name(self, short: str) -> str:
        """Initializer name: the checkpoint name ('layers.2.attn.wo_b.weight'; stacked experts
        'layers.0.ffn.experts.w1.weight'), else the MindIR name without the capture wrapper."""
        if short in self.names:
            name, slot = self.names[short]
            return name.replace(f".experts.{slot}.", ".experts.") if slot >= 0 else name
        name = short.replace(".inner.", ".")
        return name[len("model."):] if name.startswith("model.") else name

    def _fp8_of(self, ckpt_name: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(e4m3 [out, in], block scale [out/128.., in/128..]) of a stored FP8/FP4 weight, else None."""
        kind = self.ckpt.formats.get(ckpt_name)
        if kind not in ("fp8", "fp4"):
            return None
        scale = self.ckpt.raw(ckpt_name[: -len(".weight")] + ".scale")
        if kind == "fp8":
            return np.asarray(self.ckpt.raw(ckpt_name)).view(quant.E4M3), np.asarray(scale)
        return quant.fp4_to_fp8(np.asarray(self.ckpt.raw(ckpt_name)), np.asarray(scale))

    def _quantized(self, short: str, value: np.ndarray):
        """-> (e4m3 array, row scales) reproducing `value` exactly, or None for plain storage."""
        if short not in self.names:
            return None
        ckpt_name, slot = self.names[short]
        if slot < 0:
            got = self._fp8_of(ckpt_name)
            if got is None:
                return None
            q, s = got[0], _row_scales(got[1], got[0].shape[0])
        else:  # stacked experts [E, out, in]: the expert names share the prefix up to the slot
            qs, ss = [], []
            for e in range(value.shape[0]):
                got = self._fp8_of(ckpt_name.replace(f".experts.{slot}.", f".experts.{e}."))
                if got is None:
                    return None
                qs.append(got[0])
                ss.append(_row_scales(got[1], got[0].shape[0]))
            q, s = np.stack(qs), np.stack(ss)
        recon = q.astype(np.float64) * np.repeat(s.astype(np.float64), FP8_BLOCK, axis=-1)[..., :q.shape[-1]]
        if recon.shape != value.shape or not np.array_equal(recon, value.astype(np.float64)):
            raise LoweringError(f"parameter {short}: FP8 bytes of {ckpt_name} do not reproduce the "
                                "MindIR value exactly")
        return q, s

    def _checkpoint_bytes(self, short: str, data: np.ndarray) -> Optional[Tuple[str, str]]:
        """(checkpoint name, format) of a storage-format parameter whose array equals the
        checkpoint's bytes; None for parameters without a checkpoint tensor. Raises on a mismatch."""
        from ascend_v4.weights import e8m0_bytes
        if short not in self.names or self.ckpt is None:
            return None
        ckpt_name, slot = self.names[short]
        names = [ckpt_name] if slot < 0 else [ckpt_name.replace(f".experts.{slot}.", f".experts.{e}.")
                                               for e in range(data.shape[0])]
        weight_name = ckpt_name[: -len(".scale")] + ".weight" if ckpt_name.endswith(".scale") else ckpt_name
        kind = self.ckpt.formats.get(weight_name)
        parts = []
        for n in names:
            raw = np.asarray(self.ckpt.raw(n))
            if n.endswith(".scale") and kind in ("fp8", "fp4"):
                raw = e8m0_bytes(raw)
            elif kind == "bf16" and raw.dtype.kind == "f" and raw.dtype != data.dtype:
                raw = raw.astype(ml_dtypes.bfloat16)          # a bf16 weight stored as float32
            parts.append(raw.view(data.dtype) if raw.dtype.itemsize == data.dtype.itemsize else None)
        if any(p is None for p in parts) or not np.array_equal(np.stack(parts) if slot >= 0 else parts[0], data):
            raise LoweringError(f"parameter {short} does not hold the checkpoint's bytes of {ckpt_name}")
        return ckpt_name, kind

    def _stored(self, short: str, data: np.ndarray):
        """-> (TensorProto, Meta, role) of a storage-format parameter (uint8/uint16/bf16/int8/..)."""
        base = self.onnx_name(short)
        found = self._checkpoint_bytes(short, data)
        ckpt_name, kind = found if found else (None, None)
        typed = None
        if ckpt_name and ckpt_name.endswith(".weight") and kind == "fp8" and data.dtype == np.uint8 \
                and self.names[short][1] < 0:
            typed = np.dtype(quant.E4M3)                       # 2-D FP8: FLOAT8E4M3FN
        elif kind == "bf16" and data.dtype == np.uint16:
            typed = np.dtype(ml_dtypes.bfloat16)               # bf16 bit rows: BFLOAT16
        if typed is not None and np.isfinite(data.view(typed).astype(np.float32)).all():
            t = _typed_tensor(base, data, typed)
            return t, Meta(typed, tuple(data.shape)), "codes"
        return numpy_helper.from_array(np.ascontiguousarray(data), base), Meta(data.dtype, tuple(data.shape)), "value"

    def _record(self, t: TensorProto, nbytes: int, fp8: bool) -> None:
        self.initializers.append(t)
        key = "fp8" if fp8 else "plain"
        self.stats[f"{key}_bytes"] += nbytes
        self.stats[f"{key}_tensors"] += 1
        kind = TensorProto.DataType.Name(t.data_type)
        self.stats["bytes_by_type"][kind] = self.stats["bytes_by_type"].get(kind, 0) + nbytes

    def value(self, e: Emitter, short: str, data: np.ndarray) -> Val:
        """The Val of parameter `short` (emits its initializer and dequantisation once)."""
        if short in self._done:
            return self._done[short]
        meta = Meta(data.dtype, tuple(data.shape))
        base = self.onnx_name(short)
        if data.dtype.kind != "f" or data.dtype == np.dtype(ml_dtypes.bfloat16):
            t, m, role = self._stored(short, data)
            self._record(t, data.nbytes, m.dtype == np.dtype(quant.E4M3))
            val = Val(base, m, role)
        elif (qz := self._quantized(short, data)) is None:
            store = data
            for narrow in (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)):   # the smallest lossless float type
                if narrow.itemsize < data.dtype.itemsize and np.array_equal(data.astype(narrow).astype(data.dtype), data):
                    store = data.astype(narrow)
                    break
            self._record(numpy_helper.from_array(np.ascontiguousarray(store), base), store.nbytes, False)
            val = e.as_tensor(Val(base, Meta(store.dtype, meta.shape)), data.dtype)
        else:
            q, s = qz
            self._record(_typed_tensor(base, q, np.dtype(quant.E4M3)), q.nbytes, True)
            self._record(numpy_helper.from_array(s, base + ".scale"), s.nbytes, False)
            dq = e.op("DequantizeLinear", [base, base + ".scale"], Meta(np.dtype(np.float32), meta.shape),
                      axis=q.ndim - 1, block_size=FP8_BLOCK)
            val = e.as_tensor(dq, data.dtype)
        self._done[short] = val
        return val


def param_name_table(net, checkpoint_table) -> Dict[str, Tuple[str, int]]:
    """MindIR parameter names of `net` -> (checkpoint name, expert slot).

    checkpoint_table: `Transformer.checkpoint_parameters()` (taken before markers are installed).
    """
    by_id = {id(p): (name, slot) for name, (p, slot) in checkpoint_table.items()}
    table = {}
    for name, p in net.parameters_and_names():
        if id(p) in by_id:
            table[name] = by_id[id(p)]
            table[p.name] = by_id[id(p)]
    return table
