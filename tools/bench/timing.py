"""Timing helpers shared by the benchmark groups."""
from __future__ import annotations

import time

import numpy as np


def best_of(fn, repeat: int = 3, min_time: float = 0.0) -> float:
    """Best wall time (s) of `repeat` calls (more calls while under min_time in total)."""
    times, total = [], 0.0
    while len(times) < repeat or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if len(times) >= 50:
            break
    return min(times)


def stream_copy_bandwidth(mib: int = 256, repeat: int = 5) -> float:
    """STREAM-like copy a -> b of `mib` MiB; bytes/s counting the read and the write."""
    a = np.ones(mib * 2 ** 20 // 8, np.float64)
    b = np.empty_like(a)
    t = best_of(lambda: np.copyto(b, a), repeat)
    return 2 * a.nbytes / t
