"""Sharded loading: each rank reads only its own part of every tensor (V4_SPEC section 10).

The split rules have one owner, `checkpoint.schema.split_dim` (the release's mp rules: embed,
head, wq_b, wo_a, attn_sink, indexer wq_b / weights_proj along dim 0, wo_b along dim 1); routed
experts are split by index (the model's table lists only the rank's experts, so the others are
never read). A converted checkpoint saved with mp = tp gives each rank its own file's part;
otherwise the rank slices the memory-mapped tensor (only the slice's pages are read).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ascend_v4.checkpoint.schema import split_dim
from ascend_v4.config import ConfigError
from ascend_v4.parallel.layout import ParallelLayout
from ascend_v4.quant import FP8_BLOCK


def piece(size: int, parts: int, index: int) -> Tuple[int, int]:
    """[start, stop) of part `index` of `parts` equal pieces of `size`."""
    n = size // parts
    return index * n, (index + 1) * n


def read_tensor(checkpoint, name: str, layout: ParallelLayout) -> np.ndarray:
    """This rank's part of checkpoint tensor `name` (a weight or its `.scale`), as stored."""
    dim = split_dim(name)
    if layout.tp == 1 or dim is None:
        return checkpoint.raw(name)
    own = checkpoint.rank_part(name, layout.tp, layout.tp_index)
    if own is not None:                               # a converted model{r}-mp{tp} file holds it
        return own
    full = checkpoint.raw(name)
    if name.endswith(".scale"):
        return _scale_piece(checkpoint, name, full, dim, layout)
    lo, hi = piece(full.shape[dim], layout.tp, layout.tp_index)
    return np.array(np.take(full, np.arange(lo, hi), axis=dim))


def _scale_piece(checkpoint, name: str, scale: np.ndarray, dim: int, layout: ParallelLayout) -> np.ndarray:
    """The 128-blocks of an FP8 weight's scale that cover this rank's slice of the weight. A slice
    must be whole blocks or lie inside one block, else its scales are not separable."""
    size = checkpoint.schema[name[: -len(".scale")] + ".weight"].shape[dim]
    lo, hi = piece(size, layout.tp, layout.tp_index)
    first, last = lo // FP8_BLOCK, (hi - 1) // FP8_BLOCK
    if last - first + 1 != -(-(hi - lo) // FP8_BLOCK):
        raise ConfigError(f"{name}: tensor parallel {layout.tp} cuts {size} into pieces of {hi - lo}, "
                          f"which straddle its {FP8_BLOCK}-wide FP8 scale blocks")
    return np.array(np.take(scale, np.arange(first, last + 1), axis=dim))
