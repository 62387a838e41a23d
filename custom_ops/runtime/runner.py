"""Call a twin's aot entry point on numpy arrays through ctypes (same entry MindSpore calls)."""
from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np

from custom_ops.runtime.build import twin_library
from custom_ops.runtime.claims import claimed_socs, require_claim
from custom_ops.runtime.errors import KernelRuleError

DTYPE_NAMES = {
    np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
    np.dtype(ml_dtypes.bfloat16): "bfloat16", np.dtype(np.int32): "int32",
    np.dtype(np.uint8): "uint8", np.dtype(np.int64): "int64",
}


def call_aot(twin: str, func: str, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> None:
    """Run `func` of twin `twin`: inputs are read, outputs (preallocated, C-contiguous) are written.
    A SoC profile the kernel does not claim (op_host AddConfig) is refused with SocError."""
    from custom_ops.runtime.soc_spec import get_soc
    require_claim(twin, claimed_socs(twin), get_soc().profile)
    lib = twin_library(twin)
    arrays = [np.ascontiguousarray(a) for a in inputs] + list(outputs)
    for a in outputs:
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{func}: outputs must be writeable C-contiguous arrays")
    n = len(arrays)
    shapes = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    shape_ptrs = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64)) for s in shapes])
    try:
        names = [DTYPE_NAMES[a.dtype].encode() for a in arrays]
    except KeyError as e:
        raise ValueError(f"{func}: unsupported array dtype {e.args[0]}") from None
    dtypes = (ctypes.c_char_p * n)(*names)
    fn = getattr(lib, func)
    fn.restype = ctypes.c_int
    lib.ascendc_twin_set_quiet(1)
    try:
        rc = fn(n, params, ndims, shape_ptrs, dtypes, None, None)
    finally:
        lib.ascendc_twin_set_quiet(0)
    if rc != 0:
        msg = lib.ascendc_twin_last_error().decode(errors="replace")
        if rc == 1:
            raise KernelRuleError(msg)
        if rc == 2:
            raise ValueError(msg)
        raise RuntimeError(msg)
