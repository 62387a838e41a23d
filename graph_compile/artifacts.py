"""The compile output folder: built in a hidden temp folder next to it, manifest written last,
then renamed into place, so an interrupted compile never leaves a folder that looks complete."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterator

MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """An output folder that cannot be written, or an artifact folder that is not valid."""


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(folder: str) -> Dict[str, str]:
    """relative path -> sha256 of every file under `folder` (manifest excluded)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(root, f), folder)
            if rel != MANIFEST:
                out[rel] = sha256(os.path.join(root, f))
    return dict(sorted(out.items()))


def check_output_folder(out: str, overwrite: bool) -> None:
    """Fail early with a clear message when `out` cannot be (re)written."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ArtifactError(f"output folder {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ArtifactError(f"output folder {out} exists and is not empty (pass --overwrite to replace it)")
    if not os.path.isdir(parent):
        raise ArtifactError(f"cannot create output folder {out}: parent {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"cannot write output folder {out}: {parent} is not writable")
    try:                                  # the real test (root passes os.access everywhere)
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=parent))
    except OSError as exc:
        raise ArtifactError(f"cannot write output folder {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def staging_folder(out: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on error it is removed."""
    check_output_folder(out, overwrite)
    out = os.path.abspath(out)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=os.path.dirname(out))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if not os.path.exists(os.path.join(tmp, MANIFEST)):
            raise ArtifactError("internal: compile finished without a manifest")
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
            os.rename(out, os.path.join(old, "x"))
        os.rename(tmp, out)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(folder: str, manifest: dict) -> dict:
    """Write manifest.json (with the file hashes) via a temp file + rename; returns it."""
    manifest = dict(manifest, files=file_hashes(folder))
    tmp = os.path.join(folder, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
    os.replace(tmp, os.path.join(folder, MANIFEST))
    return manifest


def read_manifest(folder: str, verify: bool = True) -> dict:
    """Load and (optionally) hash-check the manifest of an artifact folder."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise ArtifactError(f"{folder}: no such artifact folder")
    if not os.path.exists(path):
        raise ArtifactError(f"{folder}: no {MANIFEST} (not a finished compile output)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            p = os.path.join(folder, rel)
            if not os.path.exists(p):
                raise ArtifactError(f"{folder}: file {rel} listed in the manifest is missing")
    return manifest
