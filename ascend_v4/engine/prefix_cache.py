"""Prefix caching: a new sequence whose prompt starts with a cached token prefix restores the
state at the end of that prefix and extends only from there.

What is cached comes from the state spec (ascend_v4/state.py):
  pages      position-indexed slots (compressed entries, indexer keys; `per_tokens` > 0) are cut
             into pages of PAGE_TOKENS positions, keyed by a chain hash of the token prefix up to
             the page's end, and shared by every snapshot of that prefix (refcounted);
  tails      a snapshot at length L adds what pages cannot hold: every fixed-size slot (window
             ring, the compressors' partial blocks, Engram history) and the position-indexed rows
             past the last whole page. L need not be page- or compression-block aligned.
A snapshot is found by walking the prompt's page chain from its longest whole-page prefix down;
the restored state is the one the prefix left (state does not depend on chunking: DESIGN.md),
so the continuation's logits equal a full prefill up to the rounding of different chunk shapes
(bit-exact against a run chunked the same way).

Snapshots are evicted least-recently-used under a byte budget; a page lives while a snapshot
uses it. Taken by the engine at prefill chunk ends on page boundaries, at the end of each prompt,
and when a request finishes (a chat's next turn extends its conversation).
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ascend_v4.config import ConfigError
from ascend_v4.state import DENSE, PAGES, StateSpec

ROOT = b"ascend-v4 prefix"


def page_tokens_for(spec: StateSpec, at_least: int = 64) -> int:
    """Positions per page: a multiple of every slot's per_tokens (a page holds whole rows)."""
    n = at_least
    for slot in spec:
        if slot.per_tokens:
            n = n * slot.per_tokens // math.gcd(n, slot.per_tokens)
    return n


