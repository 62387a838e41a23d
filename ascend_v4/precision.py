"""The compute dtype of the cells: float32 normally, float64 for verification runs.

FP8/FP4 activation quantisation is discontinuous: two float32 implementations that differ in
summation order flip a rounding now and then, and a random-weight network amplifies each flip.
Running both the model and the numpy oracle in float64 keeps every rounding decision identical,
so the end-to-end FP8 comparison can be held to 1e-3 (see docs/DESIGN.md, "Numerics").
"""
from __future__ import annotations

import numpy as np
import mindspore as ms

from ascend_v4.runtime import RuntimeConfig


def np_dtype(rt: RuntimeConfig):
    return np.float64 if rt.compute_dtype == "float64" else np.float32


def ms_dtype(rt: RuntimeConfig):
    return ms.float64 if rt.compute_dtype == "float64" else ms.float32


def dtype_of(slot):
    """The MindSpore dtype of a state slot (numpy dtype in the spec)."""
    return {np.dtype(np.float32): ms.float32, np.dtype(np.float64): ms.float64,
            np.dtype(np.uint8): ms.uint8, np.dtype(np.int32): ms.int32}[np.dtype(slot.dtype)]
