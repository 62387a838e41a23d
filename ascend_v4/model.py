"""The DeepSeek-V4 transformer as MindSpore cells, and its compiled prefill/decode graphs.

Transformer holds the weights. Three thin graph cells run it in GRAPH_MODE:
  PrefillNet(ids [b, s])                    -> (logits [b, vocab], H [b, s, n, d], *state)
  DecodeNet(ids [b, 1], pos int32, *state)  -> (logits [b, vocab], *state)
  MtpNet(H [b, s, n, d], ids [b, s])        -> MTP logits [b, vocab] of the last position
The decode state is an explicit flat tuple of tensors (see attention.py for each layer's part),
so the same graphs export with cache inputs and outputs.
"""
from __future__ import annotations

import re
from typing import Dict, List, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ascend_v4.block import Block, MTPBlock
from ascend_v4.config import ModelConfig
from ascend_v4.linear import dense, zeros_param
from ascend_v4.mhc import HcHead
from ascend_v4.numerics import RMSNorm
from ascend_v4.precision import np_dtype


class Transformer(nn.Cell):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.hc_mult = cfg.hc_mult
        dt = np_dtype(cfg)
        self.embed = zeros_param((cfg.vocab_size, cfg.dim), "embed", dt)
        self.layers = nn.CellList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, dt)
        self.head = zeros_param((cfg.vocab_size, cfg.dim), "head", dt)
        self.hc_head = HcHead(cfg, "hc_head")
        self.mtp = nn.CellList([MTPBlock(cfg, cfg.n_layers + i) for i in range(cfg.n_mtp_layers)])

    # ---- pieces shared by the graphs ---------------------------------------------------------
    def widen(self, ids):
        """ids [b, s] -> H [b, s, n, d] (embedding repeated over the n streams)."""
        h = ops.gather(self.embed, ids, 0)
        return ops.tile(h.expand_dims(2), (1, 1, self.hc_mult, 1))

    def logits(self, H):
        """H [b, s, n, d] -> logits of the last position [b, vocab]."""
        y = self.norm(self.hc_head(H))
        return dense(y[:, -1], self.head)

    def prefill(self, ids):
        """ids [b, s] -> (logits [b, vocab], H, decode state, per-block outputs H_k)."""
        H = self.widen(ids)
        states = ()
        hidden = ()
        for layer in self.layers:
            H, state = layer.prefill(H, ids)
            states = states + state
            hidden = hidden + (H,)
        return self.logits(H), H, states, hidden

    def decode(self, ids, pos, states):
        """ids [b, 1], pos, state -> (logits [b, vocab], new state, per-block outputs H_k)."""
        H = self.widen(ids)
        new_states = ()
        hidden = ()
        offset = 0
        for layer in self.layers:
            n = layer.attn.n_state
            H, state = layer.decode(H, ids, pos, states[offset:offset + n])
            new_states = new_states + state
            hidden = hidden + (H,)
            offset += n
        return self.logits(H), new_states, hidden

    def mtp_logits(self, H, ids):
        """MTP block 0 on the main model's streams H and the next tokens ids -> [b, vocab]."""
        y = self.mtp[0].prefill_hidden(H, ops.gather(self.embed, ids, 0), ids)
        return dense(y[:, -1], self.head)

    # ---- state and checkpoint plumbing ---------------------------------------------------------
    def initial_state(self, batch: int) -> List[np.ndarray]:
        return [a for layer in self.layers for a in layer.attn.initial_state(batch)]

    def checkpoint_parameters(self) -> Dict[str, Tuple[ms.Parameter, int]]:
        """Checkpoint name -> (parameter, expert slot or -1) for every weight."""
        table: Dict[str, Tuple[ms.Parameter, int]] = {
            "embed.weight": (self.embed, -1), "head.weight": (self.head, -1),
            "norm.weight": (self.norm.weight, -1),
        }
        table.update(_hc_names("hc_head", self.hc_head))
        for i, layer in enumerate(self.layers):
            table.update(_block_names(f"layers.{i}.", layer, self.cfg))
        for i, block in enumerate(self.mtp):
            prefix = f"mtp.{i}."
            table.update(_block_names(prefix, block, self.cfg))
            table.update(_hc_names(prefix + "hc_head", block.hc_head))
            for name in ("e_proj", "h_proj"):
                table[f"{prefix}{name}.weight"] = (getattr(block, name).weight, -1)
            for name in ("enorm", "hnorm", "norm"):
                table[f"{prefix}{name}.weight"] = (getattr(block, name).weight, -1)
        return table


def _hc_names(prefix: str, cell) -> Dict[str, Tuple[ms.Parameter, int]]:
    return {f"{prefix}_fn": (cell.fn, -1), f"{prefix}_base": (cell.base, -1),
            f"{prefix}_scale": (cell.scale, -1)}


def _compressor_names(prefix: str, comp) -> Dict[str, Tuple[ms.Parameter, int]]:
    return {prefix + "ape": (comp.ape, -1), prefix + "wkv.weight": (comp.wkv, -1),
            prefix + "wgate.weight": (comp.wgate, -1), prefix + "norm.weight": (comp.norm.weight, -1)}


def _block_names(prefix: str, block: Block, cfg: ModelConfig) -> Dict[str, Tuple[ms.Parameter, int]]:
    t: Dict[str, Tuple[ms.Parameter, int]] = {}
    t[prefix + "attn_norm.weight"] = (block.attn_norm.weight, -1)
    t[prefix + "ffn_norm.weight"] = (block.ffn_norm.weight, -1)
    t.update(_hc_names(prefix + "hc_attn", block.hc_attn))
    t.update(_hc_names(prefix + "hc_ffn", block.hc_ffn))
    attn = block.attn
    for name in ("wq_a", "q_norm", "wq_b", "wkv", "kv_norm", "wo_a", "wo_b"):
        t[f"{prefix}attn.{name}.weight"] = (getattr(attn, name).weight, -1)
    t[prefix + "attn.attn_sink"] = (attn.attn_sink, -1)
    if attn.compressor is not None:
        t.update(_compressor_names(prefix + "attn.compressor.", attn.compressor))
    if attn.indexer is not None:
        t[prefix + "attn.indexer.wq_b.weight"] = (attn.indexer.wq_b.weight, -1)
        t[prefix + "attn.indexer.weights_proj.weight"] = (attn.indexer.weights_proj.weight, -1)
        t.update(_compressor_names(prefix + "attn.indexer.compressor.", attn.indexer.compressor))
    ffn = block.ffn
    t[prefix + "ffn.gate.weight"] = (ffn.gate_weight, -1)
    if ffn.hash:
        t[prefix + "ffn.gate.tid2eid"] = (ffn.tid2eid, -1)
    else:
        t[prefix + "ffn.gate.bias"] = (ffn.gate_bias, -1)
    for e in range(cfg.n_routed_experts):
        for w in ("w1", "w2", "w3"):
            t[f"{prefix}ffn.experts.{e}.{w}.weight"] = (getattr(ffn.experts, w), e)
    for w in ("w1", "w2", "w3"):
        t[f"{prefix}ffn.shared_experts.{w}.weight"] = (getattr(ffn.shared, w).weight, -1)
    return t


class PrefillNet(nn.Cell):
    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def construct(self, ids):
        logits, H, states, _ = self.model.prefill(ids)
        return (logits, H) + states


class DecodeNet(nn.Cell):
    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def construct(self, ids, pos, *states):
        logits, new_states, _ = self.model.decode(ids, pos, states)
        return (logits,) + new_states


class MtpNet(nn.Cell):
    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def construct(self, H, ids):
        return self.model.mtp_logits(H, ids)
