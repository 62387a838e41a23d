"""Python API: `load(path_or_preset) -> Model`; `model(ids, start_pos)` like the reference."""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ascend_v4.config import ConfigError, ModelConfig, load_config
from ascend_v4.sampling import sample

# Presets above this many parameters are not materialised with random weights on a CPU.
MAX_RANDOM_PARAMS = 2_000_000_000


class InputError(ValueError):
    """Bad token ids, positions or batch shapes passed to the model."""


_CONTEXT_SET = False

# MindSpore's CPU kernel threads per process (see cpu_kernel_threads)
CPU_THREADS_ENV = "ASCEND_V4_CPU_THREADS"


def cpu_kernel_threads() -> int:
    """The CPU kernel threads MindSpore may split one kernel over: $ASCEND_V4_CPU_THREADS, default 1.

    MindSpore's default (one per core, up to 25) hands every split kernel to a second thread.
    When the cores are shared (other processes, two test workers, ranks on one host) the runtime
    after a few steps lets that thread sleep between kernels, and each handoff then waits its turn
    on the run queue: a tiny-preset decode step went from ~60 ms to 0.3-2.5 s with two busy
    processes beside it (DESIGN "The call path"). The weight products are this package's own
    single-threaded kernels, so one thread costs little (prefill ~10% on 2 idle cores); set more on
    a host whose cores are this process's alone."""
    raw = os.environ.get(CPU_THREADS_ENV, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{CPU_THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


def _set_graph_mode() -> None:
    """GRAPH_MODE (15-30x faster than PyNative here) with the light O0 pass pipeline and
    cpu_kernel_threads(), set once per process (a caller that switches to PyNative switches back
    itself).

    MindSpore's on-disk compile cache is deliberately not used: measured here, it served a graph
    compiled for another prompt length (a Reshape size error), so every process compiles afresh.
    """
    global _CONTEXT_SET
    if _CONTEXT_SET:
        return
    import mindspore as ms
    from mindspore._c_expression import RuntimeConf
    threads = cpu_kernel_threads()
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})
    if not RuntimeConf.get_instance().is_op_threads_num_configured():    # settable once per process
        ms.device_context.cpu.op_tuning.threads_num(threads)
    _CONTEXT_SET = True


def extend_buckets(prefill_chunk: int) -> List[int]:
    """Token counts the extend graph is compiled for: 16, 64, 256, ... below prefill_chunk, and
    prefill_chunk itself (each compiles once; see chunk_plan)."""
    buckets, n = {prefill_chunk}, 16
    while n < prefill_chunk:
        buckets.add(n)
        n *= 4
    return sorted(buckets)


# a graph call's fixed cost in tokens' worth of work: on the reference tiny configs (2 cores) a
# call costs about 20 ms before its tokens (16 tokens ~31 ms, 64 ~70 ms, 256 ~100 ms per row)
CALL_OVERHEAD_TOKENS = 32


def chunk_plan(n: int, buckets: Sequence[int]) -> List[Tuple[int, int]]:
    """Split n tokens into (tokens, bucket) calls of the compiled bucket sizes. A call costs its
    bucket plus CALL_OVERHEAD_TOKENS; at each point the rest either goes into the smallest bucket
    that holds it (the last, padded call) or the largest bucket that fits runs full, whichever
    costs less in total (ties: the split, less padding). The plan of what is left depends only on
    its length, so a prompt resumed at any of its chunk ends runs the same remaining chunks.
    300 tokens with buckets 16/64/256/512 run as 256 + 64 (44 real) instead of 256 + 16 + 16 + 16:
    two calls and one compiled shape fewer; the cost is never above the greedy plan's."""
    plan, left, top = [], n, buckets[-1]
    while left > 2 * top:                                   # long prompts: whole top buckets first
        plan.append((top, top))
        left -= top
    cost, pad = [0] * (left + 1), [False] * (left + 1)      # least cost of m tokens; pad them at once?
    for m in range(1, left + 1):
        fit = max((b for b in buckets if b <= m), default=0)
        holds = min((b for b in buckets if b >= m), default=0)
        split = fit + CALL_OVERHEAD_TOKENS + cost[m - fit] if fit else None
        whole = holds + CALL_OVERHEAD_TOKENS if holds else None
        pad[m] = split is None or (whole is not None and whole < split)
        cost[m] = whole if pad[m] else split
    while left > 0:
        if pad[left]:
            plan.append((left, min(b for b in buckets if b >= left)))
            break
        fit = max(b for b in buckets if b <= left)
        plan.append((fit, fit))
        left -= fit
    return plan


