"""Choosing the next token from logits: greedy (temperature 0), or a draw from the softmax of
logits / temperature restricted to the nucleus of mass top_p. One owner for `Model.generate`,
the serving engine and MTP verification."""
from __future__ import annotations

import numpy as np


def probabilities(logits: np.ndarray, temperature: float, top_p: float = 1.0) -> np.ndarray:
    """logits [vocab] -> the sampling distribution [vocab] (float64; temperature > 0): softmax of
    logits / temperature, then only the most likely tokens whose mass first reaches top_p."""
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.searchsorted(np.cumsum(p[order]), top_p) + 1     # smallest prefix with mass >= top_p
        mask = np.zeros_like(p)
        mask[order[:keep]] = 1.0
        p = p * mask
        p /= p.sum()
    return p


def sample_one(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float = 1.0) -> int:
    """logits [vocab] -> one token id (argmax at temperature 0)."""
    if temperature == 0:
        return int(np.argmax(logits))
    p = probabilities(logits, temperature, top_p)
    return int(rng.choice(p.shape[-1], p=p))


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_p: float = 1.0) -> np.ndarray:
    """logits [b, vocab] -> ids [b], rows drawn in order from one generator."""
    return np.array([sample_one(row, temperature, rng, top_p) for row in logits])
