"""Graph capture: the model's prefill/decode cells with per-layer outputs, exported to MindIR.

The graph cells are the model's own ExtendNet / DecodeNet with each block's output stream H
added, so parity can name the first diverging layer (state inputs named by the state spec):
  extend(ids [1, S], row [1], start [1], count [1], *state[B]) -> logits [1, vocab], H [1, S, n, d],
                                                                  *state, *H_layer[L] ([1, S, n, d])
  decode(ids [B, 1], positions [B], *state[B])                 -> logits [B, vocab], *state,
                                                                  *H_layer[L] ([B, 1, n, d])
The leading outputs are exactly ExtendNet's / DecodeNet's (checked in tests).
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


@dataclass(frozen=True)
class Bucket:
    batch: int
    seq: int

    @property
    def name(self) -> str:
        return f"{self.batch}x{self.seq}"


GRAPHS = ("extend", "decode")


def state_names(transformer) -> List[str]:
    """Graph names of the flat decode state: 'state.' + the spec's slot name."""
    return ["state." + name for name in transformer.state_spec().names]


def io_names(transformer, graph: str) -> Tuple[List[str], List[str]]:
    """(input names, output names) of the extend or decode graph."""
    st = state_names(transformer)
    nxt = ["next_" + n for n in st]
    hidden = [f"hidden.layers.{i}" for i in range(len(transformer.layers))]
    if graph == "extend":
        return ["ids", "row", "start", "count"] + st, ["logits", "H"] + nxt + hidden
    return ["ids", "positions"] + st, ["logits"] + nxt + hidden


def example_inputs(transformer, graph: str, bucket: Bucket) -> List[Tensor]:
    """Inputs with the bucket's static shapes: the state of `bucket.batch` rows; extend takes
    `bucket.seq` tokens of one row, decode one token per row."""
    st = [Tensor(a) for a in transformer.initial_state(bucket.batch)]
    i32 = lambda v: Tensor(np.array(v, np.int32))   # noqa: E731
    if graph == "extend":
        return [i32(np.zeros((1, bucket.seq))), i32([0]), i32([0]), i32([bucket.seq])] + st
    return [i32(np.zeros((bucket.batch, 1))), i32(np.full(bucket.batch, bucket.seq))] + st


def graph_cell(transformer, graph: str) -> nn.Cell:
    from ascend_v4.model import DecodeNet, ExtendNet
    if graph == "extend":
        return ExtendNet(transformer, layer_outputs=True)
    return DecodeNet(transformer, layer_outputs=True)


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
