"""Engram conditional memory on the host (V4_SPEC 7): geometry, ids, hashing, tables, prefetch.

Pure numpy (no MindSpore import: the planner uses the geometry). This module owns
  geometry(cfg)          the tables of a layer: one per (order n = 2..N, head k), distinct primes
                         >= engram_vocab_size in that order, stacked into one row array
  compressed_map(...)    token id -> compressed id (tokenizer.json normalisation, else identity)
  multipliers(layer, N)  odd 64-bit multipliers m_0..m_{N-1} of a layer (SplitMix64 of SEED, layer)
  table_rows(...)        the hashing: global row index of every (token, table), exact uint64
  EngramTable            one layer's rows: a host array or a read-only memmap of the file
  EngramHost             all layers' tables + the map: ids -> e_t [b, n, L, T * head_dim] (dequantised)
  Prefetcher             a worker thread that gathers rows for ids known ahead, hit/miss counts
A table row is stored as head_dim e4m3 codes followed by ceil(head_dim / 128) ue8m0 exponent
bytes (one power-of-two scale per 128 values); rows are dequantised on the host (exact) and e_t
enters the graph (ascend_v4/engram_layer.py).
"""
from __future__ import annotations

import mmap
import os
import threading
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ascend_v4.config import ConfigError, ModelConfig

SEED = 0x456E6772616D            # ASCII "Engram": the seed of every layer's multipliers
GOLDEN = 0x9E3779B97F4A7C15      # SplitMix64 increment
SCALE_BLOCK = 128                # values per ue8m0 scale along a row
MASK64 = (1 << 64) - 1
TABLE_MODES = ("host", "disk")


# ---- geometry ---------------------------------------------------------------------------------
def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (the bases below)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def primes_from(start: int, count: int) -> List[int]:
    """The first `count` primes >= start, ascending."""
    out, n = [], max(2, start)
    while len(out) < count:
        if is_prime(n):
            out.append(n)
        n += 1
    return out


