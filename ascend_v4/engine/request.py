"""A generation request as the engine sees it: token ids in, token ids out, and its lifecycle
(waiting -> prefilling -> decoding -> finished)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ascend_v4.api import InputError

FINISH_STOP, FINISH_LENGTH, FINISH_ABORT = "stop", "length", "abort"


class RequestError(InputError):
    """A request the model cannot take; `param` names the offending field ('prompt', 'max_tokens'),
    `code` is 'context_length_exceeded' when the context is the limit."""

    def __init__(self, message: str, param: str, code: Optional[str] = None):
        super().__init__(message)
        self.param, self.code = param, code
_ids = itertools.count()


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int                      # new tokens at most
    temperature: float = 0.0             # 0: greedy
    top_p: float = 1.0
    seed: Optional[int] = None           # None: a fresh generator
    stop_token_ids: Tuple[int, ...] = ()  # finish (reason 'stop') after emitting one of these
    speculative: bool = True             # allow MTP drafts for this request (engine option permitting)


# sink(new_token_ids, finish_reason or None): called from the engine thread after every step that
# gives the request tokens, and once with its finish reason.
Sink = Callable[[List[int], Optional[str]], None]


@dataclass(eq=False)
class Request:
    prompt: Sequence[int]
    params: SamplingParams
    sink: Optional[Sink] = None
    request_id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    arrival: float = field(default_factory=time.monotonic)
    # engine-owned lifecycle
    slot: Optional[int] = None
    prefilled: int = 0                   # prompt tokens already in the slot's state
    cached_tokens: int = 0               # of those, restored from the prefix cache
    chunks: List[Tuple[int, int]] = field(default_factory=list)   # chunk_plan of the prompt
    output: List[int] = field(default_factory=list)
    pending: Optional[int] = None        # last sampled token, not yet fed to the model
    finish_reason: Optional[str] = None
    cancel_reason: Optional[str] = None  # set by cancel(); honoured at the next step
    first_token_time: Optional[float] = None
    finish_time: Optional[float] = None
    hidden: Optional[np.ndarray] = None  # MTP: H of the last window positions [w, hc, d]
    drafted: int = 0
    accepted: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.params.seed)

    @property
    def decoding(self) -> bool:
        return self.finish_reason is None and self.pending is not None

    @property
    def position(self) -> int:
        """Position of `pending` in the sequence."""
        return len(self.prompt) + len(self.output) - 1
