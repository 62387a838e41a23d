"""The decode state spec: each stateful cell declares its slots; everything else derives from it.

A slot is one tensor of per-sequence state. Cells declare their own slots (`state_spec()`), parents
prefix and concatenate them, and `Transformer.state_spec()` is the flat, ordered spec of the whole
model. Graph input/output names, parity labels, initial arrays, row selection for the slot API and
the byte accounting all come from that one spec.

Layouts:
  dense         [batch, *shape], one row per sequence.
  model1_pages  an FP8 MODEL1 page pool shared by the batch (custom_ops): uint8
                [ceil(batch * tokens / PAGE_BLOCK), PAGE_BLOCK * TOKEN_BYTES]; row r's token j sits
                at pool slot r * tokens + j (`shape` is (tokens,)).
  model1_tiered the device tier of a tiered MODEL1 cache (ascend_v4/kv_tiers): uint8 [blocks,
                PAGE_BLOCK * TOKEN_BYTES], a fixed number of page blocks set by the device budget and
                shared by the batch; entry e of row r sits at slot table[r, e // PAGE_BLOCK] * PAGE_BLOCK
                + e % PAGE_BLOCK (`shape` is (tokens,) per sequence, counted over all tiers).
  page_table    [batch, pages] int32 owned by the host (the tier manager): logical page -> device page
                block, -1 = not resident; graphs pass it through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple

import numpy as np

PAGE_BLOCK = 64        # tokens per page block of the kernel-path caches (FlashMLA's block size)
TOKEN_BYTES = 584      # MODEL1: 448 e4m3 + 64 bf16 + 7 ue8m0 + 1 pad
DENSE, PAGES, TIERED, TABLE = "dense", "model1_pages", "model1_tiered", "page_table"


DATA_BYTES = 576      # a token's data row in a page block (448 e4m3 + 64 bf16); its 8 scale bytes follow all data rows


def page_pool_shape(batch: int, tokens: int) -> Tuple[int, int]:
    """Shape of a MODEL1 pool holding `tokens` tokens for each of `batch` rows."""
    return (max(1, -(-batch * tokens // PAGE_BLOCK)), PAGE_BLOCK * TOKEN_BYTES)


def pool_token_rows(blocks: np.ndarray, first: int, n: int) -> np.ndarray:
    """Pool blocks [k, PAGE_BLOCK * TOKEN_BYTES] holding pool slots first .. first + n - 1 (block
    first // PAGE_BLOCK is blocks[0]) -> those tokens as [n, TOKEN_BYTES] (data row, then scales)."""
    slots = first % PAGE_BLOCK + np.arange(n)
    block, off = slots // PAGE_BLOCK, slots % PAGE_BLOCK
    data = blocks[block[:, None], off[:, None] * DATA_BYTES + np.arange(DATA_BYTES)]
    scales = blocks[block[:, None], PAGE_BLOCK * DATA_BYTES + off[:, None] * 8 + np.arange(8)]
    return np.concatenate([data, scales], 1)


def write_pool_token_rows(pool: np.ndarray, first: int, rows: np.ndarray) -> None:
    """Inverse of pool_token_rows on a whole pool [blocks, PAGE_BLOCK * TOKEN_BYTES], in place."""
    slots = first + np.arange(rows.shape[0])
    block, off = slots // PAGE_BLOCK, slots % PAGE_BLOCK
    pool[block[:, None], off[:, None] * DATA_BYTES + np.arange(DATA_BYTES)] = rows[:, :DATA_BYTES]
    pool[block[:, None], PAGE_BLOCK * DATA_BYTES + off[:, None] * 8 + np.arange(8)] = rows[:, DATA_BYTES:]


@dataclass(frozen=True)
class StateSlot:
    name: str                  # dotted path, e.g. "layers.1.attn.compressor.kv"
    shape: Tuple[int, ...]     # per sequence: dense -> row shape; model1_pages -> (tokens,)
    dtype: type                # numpy dtype
    fill: float = 0.0          # initial value (and the value of unwritten entries)
    layout: str = DENSE
    per_tokens: int = 0        # > 0: a position-indexed cache, one leading row per `per_tokens` positions
                               # (rows past the sequence hold `fill`); 0: fixed-size state
    blocks: int = 0            # model1_tiered: page blocks of the device tier

    def rows_for(self, length: int) -> int:
        """Leading rows (dense) or pool tokens (model1_pages) a sequence of `length` positions uses."""
        if self.per_tokens:
            return min(self.shape[0], -(-length // self.per_tokens))
        return self.shape[0]

    def batch_shape(self, batch: int) -> Tuple[int, ...]:
        if self.layout == PAGES:
            return page_pool_shape(batch, self.shape[0])
        if self.layout == TIERED:
            return (self.blocks, PAGE_BLOCK * TOKEN_BYTES)
        return (batch,) + tuple(self.shape)

    def batch_bytes(self, batch: int) -> int:
        """Bytes this slot holds on the device for `batch` rows."""
        return int(np.prod(self.batch_shape(batch))) * np.dtype(self.dtype).itemsize

    def initial(self, batch: int) -> np.ndarray:
        return np.full(self.batch_shape(batch), self.fill, self.dtype)

    @property
    def bytes_per_sequence(self) -> int:
        if self.layout in (PAGES, TIERED):
            return self.shape[0] * TOKEN_BYTES
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def prefixed(self, prefix: str) -> "StateSlot":
        return replace(self, name=prefix + self.name)


class StateSpec:
    """An ordered list of slots with name -> position lookup (positions are graph constants)."""

    def __init__(self, slots: Sequence[StateSlot] = ()):
        self.slots: List[StateSlot] = list(slots)

    def add(self, slot: StateSlot) -> None:
        self.slots.append(slot)

    def include(self, prefix: str, other: "StateSpec") -> Tuple[int, int]:
        """Append `other`'s slots under `prefix`; returns their (start, stop) range here."""
        start = len(self.slots)
        self.slots += [s.prefixed(prefix) for s in other.slots]
        return start, len(self.slots)

    def positions(self) -> Dict[str, int]:
        return {s.name: i for i, s in enumerate(self.slots)}

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.slots]

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self):
        return iter(self.slots)

    def initial(self, batch: int) -> List[np.ndarray]:
        return [s.initial(batch) for s in self.slots]

    def bytes_per_sequence(self) -> int:
        return sum(s.bytes_per_sequence for s in self.slots)

    def table(self) -> List[Dict[str, object]]:
        """Rows for manifests and reports: name, layout, per-sequence shape, dtype, fill, bytes per
        sequence (`from_table` reads them back)."""
        return [{"name": s.name, "layout": s.layout, "shape": list(s.shape), "dtype": np.dtype(s.dtype).name,
                 "fill": s.fill, "per_tokens": s.per_tokens, "bytes_per_sequence": s.bytes_per_sequence,
                 "blocks": s.blocks}
                for s in self.slots]

    @classmethod
    def from_table(cls, rows: Sequence[Dict[str, object]]) -> "StateSpec":
        return cls([StateSlot(r["name"], tuple(r["shape"]), np.dtype(r["dtype"]).type, float(r["fill"]),
                              r["layout"], int(r.get("per_tokens", 0)), int(r.get("blocks", 0))) for r in rows])