@dataclass(frozen=True)
class Geometry:
    """The tables of one Engram layer (every layer has the same geometry)."""
    layer_ids: Tuple[int, ...]
    max_ngram: int               # N: orders 2..N
    n_heads: int                 # K tables per order
    head_dim: int                # values per row
    primes: Tuple[int, ...]      # table sizes, order-major: table t = (n = 2 + t // K, head t % K)
    pad_id: int

    @property
    def n_tables(self) -> int:
        return len(self.primes)

    @property
    def offsets(self) -> np.ndarray:
        """First global row of each table [T] (the tables are stacked in one row array)."""
        return np.concatenate([[0], np.cumsum(self.primes)[:-1]]).astype(np.int64)

    @property
    def rows(self) -> int:
        return int(sum(self.primes))

    @property
    def n_scales(self) -> int:
        return -(-self.head_dim // SCALE_BLOCK)

    @property
    def row_bytes(self) -> int:
        return self.head_dim + self.n_scales

    @property
    def table_bytes(self) -> int:
        """Bytes of one layer's table file."""
        return self.rows * self.row_bytes

    @property
    def emb_dim(self) -> int:
        """Width of e_t: every table's row concatenated."""
        return self.n_tables * self.head_dim


_GEOMETRY: Dict[tuple, Geometry] = {}


def geometry(cfg: ModelConfig) -> Optional[Geometry]:
    """The Engram geometry of cfg, None without Engram."""
    if not cfg.has_engram:
        return None
    key = (tuple(cfg.engram_layer_ids), cfg.engram_max_ngram_size, cfg.engram_n_heads,
           cfg.engram_head_dim, cfg.engram_vocab_size, cfg.engram_pad_token_id)
    if key not in _GEOMETRY:
        count = (cfg.engram_max_ngram_size - 1) * cfg.engram_n_heads
        _GEOMETRY[key] = Geometry(tuple(cfg.engram_layer_ids), cfg.engram_max_ngram_size, cfg.engram_n_heads,
                                  cfg.engram_head_dim, tuple(primes_from(cfg.engram_vocab_size, count)),
                                  cfg.engram_pad_token_id)
    return _GEOMETRY[key]


def table_file(folder: str, layer_id: int) -> str:
    """Path of layer `layer_id`'s table in a checkpoint folder."""
    return os.path.join(folder, f"engram.layers.{layer_id}.table.bin")


# ---- compressed ids ---------------------------------------------------------------------------
def _normalise(text: str) -> str:
    """NFKC, lowercase, surrounding whitespace dropped (a whitespace-only token becomes ' ')."""
    t = unicodedata.normalize("NFKC", text).lower()
    s = t.strip()
    return s if s or not t else " "


def compressed_map(cfg: ModelConfig, folder: Optional[str] = None) -> np.ndarray:
    """Token id -> compressed id, int64 [vocab_size]. With the folder's tokenizer.json every id's
    decoded text is normalised (_normalise) and equal texts share one id, numbered by first
    occurrence; ids the tokenizer does not know, and byte tokens that are no whole character, keep
classes of their own. Without a tokenizer.json: identity.
    A non-zero engram_compressed_vocab_size must equal the number of classes."""
    path = os.path.join(folder, "tokenizer.json") if folder else None
    if path and os.path.exists(path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(path)
        texts = tok.decode_batch([[i] for i in range(cfg.vocab_size)], skip_special_tokens=False)
        classes: Dict[object, int] = {}
        out = np.empty(cfg.vocab_size, np.int64)
        for i, text in enumerate(texts):
            known = tok.id_to_token(i) is not None and "\ufffd" not in text    # whole characters
            key = _normalise(text) if known else ("id", i)
            out[i] = classes.setdefault(key, len(classes))
        n = len(classes)
    else:
        out, n = np.arange(cfg.vocab_size, dtype=np.int64), cfg.vocab_size
    want = cfg.engram_compressed_vocab_size
    if want and want != n:
        raise ConfigError(f"engram_compressed_vocab_size is {want} but the compressed-id map "
                          f"({'tokenizer.json normalisation' if n != cfg.vocab_size else 'identity'}) "
                          f"has {n} ids")
    return out


# ---- hashing ----------------------------------------------------------------------------------
def multipliers(layer_id: int, count: int) -> np.ndarray:
    """Odd multipliers m_0..m_{count-1} of a layer [count] uint64: SplitMix64 outputs of the state
    x = SEED + layer_id * GOLDEN (mod 2^64), each with its lowest bit set."""
    x, out = (SEED + layer_id * GOLDEN) & MASK64, []
    for _ in range(count):
        x = (x + GOLDEN) & MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        out.append((z ^ (z >> 31)) | 1)
    return np.array(out, np.uint64)


def next_history(history: np.ndarray, ids: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The last N-1 token ids after appending ids[:, :count] (history [b, N-1], ids [b, n],
    count [b]) -> [b, N-1]; the graph keeps the state slot the same way."""
    buf = np.concatenate([history, ids], 1)
    take = np.asarray(count).reshape(-1, 1) + np.arange(history.shape[1])
    return np.take_along_axis(buf, take, 1)


def table_rows(geo: Geometry, layer_id: int, cmap: np.ndarray, history: np.ndarray,
               ids: np.ndarray) -> np.ndarray:
    """Global table rows of tokens ids [b, n] after history [b, N-1] (token ids; the pad id
    before the sequence start) -> int64 [b, n, T]. For order n the suffix n-gram of compressed
    ids c is mixed as XOR_{j<n} c_{t-j} * m_j (uint64, wrapping); table (n, k) takes row
    mix mod p_{n,k} (+ its offset in the stacked array)."""
    N = geo.max_ngram
    c = cmap[np.concatenate([history, ids], 1)].astype(np.uint64)          # [b, N-1+n]
    n = ids.shape[1]
    m = multipliers(layer_id, N)
    mix = np.zeros(ids.shape, np.uint64)
    per_order = []
    for j in range(N):
        mix = mix ^ (c[:, N - 1 - j:N - 1 - j + n] * m[j])                  # wraps mod 2^64
        if j >= 1:
            per_order.append(mix)                                          # order j + 1
    primes = np.array(geo.primes, np.uint64).reshape(N - 1, geo.n_heads)
    idx = np.stack([per_order[o][..., None] % primes[o] for o in range(N - 1)], 2)  # [b, n, N-1, K]
    return idx.reshape(ids.shape + (geo.n_tables,)).astype(np.int64) + geo.offsets


# ---- tables -----------------------------------------------------------------------------------
def random_table_chunks(geo: Geometry, layer_id: int, seed: int, chunk_bytes: int = 1 << 26):
    """A random table as consecutive uint8 row blocks [r, row_bytes]: uniform e4m3 codes (the
    NaN codes 0x7f / 0xff replaced by +-448) and scale 2^-8 (values within +-1.75). Drawn as
    bytes, so a table of any size streams without a float copy."""
    rng = np.random.default_rng([seed, layer_id, 0xE])
    step = max(1, chunk_bytes // geo.row_bytes)
    for first in range(0, geo.rows, step):
        r = min(step, geo.rows - first)
        block = np.empty((r, geo.row_bytes), np.uint8)
        codes = rng.integers(0, 256, (r, geo.head_dim), dtype=np.uint8)
        codes[(codes & 0x7F) == 0x7F] -= 1
        block[:, :geo.head_dim] = codes
        block[:, geo.head_dim:] = 127 - 8
        yield block


def write_table(path: str, geo: Geometry, layer_id: int, seed: int) -> None:
    with open(path, "wb") as fh:
        for block in random_table_chunks(geo, layer_id, seed):
            fh.write(block.tobytes())


class EngramTable:
    """One layer's stacked tables, rows [rows, row_bytes] uint8 (host array or memmap)."""

    def __init__(self, data: np.ndarray, geo: Geometry, source: str = "array", mapped=None):
        if data.dtype != np.uint8 or data.shape != (geo.rows, geo.row_bytes):
            raise ConfigError(f"{source}: an Engram table must be uint8 [{geo.rows}, {geo.row_bytes}] "
                              f"({geo.table_bytes} bytes), got {data.dtype} {list(data.shape)}")
        self.data, self.source = data, source
        self.mapped = mapped                  # the mmap.mmap of a disk table (None: host memory)

    @classmethod
    def open(cls, path: str, geo: Geometry, mode: str = "host") -> "EngramTable":
        """The table file at `path`: read into host memory (host) or memory-mapped (disk)."""
        if mode not in TABLE_MODES:
            raise ConfigError(f"engram_table must be one of {', '.join(TABLE_MODES)}, got {mode!r}")
        if not os.path.exists(path):
            raise ConfigError(f"{path}: Engram table file missing ({geo.table_bytes} bytes expected)")
        size = os.path.getsize(path)
        if size != geo.table_bytes:
            raise ConfigError(f"{path}: Engram table file has {size} bytes; expected {geo.table_bytes} "
                              f"= {geo.rows} rows x {geo.row_bytes} bytes (engram_vocab_size, "
                              f"engram_n_heads, engram_max_ngram_size, engram_head_dim)")
        shape = (geo.rows, geo.row_bytes)
        if mode == "disk":
            with open(path, "rb") as fh:
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            mapped.madvise(mmap.MADV_RANDOM)          # no readahead around a row: rows are scattered
            return cls(np.frombuffer(mapped, np.uint8).reshape(shape), geo, path, mapped)
        return cls(np.fromfile(path, np.uint8).reshape(shape), geo, path)

    @property
    def on_disk(self) -> bool:
        return self.mapped is not None

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """rows int64 [...] -> stored rows [..., row_bytes] uint8. A disk table first asks the
        kernel for every page the rows touch (MADV_WILLNEED: the reads go out together instead of
        one page fault after another)."""
        flat = rows.reshape(-1)
        if self.mapped is not None:
            width = self.data.shape[1]
            pages = np.unique(np.concatenate([flat * width, flat * width + width - 1]) // mmap.PAGESIZE)
            for page in pages.tolist():
                self.mapped.madvise(mmap.MADV_WILLNEED, page * mmap.PAGESIZE, mmap.PAGESIZE)
        order = np.argsort(flat, kind="stable")
        out = np.empty((flat.size, self.data.shape[1]), np.uint8)
        out[order] = self.data[flat[order]]
        return out.reshape(rows.shape + (self.data.shape[1],))


def _e4m3_values() -> np.ndarray:
    """float64 value of every e4m3 byte [256] (the NaN codes 0x7f / 0xff, never stored, as 0)."""
    import ml_dtypes
    v = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    return np.where(np.isnan(v), 0.0, v)


E4M3_VALUES = _e4m3_values()
E8M0_VALUES = np.exp2(np.arange(256, dtype=np.float64) - 127.0)      # 2^(e - 127); 255 is never a scale


def dequantize_rows(stored: np.ndarray, head_dim: int, dtype) -> np.ndarray:
    """Stored rows [..., T, row_bytes] uint8 -> e [..., T * head_dim] in `dtype`: code value x its
    block's power-of-two scale, each product exact in float32 and float64 (a 4-bit significand
    times a power of two), so this equals dequantising in the graph bit for bit."""
    codes = E4M3_VALUES.astype(dtype)[stored[..., :head_dim]]
    scale = E8M0_VALUES.astype(dtype)[stored[..., head_dim:]]
    values = codes * np.repeat(scale, SCALE_BLOCK, -1)[..., :head_dim]
    return values.reshape(stored.shape[:-2] + (-1,))


class EngramHost:
    """The host side of every Engram layer: ids -> e_t of every Engram layer for the graph."""

    def __init__(self, cfg: ModelConfig, tables: Sequence[EngramTable], cmap: np.ndarray, dtype=np.float32):
        self.geo = geometry(cfg)
        self.tables, self.cmap, self.dtype = list(tables), cmap, np.dtype(dtype)

    @classmethod
    def open(cls, cfg: ModelConfig, folder: str, mode: str = "host", dtype=np.float32) -> "EngramHost":
        geo = geometry(cfg)
        tables = [EngramTable.open(table_file(folder, i), geo, mode) for i in geo.layer_ids]
        return cls(cfg, tables, compressed_map(cfg, folder), dtype)

    def initial_history(self, batch: int) -> np.ndarray:
        return np.full((batch, self.geo.max_ngram - 1), self.geo.pad_id, np.int32)

    def stored_rows(self, history: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """history [b, N-1], ids [b, n] -> stored rows [b, n, L, T, row_bytes] uint8."""
        out = [t.gather(table_rows(self.geo, layer, self.cmap, history, ids))
               for layer, t in zip(self.geo.layer_ids, self.tables)]
        return np.stack(out, 2)

    def rows(self, history: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """history [b, N-1], ids [b, n] -> e_t [b, n, L, T * head_dim] in the compute dtype (the
        graph input; dequantised here, on the prefetch thread)."""
        return dequantize_rows(self.stored_rows(history, ids), self.geo.head_dim, self.dtype)

    @property
    def bytes(self) -> int:
        return len(self.tables) * self.geo.table_bytes


class Prefetcher:
    """Gathers rows on a worker thread for ids known ahead (`request`); `take` returns them.
    A hit: the rows were ready when taken; a miss: taken while still gathering, or never requested."""

    def __init__(self, host: EngramHost):
        self.host = host
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="engram-prefetch")
        self.pending: List[Tuple[bytes, Future]] = []
        self.lock = threading.Lock()
        self.hits = self.misses = 0
        self.wait_s = 0.0                  # time `take` spent waiting for or doing gathers

    @staticmethod
    def _key(history, ids) -> bytes:
        return np.asarray(history, np.int32).tobytes() + b"|" + np.asarray(ids, np.int32).tobytes() \
            + bytes(str(np.shape(ids)), "ascii")

    def request(self, history: np.ndarray, ids: np.ndarray) -> None:
        h, i = np.array(history, np.int32), np.array(ids, np.int32)
        with self.lock:
            self.pending.append((self._key(h, i), self.pool.submit(self.host.rows, h, i)))
            del self.pending[:-4]                           # stale requests are dropped

    def take(self, history: np.ndarray, ids: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._take(history, ids)
        finally:
            self.wait_s += time.perf_counter() - t0

    def _take(self, history: np.ndarray, ids: np.ndarray) -> np.ndarray:
        key = self._key(history, ids)
        with self.lock:
            found = next((k for k, (kk, _) in enumerate(self.pending) if kk == key), None)
            fut = self.pending.pop(found)[1] if found is not None else None
        if fut is None or not fut.done():
            self.misses += 1
        else:
            self.hits += 1
        if fut is None:
            return self.host.rows(np.asarray(history, np.int32), np.asarray(ids, np.int32))
        return fut.result()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def reset_counters(self) -> None:
        self.hits = self.misses = 0
        self.wait_s = 0.0
