"""Deployment formats a SoC picks (`plan --soc`, `compile --soc`): weight scheme, KV and indexer cache.

The SoC profile (`custom_ops/runtime/soc_profiles.py`) owns the hardware facts and the defaults; the
schemes' per-role formats are `model_stats.SCHEMES`. A scheme runs on a SoC iff its cube unit has
every matmul input the scheme's formats need; a KV cache iff the profile lists it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from custom_ops.runtime.soc_profiles import PROFILES, SocError, SocProfile, get_profile

from . import PlanError
from .model_stats import SCHEMES

SCHEME_FORMATS = {name: set(roles.values()) for name, roles in SCHEMES.items()}


@dataclass(frozen=True)
class Formats:
    soc: str              # profile name
    weights: str          # SCHEMES key
    kv_cache: str         # model_stats.CACHE_FORMATS key
    indexer_cache: str

    def to_dict(self) -> Dict[str, object]:
        return {"soc": self.soc, "weights": self.weights, "weight_formats": dict(SCHEMES[self.weights]),
                "kv_cache": self.kv_cache, "indexer_cache": self.indexer_cache}


def profile_for(soc: Optional[str], chip_soc: str = "", chip: str = "") -> SocProfile:
    """`--soc` if given (it must be the chip's SoC when the chip names one), else the chip's."""
    try:
        given = get_profile(soc) if soc else None
        own = get_profile(chip_soc) if chip_soc else None
    except SocError as exc:
        raise PlanError(f"--soc: {exc}") from None
    if given and own and given.name != own.name:
        raise PlanError(f"--soc {soc}: the cluster's {chip} chips are {own.name}, not {given.name}")
    if not (given or own):
        raise PlanError(f"the {chip or 'cluster'} chips name no SoC profile: add 'soc: NAME' to the NPU "
                        f"YAML or pass --soc (known: {', '.join(PROFILES)})")
    return given or own


def pick(profile: SocProfile, weights: Optional[str] = None, kv_cache: Optional[str] = None) -> Formats:
    """The SoC's default formats, or the requested ones if the SoC runs them (else PlanError)."""
    try:
        scheme = profile.check_weights(weights or profile.default_weights, SCHEME_FORMATS)
        cache = profile.check_kv_cache(kv_cache or profile.default_kv_cache)
    except SocError as exc:
        raise PlanError(str(exc)) from None
    return Formats(profile.name, scheme, cache, profile.indexer_cache(cache))


def defaults_help(what: str) -> str:
    """'ascend910b w8a8, ...' for --help: each profile's default `weights` or `kv_cache`, and what it runs."""
    if what == "weights":
        return "; ".join(f"{p.name}: {p.default_weights} of {', '.join(p.runnable(SCHEME_FORMATS))}"
                         for p in PROFILES.values())
    return "; ".join(f"{p.name}: {p.default_kv_cache} of {', '.join(k for k, _ in p.kv_caches)}"
                     for p in PROFILES.values())
