"""The tier manager: which logical page (row, page) of the CSA entries lives where, LRU moves
between device -> host -> disk, and the optimistic call with re-run that keeps results exact.

A call of the model on rows [(row, start, n)]:
  1. prepare: the pages the call writes (entries start//4 .. (start+n)//4) must be resident
     (pinned), and the pages each row selected in its last call are prefetched (top-k sets move
     slowly); the device pools and the page table in the state tuple are updated to match.
  2. the graph runs and reports, per row, the pages its queries selected (`entries_used`).
  3. if a selected page was not resident, those pages are fetched (evicting least recently used
     pages that this call does not need) and the call is re-run from the same pre-call state: the
     indexer (device-resident) selects the same entries, now all resident, so the result is the
     one an all-resident cache gives, bit for bit.
Moves never change page bytes, only where they live.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Sequence, Set, Tuple

import numpy as np

from ascend_v4.config import ConfigError
from ascend_v4.kv_tiers.budget import KvBudget, TierPlan
from ascend_v4.kv_tiers.store import DiskStore, HostStore
from ascend_v4.state import PAGE_BLOCK, TABLE, TIERED, TOKEN_BYTES

Key = Tuple[int, int]          # (row, logical page)


class TierManager:
    def __init__(self, spec, plan: TierPlan, budget: KvBudget, max_batch: int, spill_dir=None):
        self.plan, self.budget, self.B = plan, budget, max_batch
        self.pool_pos = [i for i, s in enumerate(spec) if s.layout == TIERED]
        self.table_pos = [i for i, s in enumerate(spec) if s.layout == TABLE]
        self.used_pos = [i for i, s in enumerate(spec) if s.name.endswith(".entries_used")]
        self.n_dev, self.P = plan.device_pages, plan.max_pages
        group_shape = (len(self.pool_pos), PAGE_BLOCK * TOKEN_BYTES)
        self.host = HostStore(budget.host, plan.group_bytes)
        self.disk = DiskStore(budget.disk, group_shape, max_batch * self.P, spill_dir)
        self.counters = dict.fromkeys(("calls", "reruns", "pages_selected", "pages_missed", "fetched_host",
                                       "fetched_disk", "prefetched", "evicted_to_host", "evicted_to_disk",
                                       "graph_reruns"), 0)
        self.reset()

    # ---- bookkeeping ------------------------------------------------------------------------
    def reset(self) -> None:
        self.table = np.full((self.B, self.P), -1, np.int32)   # logical page -> device block
        self.device: "OrderedDict[Key, int]" = OrderedDict()   # resident pages, least recent first
        self.free = list(range(self.n_dev - 1, -1, -1))
        self.last_used: Dict[int, Set[int]] = {}
        for key in list(self.host.pages):
            self.host.take(key)
        for key in list(self.disk.index):
            self.disk.drop(key)

    def release(self, row: int) -> None:
        """Forget row's pages in every tier (a new sequence starts in that slot)."""
        for key in [k for k in self.device if k[0] == row]:
            self.free.append(self.device.pop(key))
        self.table[row] = -1
        for key in [k for k in self.host.pages if k[0] == row]:
            self.host.take(key)
        for key in [k for k in self.disk.index if k[0] == row]:
            self.disk.drop(key)
        self.last_used.pop(row, None)

    def close(self) -> None:
        self.disk.close()

    def where(self, key: Key) -> str:
        if key in self.device:
            return "device"
        if key in self.host.pages:
            return "host"
        return "disk" if key in self.disk.index else "none"

    def stats(self) -> Dict[str, object]:
        c = dict(self.counters)
        c["hit_rate"] = 1 - c["reruns"] / c["calls"] if c["calls"] else None
        c["page_hit_rate"] = 1 - c["pages_missed"] / c["pages_selected"] if c["pages_selected"] else None
        c.update(device_pages=self.n_dev, resident=len(self.device), host_pages=len(self.host.pages),
                 disk_pages=len(self.disk.index))
        return c

    # ---- one model call ----------------------------------------------------------------------
    def run(self, state: tuple, calls: Sequence[Tuple[int, int, int]], graph) -> tuple:
        """Run `graph(state) -> (outputs, new state)` for calls [(row, start, n)] with every page
        it reads resident -> (outputs, new state)."""
        from mindspore import Tensor
        self.counters["calls"] += 1
        written = {(r, p) for r, s, n in calls for p in self._written_pages(s, n)}
        want = {(r, p) for r, _, _ in calls for p in self.last_used.get(r, ())} - written
        pools = self._Pools(state, self.pool_pos)
        for key in sorted(written):
            self._ensure(key, pools, written)
        for key in sorted(want):
            if key not in self.device and self._ensure(key, pools, written | want, optional=True):
                self.counters["prefetched"] += 1
        state_in = self._with_tiers(pools.state(Tensor), Tensor)
        outputs, new_state = graph(state_in)
        used = self._used(new_state, calls)
        first = True
        for _ in range(self.plan.csa_layers + 1):
            selected = set().union(*used.values()) if used else set()
            missed = {key for key in selected if key not in self.device}
            if first:
                self.counters["pages_selected"] += len(selected)
                self.counters["pages_missed"] += len(missed)
                self.counters["reruns"] += bool(missed)
                first = False
            if not missed:
                break
            # a miss in one CSA layer changes the input of the next one, whose indexer may then
            # select other pages: repeat until a run reads only resident pages (at most once per layer)
            self.counters["graph_reruns"] += 1
            need = written | selected
            if len(need) > self.n_dev:
                raise ConfigError(
                    f"kv_budget: this call reads {len(need)} page groups at once but the device tier "
                    f"holds {self.n_dev} (device={self.budget.device / 2 ** 20:.2f}MiB after "
                    f"{self.plan.hot_bytes / 2 ** 20:.2f} MiB of hot state): raise the device budget or "
                    f"lower prefill_chunk")
            pools = self._Pools(state_in, self.pool_pos)
            for key in sorted(missed):
                self._ensure(key, pools, need)
            state_in = self._with_tiers(pools.state(Tensor), Tensor)
            outputs, new_state = graph(state_in)
            used = self._used(new_state, calls)
        else:
            raise RuntimeError("tiered KV cache: the pages a call selects did not settle")
        for r, keys in used.items():
            self.last_used[r] = {p for _, p in keys}
            for key in sorted(keys):
                self.device.move_to_end(key)
        return outputs, new_state

    def _written_pages(self, start: int, n: int) -> range:
        first = start // 4 // PAGE_BLOCK
        last = min((start + n) // 4 // PAGE_BLOCK, self.P - 1)
        return range(first, last + 1)

    def _used(self, state, calls) -> Dict[int, Set[Key]]:
        """Pages each called row's queries selected, over every CSA layer."""
        rows = sorted({r for r, _, _ in calls})
        marks = sum(state[i].asnumpy()[rows] for i in self.used_pos)              # [rows, P]
        return {r: {(r, int(p)) for p in np.flatnonzero(marks[j])} for j, r in enumerate(rows)}

    def _with_tiers(self, state: tuple, Tensor) -> tuple:
        table = Tensor(self.table.copy())
        state = list(state)
        for i in self.table_pos:
            state[i] = table
        return tuple(state)

    # ---- moves ----------------------------------------------------------------------------
    class _Pools:
        """The device pools of a state tuple, copied to numpy on the first move."""

        def __init__(self, state, positions):
            self.base, self.positions, self.arrays = state, positions, None

        def group(self) -> np.ndarray:
            if self.arrays is None:
                self.arrays = np.stack([np.array(self.base[i].asnumpy()) for i in self.positions])
            return self.arrays                                     # [layers, blocks, bytes]

        def state(self, Tensor) -> tuple:
            if self.arrays is None:
                return self.base
            out = list(self.base)
            for j, i in enumerate(self.positions):
                out[i] = Tensor(self.arrays[j])
            return tuple(out)

    def _ensure(self, key: Key, pools, pinned: Set[Key], optional: bool = False) -> bool:
        """Make `key` resident, loading its bytes from host or disk (a page never stored has none:
        the graph writes each entry before any query can select it), evicting the least recently
        used page not in `pinned`."""
        if key in self.device:
            self.device.move_to_end(key)
            return True
        victim = None
        if not self.free:
            victim = next((k for k in self.device if k not in pinned), None)
            if victim is None:
                if optional:
                    return False
                raise ConfigError(f"kv_budget: the device tier's {self.n_dev} page groups are all needed by "
                                  f"this call; raise the device budget")
        group = self.host.take(key)              # taken first: its host slot is free for the victim
        if group is not None:
            self.counters["fetched_host"] += 1
        else:
            group = self.disk.take(key)
            if group is not None:
                self.counters["fetched_disk"] += 1
        if victim is not None:
            self._evict(victim, pools)
        slot = self.free.pop()
        if group is not None:
            pools.group()[:, slot] = group
        self.device[key] = slot
        self.table[key] = slot
        return True

    def _evict(self, key: Key, pools) -> None:
        slot = self.device.pop(key)
        self.table[key] = -1
        if self.host.capacity == 0:
            self._to_disk(key, pools.group()[:, slot])
        else:
            if self.host.full():
                self._to_disk(*self.host.pop_oldest())
            self.host.put(key, pools.group()[:, slot])
            self.counters["evicted_to_host"] += 1
        self.free.append(slot)

    def _to_disk(self, key: Key, group: np.ndarray) -> None:
        if self.disk.full():
            raise ConfigError(f"kv_budget: the disk tier is full ({self.disk.capacity} page groups of "
                              f"{self.plan.group_bytes} B); raise disk= or give it no limit")
        self.disk.put(key, group)
        self.counters["evicted_to_disk"] += 1
