"""Byte sizes given by users ("512MiB", "1GiB", "500MB", "0"): one parser for every budget option."""
from __future__ import annotations

import re
from typing import Optional

from ascend_v4.config import ConfigError

# binary K/M/G/T (and KiB ...), decimal kB/MB/GB/TB, B or none = bytes
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
         "t": 1 << 40, "tib": 1 << 40, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def size_bytes(text) -> Optional[int]:
    """'512MiB' -> 536870912; None when `text` is not a size."""
    m = _SIZE.fullmatch(str(text))
    unit = m.group(2).lower() if m else None
    if unit not in UNITS:
        return None
    return int(float(m.group(1)) * UNITS[unit])


def parse_bytes(text, what: str) -> int:
    """size_bytes, or a ConfigError naming the option `what`."""
    n = size_bytes(text)
    if n is None:
        raise ConfigError(f"{what} {text!r}: expected a size such as 0, 512MiB or 2GiB")
    return n
