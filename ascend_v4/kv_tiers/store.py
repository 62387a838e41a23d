"""The slower tiers: page groups (uint8 [csa_layers, PAGE_BLOCK * TOKEN_BYTES], the MODEL1 blocks
exactly as the device pool holds them) in host memory and in one disk file, each in LRU order."""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import OrderedDict
from typing import Hashable, Optional

import numpy as np


class HostStore:
    """Page groups in host memory under a byte budget (None: unbounded); oldest first."""

    def __init__(self, budget: Optional[int], group_bytes: int):
        self.capacity = None if budget is None else budget // group_bytes      # page groups
        self.pages: "OrderedDict[Hashable, np.ndarray]" = OrderedDict()

    def full(self) -> bool:
        return self.capacity is not None and len(self.pages) >= self.capacity

    def put(self, key, group: np.ndarray) -> None:
        self.pages[key] = np.array(group, copy=True)

    def pop_oldest(self):
        return self.pages.popitem(last=False)

    def take(self, key) -> Optional[np.ndarray]:
        return self.pages.pop(key, None)

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self.pages.values())


class DiskStore:
    """Page groups in one np.memmap file of `capacity` groups (a sparse file: only written groups
    take disk space) under `folder` (default: a temporary folder, removed by close())."""

    def __init__(self, budget: Optional[int], group_shape, capacity: int, folder: Optional[str] = None):
        group_bytes = int(np.prod(group_shape))
        if budget is not None:
            capacity = min(capacity, budget // group_bytes)
        self.capacity = capacity
        self.owned = folder is None
        self.folder = tempfile.mkdtemp(prefix="ascend_v4_kv_") if folder is None else folder
        os.makedirs(self.folder, exist_ok=True)
        self.path = os.path.join(self.folder, f"kv_pages_{os.getpid()}_{id(self):x}.bin")
        self.file = np.memmap(self.path, np.uint8, "w+", shape=(max(1, capacity),) + tuple(group_shape)) \
            if capacity else None
        self.index: "OrderedDict[Hashable, int]" = OrderedDict()                  # key -> file slot
        self.free = list(range(capacity - 1, -1, -1))
        self._cleanup = weakref.finalize(self, DiskStore._remove, self.path, self.folder if self.owned else None)

    @staticmethod
    def _remove(path: str, folder) -> None:
        if os.path.exists(path):
            os.unlink(path)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)

    def full(self) -> bool:
        return not self.free

    def put(self, key, group: np.ndarray) -> None:
        i = self.free.pop()
        self.file[i] = group
        self.index[key] = i

    def take(self, key) -> Optional[np.ndarray]:
        i = self.index.pop(key, None)
        if i is None:
            return None
        self.free.append(i)
        return np.array(self.file[i])

    def drop(self, key) -> None:
        i = self.index.pop(key, None)
        if i is not None:
            self.free.append(i)

    def close(self) -> None:
        self.file = None            # the memmap closes when its last reference goes
        self._cleanup()
