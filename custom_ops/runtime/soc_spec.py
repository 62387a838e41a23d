"""Which SoC the CPU twins emulate (Unified Buffer size, vector cores, fp8 vector Cast)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

# Figures per vector core (AIV); sources in custom_ops/ascendc_cpu/README.md.
KNOWN = {
    "Ascend910B": dict(ub_bytes=192 * 1024, vector_cores=48, fp8_vector_cast=False),
    "Ascend910_93": dict(ub_bytes=192 * 1024, vector_cores=48, fp8_vector_cast=False),
}


@dataclass(frozen=True)
class Soc:
    name: str
    ub_bytes: int
    vector_cores: int
    fp8_vector_cast: bool


_current = Soc("Ascend910B", **KNOWN["Ascend910B"])


def get_soc() -> Soc:
    return _current


def set_soc(name: str = "Ascend910B", *, ub_bytes: int | None = None, vector_cores: int | None = None,
            fp8_vector_cast: bool | None = None) -> Soc:
    """Select a known SoC by name, or a custom one by giving its figures (overrides a known name's)."""
    global _current
    base = KNOWN.get(name)
    if base is None and ub_bytes is None:
        raise ValueError(f"unknown SoC {name!r}; known: {sorted(KNOWN)} (or pass ub_bytes=, vector_cores=)")
    base = dict(base or dict(ub_bytes=0, vector_cores=1, fp8_vector_cast=False))
    for key, val in (("ub_bytes", ub_bytes), ("vector_cores", vector_cores), ("fp8_vector_cast", fp8_vector_cast)):
        if val is not None:
            base[key] = val
    if base["ub_bytes"] < 1024 or base["ub_bytes"] % 32 or base["vector_cores"] < 1:
        raise ValueError(f"bad SoC figures {base}: ub_bytes must be a multiple of 32 >= 1024, vector_cores >= 1")
    _current = Soc(name, int(base["ub_bytes"]), int(base["vector_cores"]), bool(base["fp8_vector_cast"]))
    from custom_ops.runtime.build import loaded_libraries
    for lib in loaded_libraries():
        apply_soc(lib)
    return _current


@contextlib.contextmanager
def soc(name: str = "Ascend910B", **figures):
    """Temporarily emulate another SoC: `with soc("tiny", ub_bytes=16384, vector_cores=3): ...`."""
    before = _current
    set_soc(name, **figures)
    try:
        yield _current
    finally:
        set_soc(before.name, ub_bytes=before.ub_bytes, vector_cores=before.vector_cores,
                fp8_vector_cast=before.fp8_vector_cast)


def apply_soc(lib) -> None:
    s = _current
    rc = lib.ascendc_twin_set_soc(s.name.encode(), s.ub_bytes, s.vector_cores, int(s.fp8_vector_cast))
    if rc != 0:
        raise ValueError(f"the twin library rejected SoC {s}")
