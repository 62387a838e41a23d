"""Python API: `load(path_or_preset) -> Model`; `model(ids, start_pos)` like the reference."""
from __future__ import annotations

import os
import tempfile
import time
from typing import List, Optional, Sequence

import numpy as np

from ascend_v4.config import ConfigError, ModelConfig, load_config

# Presets above this many parameters are not materialised with random weights on a CPU.
MAX_RANDOM_PARAMS = 2_000_000_000


class InputError(ValueError):
    """Bad token ids, positions or batch shapes passed to the model."""


def _set_graph_mode() -> None:
    """GRAPH_MODE (15-30x faster than PyNative here) with the light O0 pass pipeline.

    MindSpore's on-disk compile cache is deliberately not used: measured here, it served a graph
    compiled for another prompt length (a Reshape size error), so every process compiles afresh.
    """
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})


class Model:
    """A loaded DeepSeek-V4 model with its decode state.

    `model(ids, 0)` prefills ids [b, s]; `model(ids[:, -1:], s)` decodes one token at position s.
    Both return the logits of the last position as float32 numpy [b, vocab].
    """

    def __init__(self, cfg: ModelConfig, transformer, weight_format: str):
        from ascend_v4.model import DecodeNet, MtpNet, PrefillNet
        self.cfg = cfg
        self.weight_format = weight_format
        self.transformer = transformer
        self._prefill = PrefillNet(transformer)
        self._decode = DecodeNet(transformer)
        self._mtp = MtpNet(transformer)
        self.state = None        # tuple of MindSpore tensors (decode state)
        self.hidden = None       # H [b, s, n, d] of the last prefill
        self.next_pos = 0
        self.batch = 0

    # ---- validation --------------------------------------------------------------------
    def _check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"input_ids must be integers of shape [batch, seq], got {ids.dtype} {ids.shape}")
        if ids.min() < 0 or ids.max() >= self.cfg.vocab_size:
            raise InputError(f"token id out of range [0, {self.cfg.vocab_size}): "
                             f"min {ids.min()}, max {ids.max()}")
        if ids.shape[0] > self.cfg.max_batch_size:
            raise InputError(f"batch {ids.shape[0]} exceeds max_batch_size {self.cfg.max_batch_size}")
        return ids.astype(np.int32)

    # ---- forward -----------------------------------------------------------------------
    def __call__(self, input_ids, start_pos: int = 0) -> np.ndarray:
        from mindspore import Tensor
        ids = self._check_ids(input_ids)
        b, s = ids.shape
        if start_pos == 0:
            if s > self.cfg.max_seq_len:
                raise InputError(f"prompt of {s} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
            out = self._prefill(Tensor(ids))
            self.hidden, self.state = out[1], tuple(out[2:])
            self.batch, self.next_pos = b, s
            return out[0].asnumpy()
        if self.state is None:
            raise InputError("decode (start_pos > 0) before any prefill (start_pos = 0)")
        if s != 1:
            raise InputError(f"decode takes one token per sequence, got seq length {s}")
        if b != self.batch:
            raise InputError(f"decode batch {b} differs from the prefill batch {self.batch}")
        if start_pos != self.next_pos:
            raise InputError(f"start_pos {start_pos} does not continue the sequence (next is {self.next_pos})")
        if start_pos >= self.cfg.max_seq_len:
            raise InputError(f"position {start_pos} reaches max_seq_len {self.cfg.max_seq_len}")
        out = self._decode(Tensor(ids), Tensor(np.int32(start_pos)), *self.state)
        self.state = tuple(out[1:])
        self.next_pos += 1
        return out[0].asnumpy()

    def mtp_logits(self, input_ids, next_ids) -> np.ndarray:
        """MTP head: prefill `input_ids`, then predict from (H, next_ids) -> [b, vocab].

        next_ids[:, t] is the token after input_ids[:, t] (the MTP block's embedding input).
        """
        from mindspore import Tensor
        ids = self._check_ids(input_ids)
        nxt = self._check_ids(next_ids)
        if nxt.shape != ids.shape:
            raise InputError(f"next_ids shape {nxt.shape} differs from input_ids shape {ids.shape}")
        self(ids, 0)
        return self._mtp(self.hidden, Tensor(nxt)).asnumpy()

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                 temperature: float = 0.0, seed: Optional[int] = None, progress=None) -> List[List[int]]:
        """Greedy (temperature 0) or sampled decoding; prompts of equal length -> new ids."""
        ids = self._check_ids(prompt_ids)
        if max_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 0")
        if temperature < 0:
            raise InputError("temperature must be >= 0")
        if ids.shape[1] + max_new_tokens > self.cfg.max_seq_len:
            raise InputError(f"prompt {ids.shape[1]} + {max_new_tokens} new tokens exceed max_seq_len "
                             f"{self.cfg.max_seq_len}")
        rng = np.random.default_rng(seed)
        out: List[List[int]] = [[] for _ in range(ids.shape[0])]
        self.timings = {"prefill_s": 0.0, "decode_s": [], "prompt_tokens": int(ids.size)}
        pos = 0
        step_ids = ids
        for step in range(max_new_tokens):
            t0 = time.perf_counter()
            logits = self(step_ids, pos)
            dt = time.perf_counter() - t0
            if step == 0:
                self.timings["prefill_s"] = dt
            else:
                self.timings["decode_s"].append(dt)
            pos += step_ids.shape[1]
            nxt = sample(logits, temperature, rng)
            for row, tok in zip(out, nxt):
                row.append(int(tok))
            step_ids = nxt.reshape(-1, 1).astype(np.int32)
            if progress is not None:
                progress(1)
        return out


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(-1)
    z = logits / temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p])


