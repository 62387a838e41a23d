"""Byte sizes given by users ("512MiB", "1GiB", "2G", "0"): one parser for every budget option."""
from __future__ import annotations

import re

from ascend_v4.config import ConfigError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tib": 1 << 40}


def parse_bytes(text, what: str) -> int:
    """'512MiB' -> 536870912; binary units (K = KiB = 1024; B or none = bytes). `what` names the
    option in the error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ConfigError(f"{what} {text!r}: expected a size such as 0, 512MiB or 2GiB")
    return int(float(m.group(1)) * _UNITS[unit])
