"""Streaming safetensors reader/writer that understands FP8, E8M0 and packed FP4.

The `safetensors` numpy frontend cannot return float8 arrays, so checkpoints are read here:
the format is an 8-byte little-endian header length, a JSON header, then raw tensor bytes.
Tensors are memory-mapped one at a time; nothing holds a second copy of the whole file.
Files are written to a temporary name and renamed, so a crash leaves no half-written file;
`StreamWriter` writes one tensor at a time into a header computed up front from shapes and dtypes.
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


def header_blob(layout: Dict[str, Tuple[str, Tuple[int, ...]]],
                metadata: Dict[str, str] = None) -> Tuple[bytes, Dict[str, Tuple[int, int]]]:
    """The header of a file holding `layout` (name -> (safetensors dtype, shape)), tensors in
    sorted-name order: (8-byte length + padded JSON, name -> (start, end) offsets in the data)."""
    header: Dict[str, dict] = {}
    spans: Dict[str, Tuple[int, int]] = {}
    offset = 0
    for name in sorted(layout):
        dtype, shape = layout[name]
        if dtype not in DTYPES:
            raise SafetensorsError(f"cannot store {name}: unknown safetensors dtype {dtype}")
        n = DTYPES[dtype].itemsize * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        spans[name] = (offset, offset + n)
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, spans


class StreamWriter:
    """Write a safetensors file tensor by tensor, in any order, without holding them together.

    The header is computed up front from `layout` (name -> (dtype name, shape)); `write(name,
    arr, row=0)` puts `arr` (the whole tensor, or rows [row, row + len(arr)) of it) at its place.
    The file is written under a temporary name and renamed by `close()`, which checks that every
    byte was written; `abort()` (or leaving a `with` block by an exception) removes it. The bytes
    equal `save()` of the same tensors."""

    def __init__(self, path: str, layout: Dict[str, Tuple[str, Tuple[int, ...]]],
                 metadata: Dict[str, str] = None):
        self.path = path
        self.layout = {k: (d, tuple(int(x) for x in s)) for k, (d, s) in layout.items()}
        head, self.spans = header_blob(self.layout, metadata)
        self.data_start = len(head)
        self.missing = {k: hi - lo for k, (lo, hi) in self.spans.items()}   # bytes still to write
        self.tmp = f"{path}.partial-{os.getpid()}"
        self.fh = open(self.tmp, "wb")
        self.fh.write(head)

    def write(self, name: str, arr: np.ndarray, row: int = 0) -> None:
        if name not in self.layout:
            raise SafetensorsError(f"{self.path}: tensor {name} is not in the header")
        dtype, shape = self.layout[name]
        arr = np.asarray(arr)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        rows = shape[0] if shape else 1
        if (NAMES.get(arr.dtype) != dtype or tuple(arr.shape[1:]) != shape[1:]
                or (shape and not 0 <= row <= row + arr.shape[0] <= rows) or (not shape and arr.shape != ())):
            raise SafetensorsError(f"{self.path}: tensor {name} is {dtype} {list(shape)}, got "
                                   f"{arr.dtype} {list(arr.shape)} at row {row}")
        lo, hi = self.spans[name]
        row_bytes = (hi - lo) // rows if rows else 0
        data = arr.reshape(-1).view(np.uint8)
        self.fh.seek(self.data_start + lo + row * row_bytes)
        self.fh.write(memoryview(data))
        self.missing[name] -= data.nbytes

    def close(self) -> None:
        """Check that every tensor was written whole, then rename into place."""
        left = sorted(k for k, v in self.missing.items() if v)
        if left:
            self.abort()
            raise SafetensorsError(f"{self.path}: {len(left)} tensor(s) not written in full: "
                                   f"{', '.join(left[:5])}")
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save(tensors: Dict[str, np.ndarray], path: str, metadata: Dict[str, str] = None) -> None:
    """Write `tensors` to `path` atomically (temporary file + rename)."""
    arrays = {name: np.ascontiguousarray(arr) for name, arr in tensors.items()}   # 0-d -> [1]
    layout = {}
    for name, arr in arrays.items():
        if arr.dtype not in NAMES:
            raise SafetensorsError(f"cannot store {name}: dtype {arr.dtype} has no safetensors name")
        layout[name] = (NAMES[arr.dtype], arr.shape)
    with StreamWriter(path, layout, metadata) as out:
        for name in sorted(arrays):
            out.write(name, arrays[name])


def iter_tensors(paths: List[str]) -> Iterator[Tuple[str, SafeFile]]:
    """Yield (tensor name, file) over several files, one tensor at a time."""
    for path in paths:
        f = SafeFile(path)
        for name in f.keys():
            yield name, f
