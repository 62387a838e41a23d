"""MTP speculative decoding: the MTP block drafts one token per row, the main model verifies
the row's pending token and the draft in one `Model.step` of the whole batch, and a rejected
draft is rolled back exactly (the state before the step is restored and the kept tokens are run
again, so window ring, compressor and indexer state are those of the accepted tokens only).

Acceptance: greedy rows accept the draft iff it is the main model's argmax; sampled rows accept
it with probability p(draft) and otherwise sample from p with the draft removed (speculative
sampling with a point-mass draft), so outputs follow the model's distribution exactly.

A request stops drafting once its acceptance after PROBE_DRAFTS drafts is below MIN_ACCEPTANCE
(an MTP head that does not predict this text, e.g. random weights, would only cost steps); when
no row drafts, `step` returns None and the engine runs the plain decode step."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ascend_v4.config import ConfigError
from ascend_v4.engine.request import Request
from ascend_v4.sampling import probabilities, sample_one


PROBE_DRAFTS, MIN_ACCEPTANCE = 8, 0.25


def worth_drafting(r: Request) -> bool:
    return r.drafted < PROBE_DRAFTS or r.accepted >= MIN_ACCEPTANCE * r.drafted


class MtpSpeculator:
    def __init__(self, model):
        if model.cfg.n_mtp_layers < 1:
            raise ConfigError("--speculative mtp: this model has no MTP block (n_mtp_layers is 0)")
        self.model = model
        self.window = model.cfg.window_size       # the MTP block attends this many positions
        self.last = (0, 0)                          # (drafted, accepted) of the latest step

    def warm_up(self, positions: np.ndarray) -> None:
        """Compile the verify step and the draft head (slot 0 continues at positions[0])."""
        m = self.model
        m.mtp_draft(np.zeros((m.max_batch, self.window) + m.hidden.shape[2:], m.hidden_dtype),
                    np.zeros((m.max_batch, self.window), np.int64))
        m.step(np.zeros((m.max_batch, 2), np.int64), positions, (positions >= 0) * 2)

    def remember(self, r: Request, hidden: np.ndarray) -> None:
        """Keep the main model's streams H [n, hc, d] of r's newest positions (the last window)."""
        r.hidden = hidden[-self.window:] if r.hidden is None else \
            np.concatenate([r.hidden, hidden], 0)[-self.window:]

    def _drafts(self, rows: List[Request]) -> dict:
        """slot -> MTP draft token for the rows worth drafting (room left in context and max_tokens)."""
        m = self.model
        want = [r for r in rows if r.params.speculative and r.hidden is not None and worth_drafting(r)
                and r.position + 1 < m.max_seq_len and len(r.output) + 1 < r.params.max_tokens]
        if not want:
            return {}
        B, W = m.max_batch, self.window
        H = np.zeros((B, W) + want[0].hidden.shape[1:], m.hidden_dtype)
        nxt = np.zeros((B, W), np.int64)
        for r in want:
            h = r.hidden                                     # positions position-w .. position-1
            seq = (list(r.prompt) + r.output)[-len(h):]      # the token after each of them
            pad = W - len(h)                                 # short history: repeat the first entry
            H[r.slot] = np.concatenate([np.repeat(h[:1], pad, 0), h], 0)
            nxt[r.slot] = [seq[0]] * pad + seq
        logits = m.mtp_draft(H, nxt)
        return {r.slot: int(np.argmax(logits[r.slot])) for r in want}

    def step(self, rows: List[Request]) -> Optional[List[Tuple[Request, List[int]]]]:
        """Draft, verify, roll back -> (request, accepted tokens) per row; None if no row drafts."""
        m = self.model
        drafts = self._drafts(rows)
        self.last = (0, 0)
        if not drafts:
            return None
        B = m.max_batch
        ids, pos, count = np.zeros((B, 2), np.int64), np.full(B, -1, np.int64), np.zeros(B, np.int64)
        for r in rows:
            ids[r.slot, 0], pos[r.slot], count[r.slot] = r.pending, r.position, 1
            if r.slot in drafts:
                ids[r.slot, 1], count[r.slot] = drafts[r.slot], 2
        before = m.snapshot()
        logits, H = m.step(ids, pos, count)
        kept, out = count.copy(), []
        for r in rows:
            s, p = r.slot, r.params
            if s not in drafts:
                tokens = [sample_one(logits[s, 0], p.temperature, r.rng, p.top_p)]
            else:
                d = drafts[s]
                first = self._verify(logits[s, 0], d, r)
                tokens = [d, sample_one(logits[s, 1], p.temperature, r.rng, p.top_p)] if first is None else [first]
                r.drafted += 1
                r.accepted += first is None
            kept[s] = len(tokens)
            self.remember(r, H[s, :len(tokens)])
            out.append((r, tokens))
        if (kept < count).any():                   # roll rejected drafts back exactly
            m.restore(before)
            m.step(ids, pos, np.minimum(kept, count))
        self.last = (len(drafts), sum(len(t) == 2 for r, t in out if r.slot in drafts))
        return out

    @staticmethod
    def _verify(logits: np.ndarray, draft: int, r: Request):
        """None if the draft is accepted, else the token to emit instead."""
        p = r.params
        if p.temperature == 0:
            best = int(np.argmax(logits))
            return None if best == draft else best
        q = probabilities(logits, p.temperature, p.top_p)
        if r.rng.random() < q[draft]:
            return None
        q[draft] = 0.0
        return int(r.rng.choice(q.shape[-1], p=q / q.sum()))
