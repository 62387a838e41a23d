"""Every rank steps the same batch: rank 0 runs the engine (server, scheduler, sampling) on a
`LockstepModel`, which broadcasts each model call (method name and its numpy / int arguments)
before running it; the other ranks run `follow(model)`, which replays the calls on their shard
until rank 0 closes. The graphs' collectives then meet in the same order on every rank.

The model's methods are deterministic functions of their arguments and the rank's state, and the
logits every rank computes are identical (gathered over the TP group), so replaying the calls
keeps all ranks' states in step. A call that rank 0 refuses (InputError) is refused by every
rank in the same way before any graph runs.
"""
from __future__ import annotations

import logging
import pickle
from collections import OrderedDict
from contextlib import contextmanager

from ascend_v4.parallel.comm import broadcast_bytes

log = logging.getLogger("ascend_v4.parallel")

# Model methods that run graphs or change state: broadcast before running
REPLAYED = ("extend", "prefill", "decode", "step", "mtp_draft", "mtp_logits", "generate", "reset",
            "set_prefill_chunk", "call")
KEPT_SNAPSHOTS = 4          # snapshots are restored within one engine step; a few is plenty
STOP = "stop"


class SnapshotRef:
    """Rank 0's handle on a snapshot taken on every rank (see Model.snapshot / restore)."""

    def __init__(self, key: int, local):
        self.key, self.local = key, local


class LockstepModel:
    """A Model facade for rank 0 of a multi-rank job (see the module docstring)."""

    def __init__(self, model):
        self._model = model
        self._next_key = 0
        self._closed = False

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name in REPLAYED:
            return lambda *args, **kwargs: self._replay(name, args, kwargs)
        return attr

    def __call__(self, *args, **kwargs):
        return self._replay("call", args, kwargs)

    def _replay(self, name, args, kwargs):
        shareable = {k: (None if callable(v) else v) for k, v in kwargs.items()}   # e.g. a progress bar
        broadcast_bytes(pickle.dumps((name, args, shareable)))
        return _run(self._model, name, args, kwargs)

    def snapshot(self) -> SnapshotRef:
        key = self._next_key
        self._next_key += 1
        broadcast_bytes(pickle.dumps(("snapshot", (key,), {})))
        return SnapshotRef(key, self._model.snapshot())

    def restore(self, ref: SnapshotRef) -> None:
        broadcast_bytes(pickle.dumps(("restore", (ref.key,), {})))
        self._model.restore(ref.local)

    def close(self) -> None:
        """Release the followers (they return from `follow`). Idempotent."""
        if not self._closed:
            self._closed = True
            broadcast_bytes(pickle.dumps((STOP, (), {})))


def _run(model, name, args, kwargs):
    if name == "call":
        return model(*args, **kwargs)
    return getattr(model, name)(*args, **kwargs)


def follow(model) -> int:
    """Replay rank 0's calls on this rank's shard until rank 0 closes -> number of calls replayed."""
    from ascend_v4.api import InputError
    snapshots: "OrderedDict[int, object]" = OrderedDict()
    calls = 0
    while True:
        name, args, kwargs = pickle.loads(broadcast_bytes())
        if name == STOP:
            return calls
        calls += 1
        if name == "snapshot":
            snapshots[args[0]] = model.snapshot()
            while len(snapshots) > KEPT_SNAPSHOTS:
                snapshots.popitem(last=False)
        elif name == "restore":
            model.restore(snapshots[args[0]])
        else:
            try:
                _run(model, name, args, kwargs)
            except InputError as exc:            # rank 0 got the same error and reports it
                log.debug("replayed call %s refused: %s", name, exc)


@contextmanager
def ranks_in_step(model):
    """`with ranks_in_step(model) as m:` m is what rank 0 drives (the model itself in a one-process
    run) and None on the other ranks, which have replayed every call of rank 0 by the time the
    block runs (so they skip it). Rank 0 releases them when the block ends, error or not."""
    par = model.runtime.parallel
    if not par.distributed:
        yield model
        return
    if par.rank != 0:
        calls = follow(model)
        log.info("%s: replayed %d calls of rank 0", par.describe(), calls)
        yield None
        return
    driver = LockstepModel(model)
    try:
        yield driver
    finally:
        driver.close()
