"""Collectives inside the compiled graphs, built on the one that works everywhere.

On CPU (`mccl`) AllGather runs in GRAPH_MODE for every dtype, float64 included, while AllReduce
rejects float64 and AlltoAll / ReduceScatter have no kernels (measured, ../shared/DESIGN.md). So
every collective here is a world AllGather followed by a local selection of the group's members:
  GroupGather(members)   x [...] -> [len(members), ...]  (member order)
  GroupSum(members)      x [...] -> sum over the members, added in member order, so every rank
                         gets bit-identical results (an exact, deterministic all-reduce)
  AllToAll(members)      send [g, ...] (send[j] goes to member j) -> recv [g, ...] (recv[i] came
                         from member i): the MoE dispatch / combine exchange
On Ascend the same three are HCCL AllGather, AllReduce and AlltoAllV on the group's communicator
(`mindspore.communication.create_group`); the world gather moves world/group times the bytes,
which is why it is the CPU functional twin only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops


def float32_parts(x):
    """float64 x -> [3, ...] float32 with x == (p0 + p1) + p2 exactly in float64 (each part holds
    the next 24 significant bits; exact for finite |x| in float32's normal range)."""
    hi = x.astype(ms.float32)
    r1 = x - hi.astype(ms.float64)
    mid = r1.astype(ms.float32)
    lo = (r1 - mid.astype(ms.float64)).astype(ms.float32)
    return ops.stack((hi, mid, lo), 0)


def from_float32_parts(parts):
    """[g, 3, ...] gathered parts (axis 1: the three parts of float32_parts) -> [g, ...] float64."""
    p = parts.astype(ms.float64)
    return (p[:, 0] + p[:, 1]) + p[:, 2]


class GroupGather(nn.Cell):
    """x [...] -> [len(members), ...]. mccl's AllGather carries float64 through float32 (measured:
    1/3 arrives as 0.33333334), so float64 travels as three exact float32 parts."""

    def __init__(self, members: Sequence[int], world: int):
        super().__init__()
        self.world = world
        self.gather_all = ops.AllGather()
        self.members = Tensor(np.asarray(members, np.int32))

    def construct(self, x):
        if x.dtype == ms.float64:
            g = self.gather_all(float32_parts(x).expand_dims(0))              # [world, 3, ...]
            return from_float32_parts(ops.gather(g, self.members, 0))
        g = self.gather_all(x.expand_dims(0))                 # [world, ...] (AllGather concatenates dim 0)
        return ops.gather(g, self.members, 0)


class GroupSum(nn.Cell):
    def __init__(self, members: Sequence[int], world: int):
        super().__init__()
        self.gather = GroupGather(members, world)
        self.n = len(members)

    def construct(self, x):
        parts = self.gather(x)
        total = parts[0]
        for i in range(1, self.n):
            total = total + parts[i]
        return total


class AllToAll(nn.Cell):
    def __init__(self, members: Sequence[int], world: int, me: int):
        super().__init__()
        self.gather = GroupGather(members, world)
        self.me = me                                           # this rank's index among the members

    def construct(self, send):
        every = self.gather(send)                              # [g (source), g (destination), ...]
        return every[:, self.me]


_JOINED = False


def init_collectives() -> None:
    """Join the msrun job (idempotent): mccl on CPU, HCCL on Ascend."""
    from mindspore.communication import init
    global _JOINED
    if not _JOINED:
        init()
        _JOINED = True


def broadcast_bytes(payload: bytes = b"") -> bytes:
    """Rank 0's payload on every rank of the world (eager collectives, outside any graph)."""
    import mindspore.mint.distributed as dist
    from mindspore.communication import GlobalComm, get_rank
    group = GlobalComm.WORLD_COMM_GROUP
    size = Tensor(np.array([len(payload)], np.int64))
    dist.broadcast(size, src=0, group=group)
    n = int(size.asnumpy()[0])
    data = Tensor(np.frombuffer(payload, np.uint8).copy() if get_rank() == 0 else np.zeros(n, np.uint8)) \
        if n else None
    if data is None:
        return b""
    dist.broadcast(data, src=0, group=group)
    return data.asnumpy().tobytes()
