"""The parallel layout of one rank: tensor parallel (TP) x expert parallel (EP) over msrun ranks.

Ranks form a grid of `ep` rows by `tp` columns, rank = ep_index * tp + tp_index (world = tp * ep):
  - a TP group (one grid row: ranks that share ep_index) splits attention heads (wq_b, wo_a, wo_b,
    attn_sink, the indexer's wq_b / weights_proj), the embedding and the head by the official rules
    (`checkpoint.schema.split_dim`); the other weights are replicated;
  - an EP group (one grid column: ranks that share tp_index) splits the routed experts by index:
    member j holds experts [j E/ep, (j+1) E/ep), or the experts `placement[j]` lists (the plan's
    expert placement, where hot experts have copies on several members).
Every rank of a group steps the same batch; ranks of different TP groups hold the same attention
weights and compute the same numbers (they differ in the experts they hold).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Tuple

from ascend_v4.config import ConfigError, ModelConfig


@dataclass(frozen=True)
class ParallelLayout:
    tp: int = 1
    ep: int = 1
    rank: int = 0
    placement: Optional[Tuple[Tuple[int, ...], ...]] = None   # expert ids per EP member (None: blocks)

    @property
    def world(self) -> int:
        return self.tp * self.ep

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def tp_index(self) -> int:
        return self.rank % self.tp

    @property
    def ep_index(self) -> int:
        return self.rank // self.tp

    def tp_members(self) -> Tuple[int, ...]:
        """World ranks of this rank's TP group, in TP order."""
        first = self.ep_index * self.tp
        return tuple(range(first, first + self.tp))

    def ep_members(self) -> Tuple[int, ...]:
        """World ranks of this rank's EP group, in EP order."""
        return tuple(j * self.tp + self.tp_index for j in range(self.ep))

    def expert_ids(self, n_experts: int, member: Optional[int] = None) -> Tuple[int, ...]:
        """Global ids of the experts EP member `member` (default: this rank's) holds, in slot order."""
        j = self.ep_index if member is None else member
        if self.placement is not None:
            return tuple(self.placement[j])
        per = n_experts // self.ep
        return tuple(range(j * per, (j + 1) * per))

    def validate(self, cfg: ModelConfig) -> None:
        """A clear error when the model cannot be split this way (names the setting)."""
        for name, value in (("tensor_parallel", self.tp), ("expert_parallel", self.ep)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.rank < self.world:
            raise ConfigError(f"rank {self.rank} is outside the {self.world} ranks of tp {self.tp} x ep {self.ep}")
        splits = {"n_routed_experts": (cfg.n_routed_experts, self.ep)}
        if self.tp > 1:
            splits.update({"n_heads": (cfg.n_heads, self.tp), "o_groups": (cfg.o_groups, self.tp),
                           "vocab_size": (cfg.vocab_size, self.tp)})
            if any(r == 4 for r in cfg.compress_ratios):
                splits["index_n_heads"] = (cfg.index_n_heads, self.tp)
        if self.placement is not None:
            splits.pop("n_routed_experts")
            self._check_placement(cfg.n_routed_experts)
        bad = [f"{key} {n} is not divisible by {parts}" for key, (n, parts) in splits.items() if n % parts]
        if bad:
            raise ConfigError(f"cannot split this model over tensor_parallel {self.tp} x expert_parallel "
                              f"{self.ep}: {'; '.join(bad)}")

    def _check_placement(self, n_experts: int) -> None:
        p = self.placement
        problem = None
        if len(p) != self.ep:
            problem = f"it lists {len(p)} ranks for expert_parallel {self.ep}"
        elif len({len(ids) for ids in p}) != 1:
            problem = f"ranks hold different numbers of experts {[len(ids) for ids in p]}"
        elif any(not 0 <= e < n_experts for ids in p for e in ids):
            problem = f"an expert id is outside 0..{n_experts - 1}"
        elif any(len(set(ids)) != len(ids) for ids in p):
            problem = "a rank holds the same expert twice"
        elif set(e for ids in p for e in ids) != set(range(n_experts)):
            problem = f"experts {sorted(set(range(n_experts)) - set(e for ids in p for e in ids))} have no rank"
        if problem:
            raise ConfigError(f"expert placement: {problem}")

    def describe(self) -> str:
        return f"rank {self.rank}/{self.world} (tp {self.tp_index}/{self.tp}, ep {self.ep_index}/{self.ep})"


SINGLE = ParallelLayout()


def launched_world() -> Tuple[int, int]:
    """(rank, world size) msrun gave this process (RANK_ID / RANK_SIZE), or (0, 1) when not launched."""
    try:
        return int(os.environ.get("RANK_ID", "0")), int(os.environ.get("RANK_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"RANK_ID / RANK_SIZE are not integers: {os.environ.get('RANK_ID')!r}, "
                          f"{os.environ.get('RANK_SIZE')!r}") from None


def layout_for(tp: int = 1, ep: int = 1, placement=None) -> ParallelLayout:
    """The layout of this process for tp x ep; the process must have been started by
    `ascend-v4 launch --nproc tp*ep` (msrun) when tp * ep > 1, and then joins the job first thing:
    msrun also runs the command as its scheduler (MS_ROLE=MS_SCHED), which becomes the scheduler
    inside init() and never returns from it, so nothing is loaded before init()."""
    if tp * ep > 1 and os.environ.get("MS_ROLE"):
        from ascend_v4.parallel.comm import init_collectives
        init_collectives()
    rank, world = launched_world()
    layout = ParallelLayout(tp=tp, ep=ep, rank=rank if tp * ep > 1 else 0,
                            placement=tuple(tuple(int(e) for e in ids) for ids in placement) if placement else None)
    if layout.world > 1 and world != layout.world:
        where = f"this process is one of {world}" if world > 1 else "this process was not started by msrun"
        raise ConfigError(f"tensor_parallel {tp} x expert_parallel {ep} needs {layout.world} ranks, but {where}: "
                          f"run it under `ascend-v4 launch --nproc {layout.world} -- ...`")
    return layout


def read_parallel_config(path: str) -> Tuple[int, int, Optional[tuple]]:
    """(tp, ep, expert placement or None) from the plan's parallel_<role>_<i>.json: attention_tp x
    (expert_parallel / attention_tp) must equal the ranks of the instance (mindspore.device_num);
    `expert_placement` (expert ids per EP rank, with the plan's redundant copies) is used as is."""
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("ascend_v4", {}), dict) \
            or not isinstance(cfg.get("mindspore", {}), dict):
        raise ConfigError(f"{path}: expected an object with 'ascend_v4' and 'mindspore' sections")
    layout = cfg.get("ascend_v4", {})
    ranks = _positive(path, "mindspore.device_num", cfg.get("mindspore", {}).get("device_num", 1))
    tp = _positive(path, "ascend_v4.attention_tp", layout.get("attention_tp", 1))
    ep_total = _positive(path, "ascend_v4.expert_parallel", layout.get("expert_parallel", 1))
    ep = ep_total if tp == 1 else ep_total // tp
    if tp * ep != ranks or (tp > 1 and ep_total % tp):
        raise ConfigError(f"{path}: attention_tp {tp} with expert_parallel {ep_total} does not tile "
                          f"{ranks} ranks (this runtime needs ranks = attention_tp x expert groups)")
    placement = layout.get("expert_placement")
    if placement is not None:
        if not isinstance(placement, list) or not all(
                isinstance(ids, list) and all(isinstance(e, int) and not isinstance(e, bool) for e in ids)
                for ids in placement):
            raise ConfigError(f"{path}: ascend_v4.expert_placement must be a list of expert-id lists, one per rank")
        if len(placement) != ep:
            raise ConfigError(f"{path}: ascend_v4.expert_placement lists {len(placement)} ranks, but the "
                              f"layout has {ep} expert-parallel ranks")
        placement = tuple(tuple(ids) for ids in placement)
    return tp, ep, placement


def _positive(path: str, key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value