def build_model(checkpoint) -> Model:
    """Create the cells for `checkpoint.config` and stream its weights into them."""
    from mindspore import Tensor
    from ascend_v4.model import Transformer
    from ascend_v4.precision import np_dtype
    _set_graph_mode()
    cfg = checkpoint.config
    transformer = Transformer(cfg)
    table = transformer.checkpoint_parameters()
    stacked = {}
    seen = set()
    from tqdm import tqdm
    tensors = tqdm(checkpoint.iter_dequantized(), total=len(checkpoint.formats), desc="load",
                   unit="tensor", disable=None, leave=False)
    for name, array in tensors:
        if name not in table:
            continue  # the loader has already validated names against the schema
        param, slot = table[name]
        seen.add(name)
        if slot < 0:
            kind = np.int32 if array.dtype.kind in "iu" else np_dtype(cfg)
            param.set_data(Tensor(np.ascontiguousarray(array, dtype=kind)))
        else:
            buf = stacked.setdefault(id(param), (param, np.zeros(param.shape, np_dtype(cfg))))[1]
            buf[slot] = array
    missing = sorted(set(table) - seen)
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    for param, buf in stacked.values():
        param.set_data(Tensor(buf))
    return Model(cfg, transformer, checkpoint.weight_format)


def load(path_or_preset: str = "tiny", weight_format: Optional[str] = None, seed: int = 0,
         **overrides) -> Model:
    """Load a checkpoint folder, or a preset with generated random weights (tiny configs only)."""
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.params import count_params
    if os.path.isdir(path_or_preset):
        return build_model(open_checkpoint(path_or_preset, overrides=overrides))
    cfg = load_config(path_or_preset, **overrides)
    fmt = weight_format or cfg.dtype
    total = count_params(cfg)["total"]
    if total > MAX_RANDOM_PARAMS:
        raise ConfigError(f"{path_or_preset!r} has {total / 1e9:.0f}B parameters: too large to generate "
                          "random weights on this machine; pass a checkpoint folder instead")
    with tempfile.TemporaryDirectory(prefix="ascend_v4_") as tmp:
        path = write_random_checkpoint(cfg, os.path.join(tmp, "ckpt"), weight_format=fmt, seed=seed)
        return build_model(open_checkpoint(path))