class Model:
    """A loaded DeepSeek-V4 model with a batch of `max_batch_size` independent sequence slots.

    Engine API (rows are independent sequences, each at its own position):
      prefill(prompt_ids, slot) -> logits [vocab]            the prompt into row `slot`
      extend(slot, token_ids, start_pos) -> logits [vocab]   append tokens (all_logits: [n, vocab])
      decode(token_ids [B], positions [B]) -> logits [B, vocab]   one step; position -1 = idle row
    Reference-compatible API: `model(ids, 0)` prefills ids [b, s] into rows 0..b-1;
    `model(ids[:, -1:], s)` decodes one token of those rows at position s.
    Logits are float32 numpy.
    """

    def __init__(self, cfg: ModelConfig, runtime, transformer, weight_format: str, tokenizer=None,
                 engram=None):
        from ascend_v4.graph_call import CompiledCell
        from ascend_v4.model import ENGRAM_HISTORY, DecodeNet, ExtendNet, MtpNet, StepNet
        self.cfg = cfg                   # the model (config.json)
        self.tokenizer = tokenizer       # TextTokenizer of the checkpoint, or None (ids only)
        self.runtime = runtime           # how it runs (RuntimeConfig)
        self.max_seq_len = runtime.max_seq_len
        self.set_prefill_chunk(runtime.prefill_chunk)
        self.weight_format = weight_format
        self.transformer = transformer
        self.spec = transformer.state_spec()
        # the compiled graphs, called past Cell.__call__'s per-call sub-cell walk (graph_call.py)
        self._extend = CompiledCell(ExtendNet(transformer))
        self._extend_all = CompiledCell(ExtendNet(transformer, all_logits=True))
        self._decode = CompiledCell(DecodeNet(transformer))
        self._mtp = CompiledCell(MtpNet(transformer))
        self._step = CompiledCell(StepNet(transformer))
        self.max_batch = runtime.max_batch_size
        self.tiers = None        # the tiered KV cache's manager (runtime kv_budget), ascend_v4/kv_tiers
        if runtime.kv_budget is not None:
            from ascend_v4.kv_tiers.budget import parse_kv_budget, tier_plan
            from ascend_v4.kv_tiers.manager import TierManager
            self.tiers = TierManager(self.spec, tier_plan(cfg, runtime), parse_kv_budget(runtime.kv_budget),
                                     self.max_batch, runtime.kv_spill_dir)
        # Engram: host tables (EngramHost) and the prefetch thread; rows enter each graph call
        self.engram = engram
        self.prefetcher = None
        if cfg.has_engram:
            if engram is None:
                raise ConfigError("this model has Engram layers (engram_layer_ids): pass its tables")
            from ascend_v4.engram import Prefetcher
            self.prefetcher = Prefetcher(engram)
            self._history_slot = self.spec.positions()[ENGRAM_HISTORY]
        self.reset()

    def set_prefill_chunk(self, prefill_chunk: int, buckets: Optional[Sequence[int]] = None) -> None:
        """Most tokens per extend call (longer inputs run in chunks) and the compiled token counts
        (default extend_buckets(prefill_chunk); an explicit list must end at prefill_chunk)."""
        if not isinstance(prefill_chunk, int) or isinstance(prefill_chunk, bool) or prefill_chunk < 1:
            raise ConfigError(f"prefill_chunk must be a positive integer, got {prefill_chunk!r}")
        buckets = sorted(set(int(b) for b in buckets)) if buckets else extend_buckets(prefill_chunk)
        if buckets[0] < 1 or buckets[-1] != prefill_chunk:
            raise ConfigError(f"buckets {buckets} must be positive and end at prefill_chunk {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self.buckets = buckets

    # ---- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty every slot."""
        from mindspore import Tensor
        self.state = tuple(Tensor(a) for a in self.spec.initial(self.max_batch))
        self.lengths = np.full(self.max_batch, -1, np.int64)   # next position per slot; -1: empty
        self.hidden = None       # H [1, n, hc, d] of the last extend with keep_hidden (numpy)
        self.batch = 0           # rows of the last reference-style prefill
        if self.tiers is not None:
            self.tiers.reset()

    def close(self) -> None:
        """Release the tiered cache's disk file (a no-op without kv_budget)."""
        if self.tiers is not None:
            self.tiers.close()

    def _call(self, graph, calls):
        """graph(state) -> (outputs, new state) for calls [(row, start, n)]; with a tiered cache
        the tier manager makes the pages the call reads resident (re-running it on a miss)."""
        if self.tiers is None:
            outputs, self.state = graph(self.state)
        else:
            outputs, self.state = self.tiers.run(self.state, calls, graph)
        return outputs

    def snapshot(self):
        """The whole decode state and slot positions, to `restore` later (graph outputs are new
        tensors, so holding the old tuple costs no copy)."""
        return self.state, self.lengths.copy()

    def restore(self, snapshot) -> None:
        """Back to a snapshot. A tiered cache keeps its current device pools and page table: a call
        writes only entries past the snapshot's lengths, which no query sees before they are written
        again, so the current pools hold the snapshot's visible entries where the tiers put them
        (this undoes calls that continue sequences, as MTP rollback does; a slot refilled from
        position 0 since the snapshot has released the old sequence's pages)."""
        state, lengths = snapshot
        if self.tiers is not None:
            keep = set(self.tiers.pool_pos + self.tiers.table_pos)
            state = tuple(cur if i in keep else old for i, (cur, old) in enumerate(zip(self.state, state)))
        self.state = state
        self.lengths = lengths.copy()

    def row_state(self, slot: int, first: int = 0) -> Dict[str, np.ndarray]:
        """The state of the sequence in `slot` (numpy copies), by slot name, trimmed to what its
        length uses: dense slots [rows, ...]; page pools as MODEL1 token rows [tokens, TOKEN_BYTES].
        Position-indexed slots hold the rows of positions first..length-1 (first: a multiple of
        their per_tokens; the rows past the sequence are `fill`)."""
        from ascend_v4.state import DENSE, PAGE_BLOCK, PAGES, pool_token_rows
        slot, length = self._check_slot(slot), int(self.lengths[slot])
        if length < 0:
            raise InputError(f"slot {slot} holds no sequence")
        out = {}
        for spec_slot, tensor in zip(self.spec, self.state):
            a = first // spec_slot.per_tokens if spec_slot.per_tokens else 0
            n = spec_slot.rows_for(length) - a
            whole = tensor.asnumpy()                  # a view of the tensor's memory on CPU: copy what is kept
            if spec_slot.layout == DENSE:
                out[spec_slot.name] = whole[slot, a:a + max(n, 0)].copy()
            elif spec_slot.layout == PAGES:
                start = slot * spec_slot.shape[0] + a                 # the row's first pool slot wanted
                b0, b1 = start // PAGE_BLOCK, (start + max(n, 1) - 1) // PAGE_BLOCK
                out[spec_slot.name] = pool_token_rows(whole[b0:b1 + 1], start, max(n, 0))
            else:
                raise InputError(f"state slot {spec_slot.name} has layout {spec_slot.layout!r}, "
                                 "which a row copy cannot read")
        return out

    def load_row_state(self, slot: int, arrays: Dict[str, np.ndarray], length: int) -> None:
        """Put a sequence of `length` positions into `slot` from row_state's form (position-indexed
        slots may hold any leading rows; the rest of the row is set to `fill`). The other rows and
        any earlier snapshot() are untouched (new tensors)."""
        from mindspore import Tensor
        from ascend_v4.state import DENSE, write_pool_token_rows
        slot = self._check_slot(slot)
        if not 0 < length < self.max_seq_len:
            raise InputError(f"slot {slot}: a restored length must lie in 1..{self.max_seq_len - 1}, got {length}")
        state = []
        for spec_slot, tensor in zip(self.spec, self.state):
            rows = arrays[spec_slot.name]
            full = tensor.asnumpy().copy()
            if spec_slot.layout == DENSE:
                full[slot] = spec_slot.fill
                full[slot, :rows.shape[0]] = rows
            else:                                     # MODEL1 pool: the row's tokens, zeros after
                tokens = spec_slot.shape[0]
                padded = np.zeros((tokens, rows.shape[1]), np.uint8)
                padded[:rows.shape[0]] = rows
                write_pool_token_rows(full, slot * tokens, padded)
            state.append(Tensor(full))
        self.state = tuple(state)
        self.lengths[slot] = length

    def state_arrays(self) -> Dict[str, np.ndarray]:
        """The decode state by slot name (numpy copies; page pools are shared by all rows)."""
        return {name: t.asnumpy() for name, t in zip(self.spec.names, self.state)}

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
        if ids.shape[0] > self.max_batch:
            raise InputError(f"batch {ids.shape[0]} exceeds max_batch_size {self.max_batch}")
        return ids.astype(np.int32)

    def _check_slot(self, slot) -> int:
        if not isinstance(slot, (int, np.integer)) or isinstance(slot, bool) or not 0 <= slot < self.max_batch:
            raise InputError(f"slot {slot!r} is out of range: slots are 0..{self.max_batch - 1} "
                             f"(max_batch_size {self.max_batch})")
        return int(slot)

    def _check_continues(self, slot: int, start_pos: int, n: int, what: str = "start_pos") -> None:
        if start_pos != 0:
            if self.lengths[slot] < 0:
                raise InputError(f"slot {slot} holds no sequence: prefill it (start_pos 0) before "
                                 f"continuing at position {start_pos}")
            if start_pos != self.lengths[slot]:
                raise InputError(f"slot {slot}: {what} {start_pos} does not continue its sequence "
                                 f"(next position is {self.lengths[slot]})")
        if start_pos + n > self.max_seq_len:
            raise InputError(f"slot {slot}: {n} tokens from position {start_pos} run past max_seq_len "
                             f"{self.max_seq_len}")

    # ---- Engram rows ---------------------------------------------------------------------
    def _history(self) -> np.ndarray:
        """The engram.history slot [B, N-1] (last N-1 token ids of every row), read from the state."""
        return self.state[self._history_slot].asnumpy()

    def _engram_input(self, history, ids) -> tuple:
        """() without Engram, else (e_t [b, n, L, T * head_dim],) for the graph (prefetched or
        gathered now: Prefetcher counts which)."""
        if self.prefetcher is None:
            return ()
        from mindspore import Tensor
        return (Tensor(self.prefetcher.take(history, ids)),)

    def use_engram_tables(self, engram) -> None:
        """Serve the Engram rows from `engram` (an EngramHost of the same geometry, e.g. the
        memory-mapped tables instead of the host copies); the compiled graphs are unchanged."""
        from ascend_v4.engram import Prefetcher
        if self.prefetcher is None or engram.geo != self.engram.geo:
            raise ConfigError("use_engram_tables: the model has no Engram, or the geometry differs")
        self._prefetchers = getattr(self, "_prefetchers", {id(self.engram): self.prefetcher})
        self.engram = engram
        self.prefetcher = self._prefetchers.setdefault(id(engram), Prefetcher(engram))   # one thread each

    def prefetch(self, token_ids, positions) -> None:
        """Start gathering the Engram rows of the next `decode(token_ids, positions)` on the
        worker thread (no-op without Engram); call it as soon as the tokens are sampled."""
        if self.prefetcher is None:
            return
        ids = np.where(np.asarray(positions) >= 0, np.asarray(token_ids), 0).astype(np.int32).reshape(-1, 1)
        self.prefetcher.request(self._history(), ids)

    # ---- engine API --------------------------------------------------------------------
    def extend(self, slot: int, token_ids, start_pos: int, all_logits: bool = False,
               keep_hidden: bool = False) -> np.ndarray:
        """Append token_ids [n] to the sequence in `slot` at start_pos (0: a new sequence).

        Runs as calls of compiled bucket sizes (chunk_plan). Returns the logits of the last token
        [vocab], or of every token [n, vocab] with all_logits; keep_hidden leaves the final
        streams H [1, n, hc, d] in self.hidden (the MTP block's input)."""
        from mindspore import Tensor
        slot = self._check_slot(slot)
        ids = self._check_ids(token_ids)
        if ids.shape[0] != 1:
            raise InputError(f"slot {slot}: extend takes one sequence of token ids, got shape {ids.shape}")
        if isinstance(start_pos, bool) or not isinstance(start_pos, (int, np.integer)) or start_pos < 0:
            raise InputError(f"slot {slot}: start_pos must be an integer >= 0, got {start_pos!r}")
        n = ids.shape[1]
        self._check_continues(slot, int(start_pos), n)
        net = self._extend_all if all_logits else self._extend
        chunks, pos = [], int(start_pos)
        for c, bucket in chunk_plan(n, self.buckets):
            padded = np.zeros((1, bucket), np.int32)
            padded[:, :c] = ids[:, pos - start_pos:pos - start_pos + c]
            chunks.append((c, padded))
            pos += c
        keys = self._engram_chunk_keys(slot, int(start_pos), chunks)
        pieces, hidden, pos = [], [], int(start_pos)
        for k, (c, padded) in enumerate(chunks):
            engram = ()
            if keys:                       # chunk k's rows; chunk k+1's gather while k runs
                engram = self._engram_input(*keys[k])
                if k + 1 < len(keys):
                    self.prefetcher.request(*keys[k + 1])
            if pos == 0 and self.tiers is not None:
                self.tiers.release(slot)
            args = (Tensor(padded), Tensor(np.array([slot], np.int32)), Tensor(np.array([pos], np.int32)),
                    Tensor(np.array([c], np.int32))) + tuple(engram)
            out = self._call(lambda state: _split(net(*args, *state), 2), [(slot, pos, c)])
            pieces.append(out[0].asnumpy()[0, :c] if all_logits else out[0].asnumpy()[0])
            if keep_hidden:
                hidden.append(out[1].asnumpy()[:, :c])
            pos += c
            self.lengths[slot] = pos
        if keep_hidden:
            self.hidden = np.concatenate(hidden, 1)
        return np.concatenate(pieces, 0) if all_logits else pieces[-1]

    def _engram_chunk_keys(self, slot: int, start_pos: int, chunks) -> list:
        """(history [1, N-1], ids [1, bucket]) of every chunk (empty without Engram): the slot's
        history from the state (pad ids for a new sequence), then advanced over each chunk."""
        if self.prefetcher is None:
            return []
        history = self.engram.initial_history(1) if start_pos == 0 else self._history()[slot:slot + 1]
        keys = []
        from ascend_v4.engram import next_history
        for c, padded in chunks:
            keys.append((history, padded))
            history = next_history(history, padded, np.array([c]))
        self.prefetcher.request(*keys[0])
        return keys

    def prefill(self, prompt_ids, slot: int = 0) -> np.ndarray:
        """Run a prompt [s] into row `slot` (its previous sequence is dropped) -> logits [vocab]."""
        return self.extend(slot, prompt_ids, 0)

    def decode(self, token_ids, positions) -> np.ndarray:
        """One token per row: token_ids [B], positions [B] (-1: idle row) -> logits [B, vocab]."""
        from mindspore import Tensor
        ids = np.asarray(token_ids)
        pos = np.asarray(positions)
        if ids.shape != (self.max_batch,) or pos.shape != (self.max_batch,):
            raise InputError(f"decode takes token_ids and positions of shape [{self.max_batch}] "
                             f"(max_batch_size), got {ids.shape} and {pos.shape}")
        if not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(pos.dtype, np.integer):
            raise InputError(f"token_ids and positions must be integers, got {ids.dtype} and {pos.dtype}")
        active = pos >= 0
        for slot in np.flatnonzero(active):
            if not 0 <= ids[slot] < self.cfg.vocab_size:
                raise InputError(f"slot {slot}: token id {ids[slot]} out of range [0, {self.cfg.vocab_size})")
            if pos[slot] == 0:
                raise InputError(f"slot {slot}: decode at position 0; start a sequence with prefill")
            self._check_continues(int(slot), int(pos[slot]), 1, "position")
        if (pos < -1).any():
            raise InputError(f"slot {int(np.flatnonzero(pos < -1)[0])}: position must be >= 0 or -1 (idle)")
        ids = np.where(active, ids, 0).astype(np.int32).reshape(-1, 1)
        engram = self._engram_input(self._history(), ids) if self.prefetcher else ()
        calls = [(int(r), int(pos[r]), 1) for r in np.flatnonzero(active)]
        out = self._call(lambda state: _split(self._decode(Tensor(ids), Tensor(pos.astype(np.int32)), *engram,
                                                           *state), 1), calls)
        self.lengths[active] += 1
        return out[0].asnumpy()

    def step(self, token_ids, positions, counts) -> Tuple[np.ndarray, np.ndarray]:
        """Up to n tokens per row in one call: token_ids [B, n], positions [B] of token_ids[:, 0],
        counts [B] real tokens per row (0: idle row) -> (logits [B, n, vocab], H [B, n, hc, d]).
        MTP verification runs the last token and the drafts of every row through this."""
        from mindspore import Tensor
        ids, pos, cnt = np.asarray(token_ids), np.asarray(positions), np.asarray(counts)
        if ids.ndim != 2 or ids.shape[0] != self.max_batch or pos.shape != (self.max_batch,) \
                or cnt.shape != (self.max_batch,):
            raise InputError(f"step takes token_ids [{self.max_batch}, n], positions and counts "
                             f"[{self.max_batch}], got {ids.shape}, {pos.shape}, {cnt.shape}")
        if (cnt < 0).any() or (cnt > ids.shape[1]).any():
            raise InputError(f"counts must lie in 0..{ids.shape[1]}, got {cnt.tolist()}")
        for slot in np.flatnonzero(cnt > 0):
            c = int(cnt[slot])
            if ids[slot, :c].min() < 0 or ids[slot, :c].max() >= self.cfg.vocab_size:
                raise InputError(f"slot {slot}: token id out of range [0, {self.cfg.vocab_size})")
            if pos[slot] < 1:
                raise InputError(f"slot {slot}: step at position {pos[slot]}; start a sequence with prefill")
            self._check_continues(int(slot), int(pos[slot]), c, "position")
        ids = np.where(cnt[:, None] > 0, ids, 0).astype(np.int32)
        start = np.where(cnt > 0, pos, 0).astype(np.int32)
        engram = self._engram_input(self._history(), ids) if self.prefetcher else ()
        calls = [(int(r), int(start[r]), int(cnt[r])) for r in np.flatnonzero(cnt > 0)]
        out = self._call(lambda state: _split(self._step(Tensor(ids), Tensor(start), Tensor(cnt.astype(np.int32)),
                                                         *engram, *state), 2), calls)
        self.lengths[cnt > 0] += cnt[cnt > 0]
        return out[0].asnumpy(), out[1].asnumpy()

    def mtp_draft(self, hidden, next_ids) -> np.ndarray:
        """MTP block on the main model's streams hidden [b, s, hc, d] at s consecutive positions
        and the token after each, next_ids [b, s] -> logits of the token after next_ids[:, -1]
        [b, vocab]. The MTP block attends within its window, so the last window_size positions
        suffice (positions restart at 0: exact up to rounding, which is all a draft needs)."""
        from mindspore import Tensor
        return self._mtp(Tensor(np.asarray(hidden, self.hidden_dtype)), Tensor(self._check_ids(next_ids))).asnumpy()

    @property
    def hidden_dtype(self):
        from ascend_v4.precision import np_dtype
        return np_dtype(self.runtime)

    # ---- reference-compatible API ------------------------------------------------------
    def __call__(self, input_ids, start_pos: int = 0) -> np.ndarray:
        ids = self._check_ids(input_ids)
        b, s = ids.shape
        if start_pos == 0:
            if s > self.max_seq_len:
                raise InputError(f"prompt of {s} tokens exceeds max_seq_len {self.max_seq_len}")
            self.lengths[:] = -1
            if b > 1 and self.engram is None and self.tiers is None:
                logits = self._prefill_rows(ids)
            else:
                logits = np.stack([self.extend(r, ids[r], 0) for r in range(b)])
            self.batch = b
            return logits
        if self.batch == 0:
            raise InputError("decode (start_pos > 0) before any prefill (start_pos = 0)")
        if b != self.batch:
            raise InputError(f"decode batch {b} differs from the prefill batch {self.batch}")
        if start_pos != self.lengths[0]:
            raise InputError(f"start_pos {start_pos} does not continue the sequence (next is {self.lengths[0]})")
        if start_pos + s > self.max_seq_len:
            raise InputError(f"position {start_pos + s - 1} reaches max_seq_len {self.max_seq_len}")
        if s > 1:
            return np.stack([self.extend(r, ids[r], start_pos) for r in range(b)])
        pos = np.full(self.max_batch, -1, np.int64)
        pos[:b] = start_pos
        tok = np.zeros(self.max_batch, np.int64)
        tok[:b] = ids[:, 0]
        return self.decode(tok, pos)[:b]

    def _prefill_rows(self, ids: np.ndarray) -> np.ndarray:
        """ids [b, s] prefilled into rows 0..b-1 together: each chunk of chunk_plan is one
        [b, bucket] call (a graph per bucket and b; each row's tokens, positions and state stay its
        own) -> last-token logits [b, vocab]. Equal to the rows run one by one within rounding
        (float64 1e-9, tests/test_engine.py; float32 logits 4e-6 relative on reference-tiny: BLAS
        blocks the products over all the call's rows)."""
        from mindspore import Tensor
        b, s = ids.shape
        rows, pos = Tensor(np.arange(b, dtype=np.int32)), 0
        for c, bucket in chunk_plan(s, self.buckets):
            padded = np.zeros((b, bucket), np.int32)
            padded[:, :c] = ids[:, pos:pos + c]
            args = (Tensor(padded), rows, Tensor(np.full(b, pos, np.int32)), Tensor(np.full(b, c, np.int32)))
            out = self._call(lambda state: _split(self._extend(*args, *state), 2), [(r, pos, c) for r in range(b)])
            pos += c
            self.lengths[:b] = pos
        return out[0].asnumpy()

    def mtp_logits(self, input_ids, next_ids) -> np.ndarray:
        """MTP head: prefill `input_ids` (one chunk per row), then predict from (H, next_ids) ->
        [b, vocab]. next_ids[:, t] is the token after input_ids[:, t]."""
        from mindspore import Tensor
        ids = self._check_ids(input_ids)
        nxt = self._check_ids(next_ids)
        if nxt.shape != ids.shape:
            raise InputError(f"next_ids shape {nxt.shape} differs from input_ids shape {ids.shape}")
        hidden = []
        for r in range(ids.shape[0]):
            self.extend(r, ids[r], 0, keep_hidden=True)
            hidden.append(self.hidden)
        self.batch = ids.shape[0]
        return self._mtp(Tensor(np.concatenate(hidden, 0)), Tensor(nxt)).asnumpy()

    def generate(self, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
                 temperature: float = 0.0, seed: Optional[int] = None, progress=None,
                 top_p: float = 1.0) -> List[List[int]]:
        """Greedy (temperature 0) or sampled decoding (temperature, top_p) of up to max_batch_size
        prompts (any lengths: each row is its own sequence) -> new ids per prompt."""
        prompts = [np.asarray(p) for p in prompt_ids]
        if not prompts or len(prompts) > self.max_batch:
            raise InputError(f"generate takes 1..{self.max_batch} prompts (max_batch_size), got {len(prompts)}")
        for p in prompts:
            self._check_ids(p)
        if max_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 0")
        if temperature < 0:
            raise InputError("temperature must be >= 0")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.max_seq_len:
            raise InputError(f"prompt {longest} + {max_new_tokens} new tokens exceed max_seq_len "
                             f"{self.max_seq_len}")
        rng = np.random.default_rng(seed)
        b = len(prompts)
        out: List[List[int]] = [[] for _ in range(b)]
        self.timings = {"prefill_s": 0.0, "decode_s": [], "prompt_tokens": int(sum(len(p) for p in prompts))}
        if max_new_tokens == 0:
            return out
        self.lengths[:] = -1
        t0 = time.perf_counter()
        logits = np.stack([self.prefill(p, slot=r) for r, p in enumerate(prompts)])
        self.timings["prefill_s"] = time.perf_counter() - t0
        pos = np.full(self.max_batch, -1, np.int64)
        tok = np.zeros(self.max_batch, np.int64)
        for step in range(max_new_tokens):
            nxt = sample(logits, temperature, rng, top_p)
            for row, t in zip(out, nxt):
                row.append(int(t))
            if progress is not None:
                progress(1)
            if step == max_new_tokens - 1:
                break
            pos[:b] = self.lengths[:b]
            tok[:b] = nxt
            self.prefetch(tok, pos)         # Engram rows of the sampled tokens (no-op without)
            t0 = time.perf_counter()
            logits = self.decode(tok, pos)[:b]
            self.timings["decode_s"].append(time.perf_counter() - t0)
        return out


def _split(out, n: int):
    """A graph's outputs -> (its first n outputs, the state tuple after them)."""
    return tuple(out[:n]), tuple(out[n:])


def build_model(checkpoint, prefill_chunk: Optional[int] = None, layout=None) -> Model:
    """Create the cells for `checkpoint.config` and stream its weights into them in their stored
    format (runtime weight_storage 'float': dequantised), one tensor at a time; stacked experts
    are assembled in a buffer of their stored dtype. layout: this rank's ParallelLayout (each
    rank reads only its shard of every tensor, ascend_v4/parallel/shard.py)."""
    from mindspore import Tensor
    from ascend_v4.model import Transformer
    from ascend_v4.parallel.layout import SINGLE
    from ascend_v4.parallel.shard import read_tensor
    from ascend_v4.precision import np_dtype
    from ascend_v4.weights import CKPT_SCALED, StoredWeight
    _set_graph_mode()
    cfg, rt = checkpoint.config, checkpoint.runtime
    if prefill_chunk is not None:
        rt = rt.replace(prefill_chunk=prefill_chunk)
    layout = layout or SINGLE
    rt = rt.replace(parallel=layout)
    rt.validate(cfg)
    if layout.distributed:
        if cfg.quantization:
            raise ConfigError("a converted INT8 checkpoint runs on one rank here (its sharded W8A8 "
                              "product is not built): drop --tensor-parallel / --expert-parallel")
        if rt.custom_ops:
            raise ConfigError("custom_ops with tensor or expert parallel is not built: run the "
                              "AscendC twins on one rank")
        from ascend_v4.parallel.comm import init_collectives
        init_collectives()
    transformer = Transformer(cfg, rt)
    table = transformer.checkpoint_weights()
    missing = sorted(set(table) - set(checkpoint.formats))
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}")
    stacks: Dict[int, list] = {}          # id(cell) -> [cell, weight buffer, scale buffer, slots filled]
    from tqdm import tqdm
    for name in tqdm(checkpoint.names(), desc="load", unit="tensor", disable=None, leave=False):
        if name not in table:
            continue  # the loader has already validated names against the schema
        target, slot = table[name]
        kind = checkpoint.formats[name]
        if not isinstance(target, StoredWeight):
            array = read_tensor(checkpoint, name, layout)
            dtype = np.int32 if kind == "int" else np_dtype(rt)
            target.set_data(Tensor(np.array(array, dtype=dtype)))
            continue
        scale = read_tensor(checkpoint, name[: -len(".weight")] + ".scale", layout) if kind in CKPT_SCALED \
            else None
        try:
            weight, scale = target.stored_arrays(kind, read_tensor(checkpoint, name, layout), scale)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if slot < 0:
            target.set_arrays(weight, scale)
            continue
        stack = stacks.setdefault(id(target), [target, None, None, 0])
        if stack[1] is None:
            E = target.lead[0]
            stack[1] = np.empty((E,) + weight.shape, weight.dtype)
            stack[2] = None if scale is None else np.empty((E,) + scale.shape, scale.dtype)
        stack[1][slot] = weight
        if scale is not None:
            stack[2][slot] = scale
        stack[3] += 1
        if stack[3] == target.lead[0]:    # complete: into the parameter now, one buffer alive at a time
            target.set_arrays(stack[1], stack[2])
            del stacks[id(target)]
    if stacks:                            # the loader validated names: a stack is never left part-filled
        raise ConfigError(f"{len(stacks)} expert stacks were not filled")
    from ascend_v4.tokenizer import TextTokenizer
    return Model(cfg, rt, transformer, checkpoint.weight_format, TextTokenizer.from_dir(checkpoint.folder),
                 engram=checkpoint.engram_host(rt.engram_table))


