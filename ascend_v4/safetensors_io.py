"""Streaming safetensors reader/writer that understands FP8, E8M0 and packed FP4.

The `safetensors` numpy frontend cannot return float8 arrays, so checkpoints are read here:
the format is an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
Tensors are memory-mapped one at a time; nothing holds a second copy of the whole file.
Files are written to a temporary name and renamed, so a crash leaves no half-written file.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterator, List, Tuple

import ml_dtypes
import numpy as np

DTYPES: Dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is truncated, malformed or holds an unsupported dtype."""


class SafeFile:
    """Lazy view of one safetensors file: `keys()`, `info(name)`, `get(name)` (memory-mapped)."""

    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path}: truncated (no header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise SafetensorsError(f"{path}: truncated or corrupt header ({n} header bytes, "
                                       f"file has {size})")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SafetensorsError(f"{path}: header is not JSON: {exc}") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header: Dict[str, dict] = header
        self.data_start = 8 + n
        for meta in header.values():
            _normalise_fp4(meta)
        end = max((v["data_offsets"][1] for v in header.values()), default=0)
        if self.data_start + end > size:
            raise SafetensorsError(f"{path}: truncated: tensors need {self.data_start + end} bytes, "
                                   f"file has {size}")
        for name, meta in header.items():
            if meta.get("dtype") not in DTYPES:
                raise SafetensorsError(f"{path}: tensor {name} has unsupported dtype {meta.get('dtype')}")
            want = DTYPES[meta["dtype"]].itemsize * int(np.prod(meta["shape"], dtype=np.int64))
            lo, hi = meta["data_offsets"]
            if hi - lo != want:
                raise SafetensorsError(f"{path}: tensor {name} has {hi - lo} bytes, its shape "
                                       f"{meta['shape']} needs {want}")

    def keys(self) -> List[str]:
        return list(self.header)

    def info(self, name: str) -> Tuple[str, Tuple[int, ...]]:
        meta = self.header[name]
        return meta["dtype"], tuple(meta["shape"])

    def get(self, name: str) -> np.ndarray:
        meta = self.header[name]
        dtype = DTYPES[meta["dtype"]]
        lo, hi = meta["data_offsets"]
        shape = tuple(meta["shape"])
        if hi == lo:
            return np.zeros(shape, dtype)
        arr = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.data_start + lo,
                        shape=(hi - lo,))
        return arr.view(dtype).reshape(shape)


def _normalise_fp4(meta: dict) -> None:
    """Present `F4` tensors (logical e2m1 shape, two codes per byte as torch's float4_e2m1fn_x2
    stores them) as their packed storage: I8 [..., last / 2], low nibble = even element."""
    if meta.get("dtype") == "F4" and meta.get("shape") and meta["shape"][-1] % 2 == 0:
        meta["dtype"] = "I8"
        meta["shape"] = list(meta["shape"][:-1]) + [meta["shape"][-1] // 2]


def save(tensors: Dict[str, np.ndarray], path: str, metadata: Dict[str, str] = None) -> None:
    """Write `tensors` to `path` atomically (temporary file + rename)."""
    header: Dict[str, dict] = {}
    offset = 0
    order = sorted(tensors)
    for name in order:
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in NAMES:
            raise SafetensorsError(f"cannot store {name}: dtype {arr.dtype} has no safetensors name")
        header[name] = {"dtype": NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(blob)))
            fh.write(blob)
            for name in order:
                fh.write(np.ascontiguousarray(tensors[name]).tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def iter_tensors(paths: List[str]) -> Iterator[Tuple[str, SafeFile]]:
    """Yield (tensor name, file) over several files, one tensor at a time."""
    for path in paths:
        f = SafeFile(path)
        for name in f.keys():
            yield name, f
