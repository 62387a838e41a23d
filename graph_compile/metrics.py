"""Agreement metrics between two arrays, and the tolerance file.

rel      = max|a - b| / max|b|   (relative to the reference's scale; elementwise relative error
           is meaningless where values cross zero)
max_abs  = max|a - b|;  cosine over the flattened arrays;  top1 = fraction of rows whose
           argmax agrees (logits only). Entries that are equal (including equal +-inf, as in the
           compressor's score state) count as exact; an inf on one side only is a mismatch.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional

import numpy as np
import yaml

TOLERANCE_FILE = os.path.join(os.path.dirname(__file__), "tolerances.yaml")


def compare(a: np.ndarray, b: np.ndarray, logits: bool = False) -> Dict[str, float]:
    """a: candidate, b: reference (same shape) -> {max_abs, rel, cosine[, top1]}."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return {"max_abs": math.inf, "rel": math.inf, "cosine": 0.0, "shape_mismatch": 1.0}
    same = a == b
    finite = np.isfinite(a) & np.isfinite(b)
    if np.any(~same & ~finite):
        return {"max_abs": math.inf, "rel": math.inf, "cosine": 0.0}
    with np.errstate(invalid="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    af, bf = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
    scale = float(np.abs(bf).max()) if bf.size else 0.0
    max_abs = float(d.max()) if d.size else 0.0
    na, nb = float(np.linalg.norm(af)), float(np.linalg.norm(bf))
    cos = 1.0 if na == nb == 0 else float(np.dot(af.ravel(), bf.ravel()) / (na * nb)) if na and nb else 0.0
    out = {"max_abs": max_abs, "rel": max_abs / scale if scale else (0.0 if max_abs == 0 else math.inf),
           "cosine": cos}
    if logits:
        out["top1"] = float(np.mean(a.reshape(-1, a.shape[-1]).argmax(-1) == b.reshape(-1, b.shape[-1]).argmax(-1)))
    return out


def load_tolerances(path: Optional[str] = None) -> dict:
    with open(path or TOLERANCE_FILE) as f:
        return yaml.safe_load(f)


def within(metrics: Dict[str, float], tol: Dict[str, float]) -> bool:
    """True when every metric is inside its tolerance (max_rel, min_cosine, min_top1)."""
    if metrics.get("shape_mismatch"):
        return False
    if "max_rel" in tol and not metrics["rel"] <= tol["max_rel"]:
        return False
    if "min_cosine" in tol and not metrics["cosine"] >= tol["min_cosine"]:
        return False
    if "min_top1" in tol and "top1" in metrics and not metrics["top1"] >= tol["min_top1"]:
        return False
    return True
