"""The DeepSeek-V4 transformer as MindSpore cells, and its compiled prefill/decode graphs.

Transformer holds the weights; `Transformer.extend` is the one forward: n new tokens per row at
per-row positions, on the full-batch decode state. Thin graph cells run it in GRAPH_MODE:
  ExtendNet(ids [1, n], row [1], start [1], count [1], *state) -> (logits, H [1, n, hc, d], *state)
      one sequence: prefill (from 0, chunk by chunk, n a shape bucket), MTP verification
  DecodeNet(ids [B, 1], positions [B], *state)                 -> (logits [B, vocab], *state)
      one token for every row at its own position; -1 = idle row
  StepNet(ids [B, n], start [B], count [B], *state)   -> (logits [B, n, vocab], H [B, n, hc, d], *state)
      n tokens for every row at its own position (count 0 = idle): MTP verification of a batch
  MtpNet(H [b, s, hc, d], ids [b, s])                          -> MTP logits [b, vocab]
The state is a flat tuple ordered and named by `Transformer.state_spec()` (ascend_v4/state.py).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import mindspore as ms
from mindspore import mint, nn, ops

from ascend_v4.attention import Attention, window_geometry
from ascend_v4.block import Block, MTPBlock
from ascend_v4.compressor import gather_rows
from ascend_v4.config import ModelConfig
from ascend_v4.kernels import fused_window_geometry
from ascend_v4.linear import Linear, storage_kind
from ascend_v4.mhc import HcHead, HyperConnection
from ascend_v4.numerics import RMSNorm
from ascend_v4.parallel.comm import GroupGather, GroupSum
from ascend_v4.runtime import RuntimeConfig
from ascend_v4.precision import np_dtype
from ascend_v4.engram_layer import history_update
from ascend_v4.state import DENSE, StateSlot, StateSpec
from ascend_v4.weights import SCALED, StoredWeight

ENGRAM_HISTORY = "engram.history"     # state slot: last N-1 token ids per row (Engram models)


class Transformer(nn.Cell):
    def __init__(self, cfg: ModelConfig, rt: RuntimeConfig):
        super().__init__()
        self.cfg, self.runtime = cfg, rt
        self.hc_mult, self.window = cfg.hc_mult, cfg.window_size
        dt = np_dtype(rt)
        par = rt.parallel                 # tensor parallel: embed and head rows split by vocabulary
        vocab = cfg.vocab_size // par.tp
        self.embed = StoredWeight((vocab, cfg.dim), storage_kind("bf16", rt), dt, row_lookup=True)
        self.layers = nn.CellList([Block(cfg, rt, i) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, dt, rt.kernels)
        self.head = Linear(cfg.dim, vocab, "bf16", rt)
        self.vocab_parallel = VocabParallel(vocab, par) if par.tp > 1 else None
        self.hc_head = HcHead(cfg, rt, "hc_head")
        self.mtp = nn.CellList([MTPBlock(cfg, rt, cfg.n_layers + i) for i in range(cfg.n_mtp_layers)])
        self.engram_state = cfg.has_engram
        self.fused_geometry = fused_window_geometry(rt.kernels, self.window)

    # ---- pieces shared by the graphs ---------------------------------------------------------
    def widen(self, ids):
        """ids [b, s] -> H [b, s, n, d] (embedding repeated over the n streams)."""
        h = self.embed_rows(ids)
        return ops.tile(h.expand_dims(2), (1, 1, self.hc_mult, 1))

    def embed_rows(self, ids):
        """ids [...] -> embeddings [..., d] (TP: each rank looks up its vocabulary range)."""
        if self.vocab_parallel is None:
            return self.embed.rows(ids)
        return self.vocab_parallel.embed(self.embed, ids)

    def vocab_logits(self, y):
        """y [..., d] -> logits [..., vocab] (TP: each rank's vocabulary range, gathered)."""
        if self.vocab_parallel is None:
            return self.head(y)
        return self.vocab_parallel.gather(self.head(y))

    def logits(self, H, count=None, all_logits: bool = False):
        """H [b, n, hc, d] -> logits of each row's last real token [b, vocab] (count [b]; None: the
        last position), or of every position [b, n, vocab] with all_logits."""
        y = self.norm(self.hc_head(H))                                       # [b, n, d]
        if all_logits:
            return self.vocab_logits(y)
        if count is None:
            return self.vocab_logits(y[:, -1])
        b = y.shape[0]
        last = ops.clamp(count.reshape(b, 1) - 1, 0, y.shape[1] - 1)
        return self.vocab_logits(gather_rows(y, last)[:, 0])

    def extend(self, ids, rows, start, count, states, all_logits: bool = False, engram_rows=None):
        """Append tokens ids [b, n] to the sequences in batch rows `rows` [b] (start [b]: position
        of ids[:, 0]; count [b]: real tokens per row, 0 = idle). `states` is the state of those b
        rows (see row_view) in state_spec() order. engram_rows [b, n, L, T * head_dim]: e_t of every
        token and Engram layer (Engram models only; ascend_v4/engram.py fetches them).
        -> (logits, H [b, n, hc, d], new states, per-block outputs H_k)."""
        H = self.widen(ids)
        new_states = ()
        hidden = ()
        offset = 0
        k = 0
        if self.fused_geometry is not None:                                     # one for all layers
            geometry = self.fused_geometry(start, count, ids)
        else:
            geometry = window_geometry(start, count, ids.shape[1], self.window)
        for layer in self.layers:
            n = layer.attn.n_state
            if layer.has_engram:
                H, state = layer.extend(H, ids, rows, start, count, states[offset:offset + n],
                                        engram_rows[:, :, k], geometry)
                k += 1
            else:
                H, state = layer.extend(H, ids, rows, start, count, states[offset:offset + n],
                                        geometry=geometry)
            new_states = new_states + state
            hidden = hidden + (H,)
            offset += n
        if self.engram_state:   # the n-gram history slot (the spec's last; RowView resets fresh rows)
            new_states = new_states + (history_update(states[offset], ids, count),)
        return self.logits(H, count, all_logits), H, new_states, hidden

    def mtp_logits(self, H, ids):
        """MTP block 0 on the main model's streams H and the next tokens ids -> [b, vocab]."""
        y = self.mtp[0].prefill_hidden(H, self.embed_rows(ids), ids)
        return self.vocab_logits(y[:, -1])

    # ---- state and checkpoint plumbing ---------------------------------------------------------
    @staticmethod
    def spec_for(cfg: ModelConfig, rt: RuntimeConfig) -> StateSpec:
        """The flat decode state of the main layers, e.g. 'layers.1.attn.compressor.kv' (from the
        configs alone: no cells are built, so it works for any model size)."""
        spec = StateSpec()
        for i in range(cfg.n_layers):
            spec.include(f"layers.{i}.attn.", Attention.spec_for(cfg, rt, i))
        if cfg.has_engram:        # the last N-1 token ids of each row (hashing the next tokens)
            spec.add(StateSlot(ENGRAM_HISTORY, (cfg.engram_max_ngram_size - 1,), np.int32,
                               float(cfg.engram_pad_token_id)))
        return spec

    def state_spec(self) -> StateSpec:
        return Transformer.spec_for(self.cfg, self.runtime)

    def initial_state(self, batch: int) -> List[np.ndarray]:
        return self.state_spec().initial(batch)

    def checkpoint_weights(self) -> Dict[str, Tuple[object, int]]:
        """Checkpoint weight name (no `.scale` names) -> (cell or parameter, expert slot or -1),
        derived from the cell tree: attribute paths are the checkpoint keys, except that a
        stacked expert weight `ffn.experts.w1` holds `ffn.experts.{e}.w1` and the mHC cells'
        `hc_attn.fn` is stored as `hc_attn_fn`."""
        table: Dict[str, Tuple[object, int]] = {}
        for path, cell in self.cells_and_names():
            if isinstance(cell, StoredWeight):
                if cell.lead:                                  # [E, out, in] routed experts
                    stem, leaf = path.rsplit(".", 1)
                    for e in range(cell.lead[0]):              # EP: this rank's experts only
                        table[f"{stem}.{cell.expert_ids[e]}.{leaf}.weight"] = (cell, e)
                else:
                    table[f"{path}.weight"] = (cell, -1)
                own = [(n, p) for n, p in cell.parameters_and_names(expand=False) if n not in ("weight", "scale")]
            else:
                own = list(cell.parameters_and_names(expand=False))
            joint = "_" if isinstance(cell, (HyperConnection, HcHead)) else "."
            for name, param in own:
                table[f"{path}{joint}{name}" if path else name] = (param, -1)
        return table

    def checkpoint_parameters(self) -> Dict[str, Tuple[ms.Parameter, int]]:
        """Checkpoint tensor name (scales included) -> (parameter, expert slot or -1)."""
        table: Dict[str, Tuple[ms.Parameter, int]] = {}
        for name, (target, slot) in self.checkpoint_weights().items():
            if isinstance(target, StoredWeight):
                table[name] = (target.weight, slot)
                if target.kind in SCALED:
                    table[name[: -len(".weight")] + ".scale"] = (target.scale, slot)
            else:
                table[name] = (target, slot)
        return table


class VocabParallel(nn.Cell):
    """Embedding and head split by vocabulary over the TP group (rank t holds ids [t V/tp, (t+1) V/tp))."""

    def __init__(self, vocab_per_rank: int, par):
        super().__init__()
        self.n, self.tp = vocab_per_rank, par.tp
        self.first = par.tp_index * vocab_per_rank
        self.sum = GroupSum(par.tp_members(), par.world)
        self.gather_group = GroupGather(par.tp_members(), par.world)

    def embed(self, table: StoredWeight, ids):
        """Rows of the ids this rank holds, zeros for the others, summed over the group (exact:
        one rank contributes each row)."""
        local = ids - self.first
        mine = ops.logical_and(local >= 0, local < self.n)
        rows = table.rows(ops.clamp(local, 0, self.n - 1))
        return self.sum(rows * mine.expand_dims(-1).astype(rows.dtype))

    def gather(self, logits):
        """logits [..., V/tp] of this rank's range -> [..., V]."""
        parts = self.gather_group(logits)
        return ops.concat([parts[i] for i in range(self.tp)], -1)


def split_engram(engram: bool, inputs):
    """The graph inputs after the fixed ones: (engram_rows [b, n, L, T * head_dim], *state) when
    the model has Engram, else (*state) -> (engram_rows or None, state tuple)."""
    if engram:
        return inputs[0], inputs[1:]
    return None, inputs


class RowView(nn.Cell):
    """Reads and writes the rows of one sequence in the full-batch state, slot by slot from the
    spec: dense slots are gathered / merged by row; page pools are shared and pass through (the
    attention addresses them by row). A row extended from position 0 starts from the initial
    values, so a refilled slot carries nothing of its previous sequence."""

    def __init__(self, spec: StateSpec):
        super().__init__()
        self.dense = tuple(slot.layout == DENSE for slot in spec)
        self.fill = tuple(float(slot.fill) for slot in spec)

    def read(self, states, row, start):
        """row, start: int32 [B] (distinct rows) -> the rows' state ([B, ...] for dense slots; a
        row starting at position 0 reads the initial values)."""
        out = ()
        for s, is_dense, fill in zip(states, self.dense, self.fill):
            if is_dense:
                r = ops.gather(s, row, 0)
                fresh = (start == 0).reshape(start.shape + (1,) * (r.ndim - 1))
                out = out + (mint.where(fresh, ops.full(r.shape, fill, dtype=r.dtype), r),)
            else:
                out = out + (s,)
        return out

    def write(self, states, new_rows, row):
        """The rows' new state [B, ...] back into the full-batch slots, one scatter of the B rows
        per dense slot (page pools: as returned)."""
        out = ()
        for s, new, is_dense in zip(states, new_rows, self.dense):
            out = out + ((ops.tensor_scatter_update(s, row.reshape(-1, 1), new) if is_dense else new),)
        return out


class ExtendNet(nn.Cell):
    """B sequences (distinct batch rows `row` [B]; one for the engine) extended by ids [B, n] from
    positions start [B], count [B] real tokens (the rest is bucket padding) -> (logits [B, vocab]
    (all_logits: [B, n, vocab]), H [B, n, hc, d], *state[, *H_layer]); layer_outputs adds each
    block's output stream."""

    def __init__(self, model: Transformer, all_logits: bool = False, layer_outputs: bool = False):
        super().__init__()
        self.model = model
        self.all_logits, self.layer_outputs = all_logits, layer_outputs
        self.view = RowView(model.state_spec())
        self.engram = model.engram_state

    def construct(self, ids, row, start, count, *inputs):
        engram_rows, states = split_engram(self.engram, inputs)
        rows = self.view.read(states, row, start)
        logits, H, new_rows, hidden = self.model.extend(ids, row, start, count, rows, self.all_logits,
                                                        engram_rows)
        out = (logits, H) + self.view.write(states, new_rows, row)
        if self.layer_outputs:
            return out + hidden
        return out


class DecodeNet(nn.Cell):
    """One token per batch row: ids [B, 1] at positions [B] (-1: idle row, state unchanged)
    -> (logits [B, vocab], *state[, *H_layer])."""

    def __init__(self, model: Transformer, layer_outputs: bool = False):
        super().__init__()
        self.model = model
        self.layer_outputs = layer_outputs
        self.engram = model.engram_state

    def construct(self, ids, positions, *inputs):
        engram_rows, states = split_engram(self.engram, inputs)
        b = ids.shape[0]
        start = ops.maximum(positions, 0)
        count = (positions >= 0).astype(ms.int32)
        logits, _, new_states, hidden = self.model.extend(ids, ops.arange(b, dtype=ms.int32), start, count,
                                                          states, False, engram_rows)
        if self.layer_outputs:
            return (logits,) + new_states + hidden
        return (logits,) + new_states


class StepNet(nn.Cell):
    """Up to n tokens for every batch row: ids [B, n] from positions start [B], count [B] real
    tokens per row (0: idle row, state unchanged) -> (logits [B, n, vocab], H [B, n, hc, d], *state)."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model
        self.engram = model.engram_state

    def construct(self, ids, start, count, *inputs):
        engram_rows, states = split_engram(self.engram, inputs)
        b = ids.shape[0]
        logits, H, new_states, _ = self.model.extend(ids, ops.arange(b, dtype=ms.int32), start, count, states,
                                                     True, engram_rows)
        return (logits, H) + new_states


class MtpNet(nn.Cell):
    def __init__(self, model: Transformer):
        super().__init__()
        self.model = model

    def construct(self, H, ids):
        return self.model.mtp_logits(H, ids)
