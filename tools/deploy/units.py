"""Parse and format the planner's sizes, times and rates ("128K", "1M", "50ms", "20k/s")."""
from __future__ import annotations

import re

from . import PlanError

_SIZE_SUFFIX = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
_TIME_SUFFIX = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_RATE_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6}


def parse_tokens(text: str, flag: str = "--context") -> int:
    """'128K' -> 131072, '1M' -> 1048576, '4096' -> 4096 (binary K/M as in context lengths)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise PlanError(f"{flag} {text!r}: expected a token count such as 4096, 128K or 1M")
    value = float(m.group(1)) * _SIZE_SUFFIX[m.group(2).upper()]
    if value < 1 or value != int(value):
        raise PlanError(f"{flag} {text!r}: must be a whole number of tokens >= 1")
    return int(value)


def parse_time(text: str, flag: str = "--tpot") -> float:
    """'50ms' -> 0.05 s; a unit (s, ms, us) is required so that 50 is never ambiguous."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|ms|us)\s*", str(text))
    if not m:
        raise PlanError(f"{flag} {text!r}: expected a time with a unit, such as 50ms or 0.05s")
    value = float(m.group(1)) * _TIME_SUFFIX[m.group(2)]
    if value <= 0:
        raise PlanError(f"{flag} {text!r}: must be > 0")
    return value


def parse_rate(text: str, flag: str = "--prefill-throughput") -> float:
    """'200k' or '200k/s' -> 200000.0 tokens per second (decimal k/M for rates)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*(?:tok(?:ens)?)?\s*(?:/s)?\s*", str(text))
    if not m:
        raise PlanError(f"{flag} {text!r}: expected tokens per second such as 50000, 200k or 1.5M/s")
    value = float(m.group(1)) * _RATE_SUFFIX[m.group(2).upper()]
    if value <= 0:
        raise PlanError(f"{flag} {text!r}: must be > 0")
    return value


def fmt_bytes(n: float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024.0
    return f"{n:.2f} TiB"  # pragma: no cover


def fmt_tokens(n: int) -> str:
    """1048576 -> '1M', 131072 -> '128K', 5000 -> '5000'."""
    for suffix, size in (("M", 1024 ** 2), ("K", 1024)):
        if n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)
