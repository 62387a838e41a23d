"""Continuous batching over the model's slots.

One engine thread runs `step()` in a loop. A step:
  1. drops cancelled requests (their slots free at once) and admits waiting ones into free slots;
  2. runs prefill chunks (compiled buckets, `chunk_plan`) of the oldest requests still
     prefilling, up to `prefill_budget` padded tokens a step (at least one chunk), so long
     prompts interleave with decoding and running streams keep flowing;
  3. advances every decoding row by one token (`Model.decode`), or with MTP speculation by one
     `Model.step` that verifies each row's pending token plus one MTP draft.
A row's numbers do not depend on the other rows: prefill runs the row alone through the same
chunks as `Model.prefill`, decode always runs the full [max_batch] shape, and the graphs have no
cross-row reduction, so greedy output equals `Model.generate` of the request alone.

With a PrefixCache (prefix_cache.py), an admitted request whose prompt starts with a cached prefix
gets that prefix's state restored into its slot and prefills only the rest (request.cached_tokens);
states are cached at prefill chunk ends on page boundaries, at each prompt's end, and at finish.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Deque, List, Optional

import numpy as np

from ascend_v4.api import chunk_plan
from ascend_v4.config import ConfigError
from ascend_v4.engine.prefix_cache import PrefixCache
from ascend_v4.engine.request import FINISH_ABORT, FINISH_LENGTH, FINISH_STOP, Request, RequestError
from ascend_v4.engine.speculative import MtpSpeculator
from ascend_v4.sampling import sample_one

log = logging.getLogger("ascend_v4.engine")


class QueueFull(RuntimeError):
    """The waiting queue holds max_queue requests already."""


class ShuttingDown(RuntimeError):
    """The engine is stopping and takes no new requests."""


class EngineObserver:
    """Hooks for metrics; every method is called from the engine thread."""

    def on_first_token(self, request: Request) -> None: ...
    def on_finish(self, request: Request) -> None: ...
    def on_speculation(self, drafted: int, accepted: int) -> None: ...
    def on_occupancy(self, slots_in_use: int, waiting: int) -> None: ...


class Engine:
    """Schedules requests onto `model`'s slots; `start()` runs the loop on its own thread."""

    def __init__(self, model, max_queue: int = 64, speculative: Optional[str] = None,
                 observer: Optional[EngineObserver] = None, prefill_budget: Optional[int] = None,
                 prefix_cache: Optional[PrefixCache] = None):
        if speculative not in (None, "mtp"):
            raise ConfigError(f"speculative must be 'mtp' or None, got {speculative!r}")
        if max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {max_queue}")
        self.model = model
        self.max_queue = max_queue
        self.prefill_budget = prefill_budget or model.prefill_chunk   # prefill tokens per step (TTFT vs TPOT)
        self.speculator = MtpSpeculator(model) if speculative else None
        self.observer = observer or EngineObserver()
        self.prefix_cache = prefix_cache
        self.prefix_cache_s = 0.0           # engine time spent restoring and snapshotting prefix states
        self.slots: List[Optional[Request]] = [None] * model.max_batch
        self.waiting: Deque[Request] = deque()
        self._cv = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._accepting = True
        self._stop = False
        self.steps = 0

    # ---- submission (any thread) ---------------------------------------------------------------
    def check(self, prompt, max_tokens: int) -> None:
        """RequestError naming what is wrong with a prompt / length the model cannot take."""
        vocab, ctx = self.model.cfg.vocab_size, self.model.max_seq_len
        if len(prompt) == 0:
            raise RequestError("the prompt is empty", "prompt")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise RequestError(f"prompt token ids must lie in [0, {vocab}): got min {min(prompt)}, "
                               f"max {max(prompt)}", "prompt")
        if len(prompt) >= ctx:
            raise RequestError(f"the prompt has {len(prompt)} tokens; this model's context is {ctx} tokens",
                               "prompt", "context_length_exceeded")
        if max_tokens < 1:
            raise RequestError(f"max_tokens must be >= 1, got {max_tokens}", "max_tokens")
        if len(prompt) + max_tokens > ctx:
            raise RequestError(f"max_tokens {max_tokens}: the prompt ({len(prompt)} tokens) + max_tokens exceed "
                               f"the context of {ctx} tokens", "max_tokens", "context_length_exceeded")

    def submit(self, request: Request) -> Request:
        self.check(request.prompt, request.params.max_tokens)
        request.prompt = [int(t) for t in request.prompt]
        with self._cv:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            # slots free (or freed by a cancel) at the next step take requests before the queue does
            free = sum(r is None or r.cancel_reason is not None for r in self.slots)
            if len(self.waiting) >= self.max_queue + free:
                raise QueueFull(f"the waiting queue is full ({self.max_queue} requests)")
            self.waiting.append(request)
            self._cv.notify_all()
        return request

    def cancel(self, request: Request, reason: str = FINISH_ABORT) -> None:
        """Finish `request` at the next step (its slot is freed; tokens after now are dropped)."""
        with self._cv:
            if request.finish_reason is None and request.cancel_reason is None:
                request.cancel_reason = reason
                self._cv.notify_all()

    def warm_up(self) -> None:
        """Compile every graph the scheduler runs (each prefill bucket, the decode step, and with
        MTP the verify step and the draft head) so no request waits for a compile; the slots are
        left empty."""
        m = self.model
        for bucket in m.buckets:
            m.extend(0, [0] * bucket, 0, keep_hidden=self.speculator is not None)
        if m.lengths[0] + 3 > m.max_seq_len:        # the largest bucket filled the slot: leave room to decode
            m.extend(0, [0] * m.buckets[0], 0, keep_hidden=self.speculator is not None)
        B = m.max_batch
        pos = np.full(B, -1, np.int64)
        pos[0] = m.lengths[0]
        m.decode(np.zeros(B, np.int64), pos)          # also the step MTP falls back to when no row drafts
        if self.speculator:
            pos[0] += 1
            self.speculator.warm_up(pos)
        m.reset()

    # ---- the loop --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ascend-v4-engine", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 5.0) -> None:
        """Take no new requests, let running ones finish for up to drain_s, cancel the rest, join."""
        with self._cv:
            self._accepting = False
        deadline = time.monotonic() + drain_s
        while self.has_work() and time.monotonic() < deadline and self._thread and self._thread.is_alive():
            time.sleep(0.02)
        with self._cv:
            for r in list(self.waiting) + [r for r in self.slots if r]:
                if r.cancel_reason is None:
                    r.cancel_reason = FINISH_ABORT
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join()
        self._drop_cancelled()

    @property
    def alive(self) -> bool:
        """The engine thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def has_work(self) -> bool:
        return bool(self.waiting) or any(r is not None for r in self.slots)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self.has_work():
                    self._cv.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception:                       # a model failure: fail the batch, keep serving
                log.exception("engine step failed; aborting the running requests")
                with self._cv:
                    for r in self.slots:
                        if r is not None:
                            r.cancel_reason = FINISH_ABORT
                self.model.reset()
                self._drop_cancelled()

    def step(self) -> bool:
        """One scheduling step (see the module docstring); False when there was nothing to do."""
        self._drop_cancelled()
        self._admit()
        did = False
        budget = self.prefill_budget
        for r in sorted((r for r in self.slots if r is not None and r.chunks), key=lambda r: r.arrival):
            while r.chunks and (not did or r.chunks[0][1] <= budget):
                budget -= r.chunks[0][1]
                self._prefill_chunk(r)
                did = True
        decoding = [r for r in self.slots if r is not None and r.decoding]
        if decoding:
            verified = self.speculator.step(decoding) if self.speculator else None
            if verified is None:
                self._decode(decoding)
            else:
                self._emit_all(verified)
                self.observer.on_speculation(*self.speculator.last)
            did = True
        self.steps += did
        self._report()
        return did

    # ---- pieces ----------------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        with self._cv:
            gone = [r for r in self.waiting if r.cancel_reason]
            for r in gone:
                self.waiting.remove(r)
            gone += [r for r in self.slots if r is not None and r.cancel_reason]
        for r in gone:
            self._finish(r, r.cancel_reason)

    def _admit(self) -> None:
        admitted = []
        with self._cv:
            for slot, occupant in enumerate(self.slots):
                if occupant is None and self.waiting:
                    r = self.waiting.popleft()
                    r.slot, r.prefilled = slot, 0
                    self.slots[slot] = r
                    admitted.append(r)
        for r in admitted:
            t0 = time.perf_counter()
            snap = self.prefix_cache.lookup(r.prompt) if self.prefix_cache else None
            if snap is not None:
                self.model.load_row_state(r.slot, self.prefix_cache.state_of(snap), snap.length)
                r.prefilled = r.cached_tokens = snap.length
            self.prefix_cache_s += time.perf_counter() - t0
            r.chunks = chunk_plan(len(r.prompt) - r.prefilled, self.model.buckets)

    def _cache_state(self, r: Request, tokens: List[int]) -> None:
        """Offer the state of r's slot (holding exactly `tokens`) to the prefix cache."""
        t0 = time.perf_counter()
        cache = self.prefix_cache
        first = cache.cached_pages(tokens) * cache.page_tokens
        cache.insert(tokens, self.model.row_state(r.slot, first), first)
        self.prefix_cache_s += time.perf_counter() - t0

    def _prefill_chunk(self, r: Request) -> None:
        """One compiled chunk of r's prompt into its slot; the last one samples its first token."""
        count, _ = r.chunks.pop(0)
        piece = r.prompt[r.prefilled:r.prefilled + count]
        logits = self.model.extend(r.slot, piece, r.prefilled, keep_hidden=self.speculator is not None)
        if self.speculator:
            self.speculator.remember(r, self.model.hidden[0])
        r.prefilled += count
        if self.prefix_cache and (not r.chunks or r.prefilled % self.prefix_cache.page_tokens == 0):
            self._cache_state(r, r.prompt[:r.prefilled])
        if not r.chunks:
            self._emit(r, [sample_one(logits, r.params.temperature, r.rng, r.params.top_p)])

    def _decode(self, rows: List[Request]) -> None:
        B = self.model.max_batch
        tokens, positions = np.zeros(B, np.int64), np.full(B, -1, np.int64)
        for r in rows:
            tokens[r.slot], positions[r.slot] = r.pending, r.position
        logits = self.model.decode(tokens, positions)
        self._emit_all([(r, [sample_one(logits[r.slot], r.params.temperature, r.rng, r.params.top_p)])
                        for r in rows])

    def _emit_all(self, results) -> None:
        for r, tokens in results:
            self._emit(r, tokens)

    def _emit(self, r: Request, tokens: List[int]) -> None:
        """Append sampled tokens to r (up to a stop token or max_tokens) and tell its sink."""
        new, reason = [], None
        for t in tokens:
            new.append(int(t))
            if t in r.params.stop_token_ids:
                reason = FINISH_STOP
            elif len(r.output) + len(new) >= r.params.max_tokens:
                reason = FINISH_LENGTH
            if reason:
                break
        r.output += new
        r.pending = new[-1]
        if r.first_token_time is None:
            r.first_token_time = time.monotonic()
            self.observer.on_first_token(r)
        if reason:
            self._finish(r, reason, new)
        elif r.sink:
            r.sink(new, None)

    def _finish(self, r: Request, reason: str, new: Optional[List[int]] = None) -> None:
        r.finish_reason, r.finish_time = reason, time.monotonic()
        if self.prefix_cache and r.slot is not None and self.slots[r.slot] is r and not r.chunks:
            held = int(self.model.lengths[r.slot])      # the fed tokens: prompt + output but the pending one
            sequence = list(r.prompt) + r.output
            if len(r.prompt) < held <= len(sequence):
                self._cache_state(r, sequence[:held])
        with self._cv:
            if r.slot is not None and self.slots[r.slot] is r:
                self.slots[r.slot] = None
        r.chunks = []
        if r.sink:
            r.sink(new or [], reason)
        self.observer.on_finish(r)

    def _report(self) -> None:
        self.observer.on_occupancy(sum(r is not None for r in self.slots), len(self.waiting))
