"""Engram conditional memory (V4_SPEC 7), written from the spec and docs/DESIGN.md's Engram section.

Plain Python integers for the hashing (exact by construction), numpy in `real()` for the rest:
  tables      table t of a layer is order n = 2 + t // K, head k = t % K; sizes: the first
              (N-1) K primes >= engram_vocab_size, ascending; stacked in that order in the file
              `engram.layers.{i}.table.bin`: per row head_dim e4m3 bytes + ceil(head_dim/128) ue8m0 bytes
  multipliers SplitMix64 outputs of the state SEED + layer * GOLDEN, each OR 1
  hash        c = compressed ids, pad before the sequence start; mix_n(t) = XOR_{j<n} c[t-j] m_j
              (mod 2^64); row of table (n, k) = mix_n(t) mod p_{n,k}
  gate        a_i = sigmoid(ssqrt(rms(X_i) w_q,i . rms(W_K,i e) w_k,i / sqrt(d))), X_i += a_i W_V e
The compressed-id map is data (like a weight): the caller passes it in (`attach`).
"""
from __future__ import annotations

import os

import ml_dtypes
import numpy as np

from .numerics import real, rms_norm, sigmoid

SEED = 0x456E6772616D
GOLDEN = 0x9E3779B97F4A7C15
M64 = 2 ** 64


def _prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def table_sizes(cfg) -> list:
    count = (cfg.engram_max_ngram_size - 1) * cfg.engram_n_heads
    out, n = [], cfg.engram_vocab_size
    while len(out) < count:
        if _prime(n):
            out.append(n)
        n += 1
    return out


def layer_multipliers(layer_id: int, count: int) -> list:
    x, out = (SEED + layer_id * GOLDEN) % M64, []
    for _ in range(count):
        x = (x + GOLDEN) % M64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M64
        out.append((z ^ (z >> 31)) | 1)
    return out


def hash_rows(cfg, layer_id: int, cmap, ids) -> np.ndarray:
    """ids [b, s] (whole sequences from position 0) -> global rows [b, s, (N-1) K] int64."""
    N, K = cfg.engram_max_ngram_size, cfg.engram_n_heads
    sizes = table_sizes(cfg)
    first = [sum(sizes[:t]) for t in range(len(sizes))]
    m = layer_multipliers(layer_id, N)
    pad = int(cmap[cfg.engram_pad_token_id])
    b, s = np.shape(ids)
    out = np.zeros((b, s, len(sizes)), np.int64)
    for r in range(b):
        c = [int(cmap[int(i)]) for i in ids[r]]
        for t in range(s):
            for n in range(2, N + 1):
                mix = 0
                for j in range(n):
                    mix ^= ((c[t - j] if t - j >= 0 else pad) * m[j]) % M64
                for k in range(K):
                    tab = (n - 2) * K + k
                    out[r, t, tab] = first[tab] + mix % sizes[tab]
    return out


def read_table(path: str, cfg) -> np.ndarray:
    """The stacked table file -> values [rows, head_dim] in real()."""
    hd = cfg.engram_head_dim
    nsc = -(-hd // 128)
    raw = np.fromfile(path, np.uint8).reshape(-1, hd + nsc)
    vals = raw[:, :hd].view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    scale = np.exp2(raw[:, hd:].astype(np.float64) - 127.0)
    return (vals * np.repeat(scale, 128, 1)[:, :hd]).astype(real())


def attach(W: dict, cfg, folder: str, cmap) -> dict:
    """Add the Engram tables of a checkpoint folder and the compressed-id map to W."""
    W["__engram__"] = {"cmap": np.asarray(cmap), "tables": {
        i: read_table(os.path.join(folder, f"engram.layers.{i}.table.bin"), cfg) for i in cfg.engram_layer_ids}}
    return W


def embeddings(cfg, W, layer_id: int, ids) -> np.ndarray:
    """ids [b, s] -> e [b, s, (N-1) K head_dim]."""
    data = W["__engram__"]
    rows = hash_rows(cfg, layer_id, data["cmap"], ids)
    e = data["tables"][layer_id][rows]                                  # [b, s, T, hd]
    return e.reshape(e.shape[:2] + (-1,))


def gate_and_value(cfg, W, p: str, X, e):
    """X [b, s, hc, d], e [b, s, E] -> (gates a [b, s, hc], v [b, s, d])."""
    hc, d = cfg.hc_mult, cfg.dim
    wk = W[p + "key_proj.weight"].reshape(hc, d, -1)
    a = np.zeros(X.shape[:3], real())
    for i in range(hc):
        key = rms_norm(e @ wk[i].T, W[p + "key_norm.weight"][i], cfg.norm_eps)
        query = rms_norm(X[:, :, i], W[p + "query_norm.weight"][i], cfg.norm_eps)
        z = (key * query).sum(-1) / np.sqrt(d)
        a[:, :, i] = sigmoid(np.sign(z) * np.sqrt(np.maximum(np.abs(z), 1e-6)))
    return a, e @ W[p + "value_proj.weight"].T


def engram_layer(cfg, W, layer_id: int, X, ids):
    """X [b, s, hc, d] of whole sequences ids [b, s] -> X + a_i v (each stream i)."""
    p = f"layers.{layer_id}.engram."
    a, v = gate_and_value(cfg, W, p, X, embeddings(cfg, W, layer_id, ids))
    return X + a[..., None] * v[:, :, None, :]
