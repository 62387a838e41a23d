"""Compile a CPU twin with g++ on first use; cached under custom_ops/_build/, keyed by a source hash.

Concurrent builds are safe: each process compiles to a temporary file and renames it into place.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from custom_ops.runtime.errors import TwinBuildError

ROOT = Path(__file__).resolve().parent.parent          # custom_ops/
EMULATOR = ROOT / "ascendc_cpu"
COMMON_KERNEL = ROOT / "common" / "op_kernel"          # kernel headers shared by several operators
# custom_ops/_build (git-ignored); ASCEND_V4_TWIN_BUILD_DIR overrides it, e.g. for a read-only install
BUILD_DIR = Path(os.environ.get("ASCEND_V4_TWIN_BUILD_DIR") or ROOT / "_build")
CXXFLAGS = ["-std=c++17", "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fvisibility=hidden",
            "-Wall", "-Wno-unused-function"]

_loaded: dict[str, ctypes.CDLL] = {}


def _unit(name: str) -> tuple[Path, list[Path]]:
    """(entry .cpp, include dirs) of a twin: an operator folder or the emulator self-test."""
    if name == "ascendc_selftest":
        return EMULATOR / "selftest" / "selftest_twin.cpp", [EMULATOR]
    op = ROOT / name
    entry = op / "twin" / f"{name}_twin.cpp"
    if not entry.is_file():
        raise TwinBuildError(f"no CPU twin named {name!r}: {entry} does not exist")
    return entry, [EMULATOR, op / "op_host", op / "op_kernel", COMMON_KERNEL]


def _source_hash(entry: Path, includes: list[Path], cxx: str) -> str:
    h = hashlib.sha256(" ".join([cxx] + CXXFLAGS).encode())
    files = {entry}
    for d in includes + [entry.parent]:
        files.update(p for p in d.rglob("*") if p.suffix in (".h", ".hpp", ".cpp"))
    for p in sorted(files):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def twin_library_path(name: str) -> Path:
    """Path of the built shared object for twin `name`, building it if needed."""
    return shared_object(name, *_unit(name))


def shared_object(name: str, entry: Path, includes: list[Path]) -> Path:
    """Build `entry` (a C++ file with aot entry points) into BUILD_DIR/<name>-<hash>.so once."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise TwinBuildError(f"the C++ compiler {cxx!r} is not on PATH; the CPU kernels need g++ >= 12")
    target = BUILD_DIR / f"{name}-{_source_hash(entry, includes, cxx)}.so"
    if target.exists():
        return target
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=BUILD_DIR)
    os.close(fd)
    cmd = [cxx, *CXXFLAGS, *[f"-I{d}" for d in includes], str(entry), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise TwinBuildError(f"building the CPU twin {name!r} failed:\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def twin_library(name: str) -> ctypes.CDLL:
    """The loaded twin library (built on first use), with the current SoC applied."""
    lib = _loaded.get(name)
    if lib is None:
        lib = ctypes.CDLL(str(twin_library_path(name)))
        lib.ascendc_twin_last_error.restype = ctypes.c_char_p
        lib.ascendc_twin_set_soc.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_char_p]
        _loaded[name] = lib
        from custom_ops.runtime.soc_spec import apply_soc
        apply_soc(lib)
    return lib


def loaded_libraries() -> list[ctypes.CDLL]:
    return list(_loaded.values())