def chain(tokens: Sequence[int], page_tokens: int) -> List[bytes]:
    """Chain hashes of the whole pages of `tokens`: h_k = H(h_{k-1}, tokens of page k)."""
    ids = np.asarray(tokens, np.int64)
    out, h = [], ROOT
    for k in range(len(ids) // page_tokens):
        h = hashlib.blake2b(h + ids[k * page_tokens:(k + 1) * page_tokens].tobytes(), digest_size=16).digest()
        out.append(h)
    return out


def tail_key(tokens: Sequence[int]) -> bytes:
    return hashlib.blake2b(np.asarray(tokens, np.int64).tobytes(), digest_size=16).digest()


@dataclass
class Page:
    arrays: Dict[str, np.ndarray]      # position-indexed slot -> its rows for this page
    nbytes: int
    refs: int = 0


@dataclass
class Snapshot:
    length: int                        # positions the state holds
    pages: List[bytes]                 # chain keys of its whole pages
    tail_hash: bytes                   # hash of the tokens after the last whole page
    tail: Dict[str, np.ndarray]        # fixed slots (whole) + position-indexed rows past the pages
    nbytes: int = 0
    key: Tuple[bytes, bytes, int] = field(init=False)

    def __post_init__(self):
        self.key = (self.pages[-1] if self.pages else ROOT, self.tail_hash, self.length)


class PrefixCache:
    """Snapshots of sequence states keyed by their token prefix, under `budget_bytes`."""

    def __init__(self, spec: StateSpec, budget_bytes: int, page_tokens: Optional[int] = None):
        if budget_bytes < 0:
            raise ConfigError(f"prefix cache budget must be >= 0 bytes, got {budget_bytes}")
        for slot in spec:
            if slot.layout not in (DENSE, PAGES):
                raise ConfigError(f"prefix caching copies rows of dense and model1_pages state; slot {slot.name} "
                                  f"has layout {slot.layout!r}")
        self.spec, self.budget = spec, int(budget_bytes)
        self.page_tokens = page_tokens or page_tokens_for(spec)
        self.positional = {s.name: s for s in spec if s.per_tokens}
        self.pages: Dict[bytes, Page] = {}
        self.snapshots: "OrderedDict[Tuple[bytes, bytes, int], Snapshot]" = OrderedDict()  # LRU first
        self.by_chain: Dict[bytes, List[Snapshot]] = {}
        self.nbytes = 0
        self.hits = self.queries = self.hit_tokens = 0
        self._lock = threading.Lock()

    # ---- lookup ------------------------------------------------------------------------------
    def lookup(self, prompt: Sequence[int]) -> Optional[Snapshot]:
        """The longest cached prefix of `prompt` that leaves at least one token to run, or None."""
        with self._lock:
            self.queries += 1
            if not self.snapshots:
                return None
            P = self.page_tokens
            keys = [ROOT] + chain(prompt[:len(prompt) - 1], P)
            for m in range(len(keys) - 1, -1, -1):
                best = None
                for snap in self.by_chain.get(keys[m], ()):
                    if snap.length < len(prompt) and (best is None or snap.length > best.length) \
                            and snap.tail_hash == tail_key(prompt[m * P:snap.length]):
                        best = snap
                if best is not None:
                    self.snapshots.move_to_end(best.key)
                    self.hits += 1
                    self.hit_tokens += best.length
                    return best
            return None

    def state_of(self, snap: Snapshot) -> Dict[str, np.ndarray]:
        """The snapshot's row state (Model.load_row_state's form)."""
        out = dict(snap.tail)
        for name in self.positional:
            parts = [self.pages[k].arrays[name] for k in snap.pages] + [snap.tail[name]]
            out[name] = np.concatenate(parts, 0)
        return out

    # ---- insert ------------------------------------------------------------------------------
    def cached_pages(self, tokens: Sequence[int]) -> int:
        """How many leading whole pages of `tokens` are cached (their rows need not be read again)."""
        with self._lock:
            n = 0
            for key in chain(tokens, self.page_tokens):
                if key not in self.pages:
                    break
                n += 1
            return n

    def insert(self, tokens: Sequence[int], row_state: Dict[str, np.ndarray], first: int = 0) -> bool:
        """Cache the state of a sequence of exactly `tokens` (Model.row_state(slot, first)'s form:
        position-indexed rows from position `first`, a page boundary whose earlier pages are
        cached). False if it is cached already, or cannot fit the budget."""
        L, P = len(tokens), self.page_tokens
        if L == 0 or first % P:
            return False
        keys = chain(tokens, P)
        snap = Snapshot(L, keys, tail_key(tokens[len(keys) * P:]), {})
        with self._lock:
            if snap.key in self.snapshots:
                self.snapshots.move_to_end(snap.key)
                return False
            if any(key not in self.pages for key in keys[:first // P]):
                return False                      # a page the caller skipped was evicted meanwhile
            new_pages = {}
            for k, key in enumerate(keys):
                if key not in self.pages:
                    arrays = {name: row_state[name][self._rows(s, k * P, (k + 1) * P, first)].copy()
                              for name, s in self.positional.items()}
                    new_pages[key] = Page(arrays, sum(a.nbytes for a in arrays.values()))
            for name, array in row_state.items():
                s = self.positional.get(name)
                snap.tail[name] = array[self._rows(s, len(keys) * P, L, first)].copy() if s else array.copy()
            snap.nbytes = sum(a.nbytes for a in snap.tail.values())
            need = snap.nbytes + sum(p.nbytes for p in new_pages.values())
            if need > self.budget:
                return False
            for key in keys:           # hold the pages this snapshot uses before evicting for room
                self.pages.setdefault(key, new_pages.get(key)).refs += 1
            self.nbytes += need
            self.snapshots[snap.key] = snap
            self.by_chain.setdefault(snap.key[0], []).append(snap)
            while self.nbytes > self.budget and self.snapshots:
                self._evict(next(iter(self.snapshots.values())))
            return snap.key in self.snapshots

    @staticmethod
    def _rows(slot, first_pos: int, end_pos: int, offset: int = 0) -> slice:
        """Rows of a position-indexed slot that positions first_pos..end_pos-1 fill, in an array
        starting at position `offset` (positions page-aligned; the last row may be partial)."""
        base = offset // slot.per_tokens
        return slice(first_pos // slot.per_tokens - base, -(-end_pos // slot.per_tokens) - base)

    def _evict(self, snap: Snapshot) -> None:
        del self.snapshots[snap.key]
        self.by_chain[snap.key[0]].remove(snap)
        if not self.by_chain[snap.key[0]]:
            del self.by_chain[snap.key[0]]
        self.nbytes -= snap.nbytes
        for key in snap.pages:
            page = self.pages[key]
            page.refs -= 1
            if page.refs == 0:
                self.nbytes -= page.nbytes
                del self.pages[key]

    def stats(self) -> Dict[str, int]:
        return {"snapshots": len(self.snapshots), "pages": len(self.pages), "bytes": self.nbytes,
                "budget_bytes": self.budget, "queries": self.queries, "hits": self.hits,
                "hit_tokens": self.hit_tokens}
