"""ONNX initializers for the model's parameters: FP8 weights stay FP8 (V4_SPEC section 9).

An FP8 weight [out, in] is stored as a FLOAT8E4M3FN initializer with its ue8m0 block scales
repeated per row ([out, ceil(in/128)], float32) and read through a blocked DequantizeLinear
(axis 1, block_size 128): lossless. FP4 experts have no onnxruntime CPU kernel for an FP4
DequantizeLinear, so they are recast losslessly to FP8 (`ascend_v4.quant.fp4_to_fp8`).
Every reconstructed weight is checked bit for bit against the parameter in the MindIR file.
Other weights are stored in the smallest float type that holds them exactly (bf16 checkpoint
weights as BFLOAT16, fp32 ones as FLOAT in float64 graphs) and Cast to the compute dtype.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import ml_dtypes
import numpy as np
from onnx import TensorProto, numpy_helper

from ascend_v4 import quant
from graph_compile.emit import Emitter, LoweringError, Val
from graph_compile.mindir import Meta

FP8_BLOCK = 128


def _fp8_tensor(name: str, arr: np.ndarray) -> TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT8E4M3FN
    t.dims.extend(arr.shape)
    t.raw_data = np.ascontiguousarray(arr).view(np.uint8).tobytes()
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
        self.stats = {"fp8_bytes": 0, "plain_bytes": 0, "fp8_tensors": 0, "plain_tensors": 0}
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

    def value(self, e: Emitter, short: str, data: np.ndarray) -> Val:
        """The Val of parameter `short` (emits its initializer and dequantisation once)."""
        if short in self._done:
            return self._done[short]
        meta = Meta(data.dtype, tuple(data.shape))
        base = self.onnx_name(short)
        qz = self._quantized(short, data)
        if qz is None:
            store = data
            for narrow in (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)):   # the smallest lossless float type
                if narrow.itemsize < data.dtype.itemsize and np.array_equal(data.astype(narrow).astype(data.dtype), data):
                    store = data.astype(narrow)
                    break
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(store), base))
            self.stats["plain_bytes"] += store.nbytes
            self.stats["plain_tensors"] += 1
            val = e.as_tensor(Val(base, Meta(store.dtype, meta.shape)), data.dtype)
        else:
            q, s = qz
            self.initializers.append(_fp8_tensor(base, q))
            self.initializers.append(numpy_helper.from_array(s, base + ".scale"))
            self.stats["fp8_bytes"] += q.nbytes
            self.stats["fp8_tensors"] += 1
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
