"""Generated token ids -> the text a client sees, piece by piece: incremental detokenisation
(no broken UTF-8 in a stream) and stop strings (text up to the first stop string; a stream holds
back the tail that could still begin one). Without a tokenizer the text is the ids,
comma-separated."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple


class TextStream:
    def __init__(self, tokenizer, stops: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.ids: List[int] = []
        self.text = ""              # decoded so far (possibly past a stop string)
        self.sent = 0               # characters already handed out
        self.stopped = False        # a stop string was found; no more text after it
        self.tokens_used = 0        # ids up to the one that completed the stop string

    def _decoded(self) -> str:
        if self.tokenizer is None:
            return ",".join(str(t) for t in self.ids)
        return self.tokenizer.decode(self.ids)

    def feed(self, new_ids: Sequence[int], final: bool = False) -> str:
        """Take newly generated ids; return the text that can be sent now ('' if none)."""
        if self.stopped:
            return ""
        self.ids += list(new_ids)
        self.tokens_used = len(self.ids)
        self.text = self._decoded()
        end = len(self.text)
        hit = self._first_stop()
        if hit is not None:
            end = hit[0]
            self.stopped = True
            self.tokens_used = self._tokens_to(hit[0] + hit[1])
        elif not final:
            if self.text.endswith("\ufffd"):            # an incomplete UTF-8 sequence
                end = len(self.text.rstrip("\ufffd"))
            hold = max((len(s) - 1 for s in self.stops), default=0)
            end = max(self.sent, min(end, len(self.text) - hold))
        piece = self.text[self.sent:end]
        self.sent = end
        return piece

    def _first_stop(self) -> Optional[Tuple[int, int]]:
        """(index, length) of the earliest stop string in the text, or None."""
        hits = [(self.text.find(s), len(s)) for s in self.stops if s in self.text]
        return min(hits) if hits else None

    def _tokens_to(self, end: int) -> int:
        """The fewest ids whose text reaches `end` (the ids that completed the stop string)."""
        for n in range(1, len(self.ids) + 1):
            if len(self.tokenizer.decode(self.ids[:n])) >= end:
                return n
        return len(self.ids)

    @property
    def full_text(self) -> str:
        return self.text[:self.sent]
