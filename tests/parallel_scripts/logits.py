"""One rank of a parallel parity run (or the single-process reference when tp = ep = 1).

Loads `tiny` (random weights, seed 0) sharded tp x ep, prefills two sequences (row 0: ordinary
tokens over several chunks; row 1: tokens whose hash-routed experts all live on EP rank 0, so
the other EP ranks receive none of them in layer 0), decodes 3 steps of both rows and writes
logits and the weight bytes the rank holds to OUT.rank{r}.npz."""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import ascend_v4  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--tp", type=int, default=1)
ap.add_argument("--ep", type=int, default=1)
ap.add_argument("--dtype", default="float64")
ap.add_argument("--placement", help="expert ids per EP rank, JSON (redundant copies allowed)")
ap.add_argument("--out", required=True)
args = ap.parse_args()

model = ascend_v4.load("tiny", compute_dtype=args.dtype, max_batch_size=2, prefill_chunk=16,
                       tensor_parallel=args.tp, expert_parallel=args.ep,
                       expert_placement=json.loads(args.placement) if args.placement else None)
cfg = model.cfg
rng = np.random.default_rng(7)
row0 = rng.integers(0, cfg.vocab_size, 37)
tid2eid = model.transformer.layers[0].ffn.gate.tid2eid.asnumpy()
first_half = np.flatnonzero((tid2eid < cfg.n_routed_experts // 2).all(1))
row1 = rng.choice(first_half, 9)
out = {"prefill0": model.prefill(row0, slot=0), "prefill1": model.prefill(row1, slot=1),
       "row1_ids": row1}
tokens = np.array([row0[-1], row1[-1]])
for step in range(3):
    logits = model.decode(tokens, model.lengths.copy())
    out[f"decode{step}"] = logits
    tokens = logits.argmax(-1)
held = {"expert_bytes": 0, "other_bytes": 0}          # weight bytes this rank holds
for name, p in model.transformer.parameters_and_names():
    held["expert_bytes" if ".ffn.experts." in name else "other_bytes"] += int(np.prod(p.shape)) * p.itemsize
out.update(held)
rank = int(os.environ.get("RANK_ID", "0"))
np.savez(f"{args.out}.rank{rank}.npz", **out)
print("done rank", rank, flush=True)
