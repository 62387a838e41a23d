"""Graph capture: the model's prefill/decode cells with per-layer outputs, exported to MindIR.

The graph cells run the model's own pieces (`Transformer.widen`, `Block.prefill/decode`,
`Transformer.logits`) in the same order as `Transformer.prefill/decode`, and additionally
return each block's output stream H so parity can name the first diverging layer:
  prefill(ids [b, s])             -> logits [b, vocab], H [b, s, n, d], *state, *H_layer[L]
  decode(ids [b, 1], pos, *state) -> logits [b, vocab], *state, *H_layer[L] ([b, 1, n, d])
The leading outputs are exactly PrefillNet's / DecodeNet's (checked in tests).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, List, Tuple

import numpy as np
from mindspore import Tensor, nn, ops

MARK_ATTR = "ascend_v4_boundary"
# (attribute of the parent cell, boundary cell class name) -> custom operator name
BOUNDARIES = {"SinkhornSplit": "sinkhorn_mhc", "SinkAttention": "sparse_attention",
              "RoutedExperts": "moe_dispatch_combine"}


def _marker(op: str, k: int, role: str):
    prim = ops.Identity()
    prim.add_prim_attr(MARK_ATTR, f"{op}:{k}:{role}")
    return prim


class Marked(nn.Cell):
    """Runs `inner` with an Identity marker on every input and output.

    The markers carry the attribute `ascend_v4_boundary = "<op>:<instance>:in|out"` into the
    MindIR file, which delimits the operator boundary exactly (MindIR node scopes do not: shared
    helper functions are parsed once and keep the first caller's scope).
    """

    def __init__(self, inner: nn.Cell, op: str, k: int):
        super().__init__()
        self.inner = inner
        self.mark_in = _marker(op, k, "in")
        self.mark_out = _marker(op, k, "out")

    def construct(self, *args):
        marked = ()
        for a in args:
            marked = marked + (self.mark_in(a),)
        out = self.inner(*marked)
        if isinstance(out, tuple):
            res = ()
            for o in out:
                res = res + (self.mark_out(o),)
            return res
        return self.mark_out(out)


def _boundary_slots(transformer) -> List[Tuple[nn.Cell, str, nn.Cell]]:
    """(parent cell, attribute name, boundary cell) in model order (main layers only)."""
    slots = []
    for layer in transformer.layers:
        slots.append((layer.hc_attn, "sinkhorn", layer.hc_attn.sinkhorn))
        slots.append((layer.attn, "core", layer.attn.core))
        slots.append((layer.hc_ffn, "sinkhorn", layer.hc_ffn.sinkhorn))
        slots.append((layer.ffn, "experts", layer.ffn.experts))
    return slots


@contextlib.contextmanager
def boundary_markers(transformer) -> Iterator[None]:
    """Temporarily wrap every boundary cell of `transformer` in a Marked cell."""
    slots = _boundary_slots(transformer)
    counters = {}
    try:
        for parent, attr, cell in slots:
            op = BOUNDARIES[type(cell).__name__]
            k = counters.get(op, 0)
            counters[op] = k + 1
            setattr(parent, attr, Marked(cell, op, k))
        yield
    finally:
        for parent, attr, cell in slots:
            setattr(parent, attr, cell)


class LayerwisePrefillNet(nn.Cell):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def construct(self, ids):
        logits, H, states, hidden = self.model.prefill(ids)
        return (logits, H) + states + hidden


class LayerwiseDecodeNet(nn.Cell):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def construct(self, ids, pos, *states):
        logits, new_states, hidden = self.model.decode(ids, pos, states)
        return (logits,) + new_states + hidden


@dataclass(frozen=True)
class Bucket:
    batch: int
    seq: int

    @property
    def name(self) -> str:
        return f"{self.batch}x{self.seq}"


def state_names(transformer) -> List[str]:
    """Names of the flat decode state, e.g. 'state.layers.1.compressor.kv_state'."""
    names = []
    for i, layer in enumerate(transformer.layers):
        attn = layer.attn
        names.append(f"state.layers.{i}.window")
        if attn.ratio:
            names += [f"state.layers.{i}.compressor.{k}" for k in ("kv_state", "score_state", "cache")]
        if attn.indexer is not None:
            names += [f"state.layers.{i}.indexer.{k}" for k in ("kv_state", "score_state", "cache")]
    return names


def io_names(transformer, graph: str) -> Tuple[List[str], List[str]]:
    """(input names, output names) of the prefill or decode graph."""
    st = state_names(transformer)
    nxt = ["next_" + n for n in st]
    hidden = [f"hidden.layers.{i}" for i in range(len(transformer.layers))]
    if graph == "prefill":
        return ["ids"], ["logits", "H"] + nxt + hidden
    return ["ids", "pos"] + st, ["logits"] + nxt + hidden


def example_inputs(transformer, graph: str, bucket: Bucket) -> List[Tensor]:
    """Zero inputs with the bucket's static shapes (ids int32, pos int32 scalar, state arrays)."""
    if graph == "prefill":
        return [Tensor(np.zeros((bucket.batch, bucket.seq), np.int32))]
    st = [Tensor(a) for a in transformer.initial_state(bucket.batch)]
    return [Tensor(np.zeros((bucket.batch, 1), np.int32)), Tensor(np.int32(bucket.seq))] + st


def graph_cell(transformer, graph: str) -> nn.Cell:
    return LayerwisePrefillNet(transformer) if graph == "prefill" else LayerwiseDecodeNet(transformer)


def export_mindir(transformer, graph: str, bucket: Bucket, path_stem: str) -> str:
    """Export one graph of one bucket (boundary markers on) to `<path_stem>.mindir`."""
    import mindspore as ms
    with boundary_markers(transformer):
        net = graph_cell(transformer, graph)
        ms.export(net, *example_inputs(transformer, graph, bucket), file_name=path_stem,
                  file_format="MINDIR")
    path = path_stem + ".mindir"
    if not os.path.exists(path):
        raise RuntimeError(f"MindSpore did not write {path}")
    os.chmod(path, 0o644)
    return path
