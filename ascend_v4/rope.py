"""Rotary embeddings on interleaved pairs, with YaRN for compressed layers (V4_SPEC section 4)."""
from __future__ import annotations

import math

import numpy as np
from mindspore import ops

from ascend_v4.config import ModelConfig


def rope_frequencies(cfg: ModelConfig, compressed: bool) -> np.ndarray:
    """Per-pair angular frequencies f_i [rope_head_dim / 2] (float64).

    Window-only layers: rope_theta, no YaRN. Compressed layers: compress_rope_theta with the
    YaRN ramp between the correction dims of beta_fast and beta_slow at original_seq_len.
    """
    dim = cfg.rope_head_dim
    base = cfg.compress_rope_theta if compressed else cfg.rope_theta
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if compressed and cfg.original_seq_len > 0:
        def correction_dim(rotations):
            return dim * math.log(cfg.original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(correction_dim(cfg.beta_fast)), 0)
        high = min(math.ceil(correction_dim(cfg.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / cfg.rope_factor * (1 - smooth) + freqs * smooth
    return freqs


def rope_tables(cfg: ModelConfig, compressed: bool, max_seq_len: int):
    """cos and sin tables [max_seq_len, rope_head_dim / 2] float64 (cast to the compute dtype)."""
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), rope_frequencies(cfg, compressed))
    return np.cos(angles), np.sin(angles)


def apply_rope(x, cos, sin, inverse: bool = False):
    """Rotate interleaved pairs of x [..., s, (h,) rd] by cos/sin broadcastable to [..., rd/2].

    `inverse` rotates by -angle (used on the attention output).
    """
    shape = x.shape
    pairs = x.reshape(shape[:-1] + (shape[-1] // 2, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    if inverse:
        sin = -sin
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return ops.stack((y0, y1), -1).reshape(shape)
