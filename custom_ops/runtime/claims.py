"""Which SoCs each kernel claims: the `AICore().AddConfig("<soc>")` lines of its op_host/*_def.cpp
(what the CANN build registers) are the source of truth. Running a twin on a profile its kernel does
not claim is refused; custom SoCs (figures given in tests) are variations for tiling and pass."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Dict, Tuple

from custom_ops.runtime.soc_profiles import PROFILES, SocError

OPS_ROOT = Path(__file__).resolve().parent.parent      # custom_ops/
_ADD_CONFIG = re.compile(r'AICore\(\)\s*\.\s*AddConfig\(\s*"([A-Za-z0-9_]+)"')
SELFTEST = "ascendc_selftest"                          # the emulator's own test kernels claim every profile


def parse_claims(def_cpp: Path) -> Tuple[str, ...]:
    """The SoC names of the AddConfig lines of one op_host/*_def.cpp, in order."""
    names = tuple(_ADD_CONFIG.findall(def_cpp.read_text()))
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        raise SocError(f"{def_cpp}: AddConfig names SoC {', '.join(unknown)} with no profile in "
                       f"custom_ops/runtime/soc_profiles.py (known: {', '.join(PROFILES)})")
    return names


@functools.lru_cache(maxsize=None)
def claimed_socs(kernel: str) -> Tuple[str, ...]:
    if kernel == SELFTEST:
        return tuple(PROFILES)
    defs = sorted((OPS_ROOT / kernel / "op_host").glob("*_def.cpp"))
    if not defs:
        raise SocError(f"kernel {kernel!r} has no op_host/*_def.cpp to say which SoCs it claims")
    return tuple(dict.fromkeys(n for d in defs for n in parse_claims(d)))


def all_claims() -> Dict[str, Tuple[str, ...]]:
    """kernel -> claimed profiles, for every operator folder with an op_host definition."""
    return {d.parent.parent.name: claimed_socs(d.parent.parent.name)
            for d in sorted(OPS_ROOT.glob("*/op_host/*_def.cpp"))}


def require_claim(kernel: str, claims: Tuple[str, ...], profile: str | None) -> None:
    """Refuse a run on a profile the kernel does not claim (profile None: a custom SoC, allowed)."""
    if profile is not None and profile not in claims:
        raise SocError(f"{kernel} does not claim SoC {profile}: its op_host AddConfig lists "
                       f"{', '.join(claims) or 'no SoC'}")
