"""Which SoC the CPU twins emulate: a profile of `soc_profiles` (UB size, vector cores, vector dtypes)
or a custom one for tests (`soc("small", ub_bytes=..., vector_cores=...)`)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import FrozenSet, Optional

from custom_ops.runtime.soc_profiles import DEFAULT, PROFILES, SocError, get_profile, known


@dataclass(frozen=True)
class Soc:
    name: str                       # shown in rule errors: the profile's CANN name, or the custom name
    ub_bytes: int                   # Unified Buffer per vector core
    vector_cores: int
    vector_dtypes: FrozenSet[str]   # soc_profiles.VECTOR_DTYPES names
    profile: Optional[str] = None   # the soc_profiles name; None for a custom SoC

    @property
    def fp8_vector_cast(self) -> bool:
        return "fp8_e4m3" in self.vector_dtypes


def _from_profile(name: str) -> Soc:
    p = get_profile(name)
    return Soc(p.cann_name, p.ub_bytes, p.vector_cores, p.vector_dtypes, p.name)


_current = _from_profile(DEFAULT)


def get_soc() -> Soc:
    return _current


def set_soc(name: str = DEFAULT, *, ub_bytes: int | None = None, vector_cores: int | None = None,
            fp8_vector_cast: bool | None = None) -> Soc:
    """Select a profile by name or alias (`ascend910b`, `Ascend910_93`, `ascend950`, ...), or a custom
    SoC by giving figures. Figures given with a profile's name make a custom SoC based on it; a custom
    name starts from ascend910b's vector dtypes, with fp8 if `fp8_vector_cast`."""
    global _current
    try:
        base = _from_profile(name)
    except SocError:
        if ub_bytes is None:
            raise SocError(f"unknown SoC {name!r}; known: {known()} (or pass ub_bytes=, vector_cores=)") from None
        base = Soc(name, 0, 1, PROFILES[DEFAULT].vector_dtypes)
    custom = any(v is not None for v in (ub_bytes, vector_cores, fp8_vector_cast))
    if custom:
        dtypes = set(base.vector_dtypes)
        if fp8_vector_cast is not None:
            (dtypes.add if fp8_vector_cast else dtypes.discard)("fp8_e4m3")
        base = Soc(name, int(base.ub_bytes if ub_bytes is None else ub_bytes),
                   int(base.vector_cores if vector_cores is None else vector_cores), frozenset(dtypes))
    if base.ub_bytes < 1024 or base.ub_bytes % 32 or base.vector_cores < 1:
        raise ValueError(f"bad SoC figures {base}: ub_bytes must be a multiple of 32 >= 1024, vector_cores >= 1")
    _current = base
    from custom_ops.runtime.build import loaded_libraries
    for lib in loaded_libraries():
        apply_soc(lib)
    return _current


@contextlib.contextmanager
def soc(name: str = DEFAULT, **figures):
    """Temporarily emulate another SoC: `with soc("ascend950"): ...`, `with soc("tiny", ub_bytes=16384)`."""
    global _current
    before = _current
    set_soc(name, **figures)
    try:
        yield _current
    finally:
        _current = before
        from custom_ops.runtime.build import loaded_libraries
        for lib in loaded_libraries():
            apply_soc(lib)


def apply_soc(lib) -> None:
    """Hand the current SoC to a loaded twin library (the twin holds no figures of its own)."""
    s = _current
    dtypes = ",".join(sorted(s.vector_dtypes)).encode()
    rc = lib.ascendc_twin_set_soc(s.name.encode(), s.ub_bytes, s.vector_cores, dtypes)
    if rc != 0:
        raise ValueError(f"the twin library rejected SoC {s}")
