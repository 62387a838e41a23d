"""Tensor and expert parallelism over msrun ranks: the layout (layout.py), the in-graph
collectives and MoE exchange (comm.py), sharded loading (shard.py) and the lockstep driver that
lets rank 0 run the engine while every rank steps the same batch (lockstep.py)."""
from ascend_v4.parallel.layout import SINGLE, ParallelLayout, layout_for, read_parallel_config

__all__ = ["SINGLE", "ParallelLayout", "layout_for", "read_parallel_config"]