def load(path_or_preset: str = "tiny", weight_format: Optional[str] = None, seed: int = 0,
         prefill_chunk: Optional[int] = None, tensor_parallel: int = 1, expert_parallel: int = 1,
         expert_placement=None, **overrides) -> Model:
    """Load a checkpoint folder, or a preset with generated random weights (tiny configs only).
    overrides: runtime options (max_seq_len, max_batch_size, compute_dtype, custom_ops).
    tensor_parallel x expert_parallel > 1: this process is one rank of an msrun job (`ascend-v4
    launch`) and loads only its shard; expert_placement: expert ids per EP rank (the plan's, with
    redundant copies of hot experts; default: contiguous blocks)."""
    from ascend_v4.checkpoint import open_checkpoint, write_random_checkpoint
    from ascend_v4.params import count_params
    from ascend_v4.parallel.layout import layout_for
    overrides = {k: v for k, v in overrides.items() if v is not None}   # None: the model's default
    layout = layout_for(tensor_parallel, expert_parallel, expert_placement)
    if os.path.isdir(path_or_preset):
        return build_model(open_checkpoint(path_or_preset, overrides=overrides), prefill_chunk, layout)
    cfg = load_config(path_or_preset, **overrides)
    fmt = weight_format or cfg.dtype
    total = count_params(cfg)["total"]
    if total > MAX_RANDOM_PARAMS:
        raise ConfigError(f"{path_or_preset!r} has {total / 1e9:.0f}B parameters: too large to generate "
                          "random weights on this machine; pass a checkpoint folder instead")
    with tempfile.TemporaryDirectory(prefix="ascend_v4_") as tmp:
        path = write_random_checkpoint(cfg, os.path.join(tmp, "ckpt"), weight_format=fmt, seed=seed)
        return build_model(open_checkpoint(path), prefill_chunk, layout)
