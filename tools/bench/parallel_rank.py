"""One rank of `ascend-v4 bench --only parallel` (run by `ascend-v4 launch`, or alone for EP1).

Loads a model sharded tp x ep and writes OUT.rank{r}.json with:
- resident weight bytes of this rank (parameters as held), split into routed experts and the rest;
- unless --load-only: the decode step time (every row active) and the time of the MoE exchange
  alone (dispatch + combine of one layer at the decode shape, no expert compute), times the number
  of MoE layers a decode step runs -> the share of the step spent in the exchange.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def resident_bytes(transformer):
    """(expert bytes, other bytes) of the parameters this rank holds."""
    experts = other = 0
    for name, p in transformer.parameters_and_names():
        n = int(np.prod(p.shape)) * p.itemsize
        if ".ffn.experts." in name:
            experts += n
        else:
            other += n
    return experts, other


def exchange_seconds(model, repeats: int) -> float:
    """Median seconds of one layer's dispatch + combine at the decode shape [max_batch tokens]."""
    from mindspore import Tensor, nn
    from ascend_v4.moe import ExpertExchange
    cfg, par = model.cfg, model.runtime.parallel
    k, d = cfg.n_activated_experts, cfg.dim

    class Exchange(nn.Cell):
        def __init__(self):
            super().__init__()
            self.ex = ExpertExchange(par, cfg.n_routed_experts)

        def construct(self, x, w, idx):
            rows, _, _, back = self.ex.dispatch(x, w, idx)
            return self.ex.combine(rows, back, idx.shape)                      # the rows stand in for outputs

    rng = np.random.default_rng(0)
    T = model.max_batch
    dt = np.float64 if model.runtime.compute_dtype == "float64" else np.float32
    x = Tensor(rng.standard_normal((T, d)).astype(dt))
    w = Tensor(rng.random((T, k)).astype(dt))
    idx = Tensor(rng.integers(0, cfg.n_routed_experts, (T, k)).astype(np.int32))
    net = Exchange()
    net(x, w, idx).asnumpy()                                                   # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(x, w, idx).asnumpy()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", help="preset or checkpoint folder")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--ep", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--load-only", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import ascend_v4
    from ascend_v4.parallel.lockstep import ranks_in_step
    t0 = time.perf_counter()
    model = ascend_v4.load(args.model, max_batch_size=args.max_batch, prefill_chunk=16, max_seq_len=256,
                           tensor_parallel=args.tp, expert_parallel=args.ep)
    experts, other = resident_bytes(model.transformer)
    result = {"rank": model.runtime.parallel.rank, "tp": args.tp, "ep": args.ep, "load_s": time.perf_counter() - t0,
              "expert_bytes": experts, "other_bytes": other, "resident_bytes": experts + other}
    if not args.load_only:
        B = model.max_batch
        with ranks_in_step(model) as driver:          # every rank runs the same calls
            if driver is not None:
                for row in range(B):
                    driver.prefill(np.arange(1, 17) + row, slot=row)
                tokens, steps = np.ones(B, np.int64), []
                driver.decode(tokens, driver.lengths.copy())                 # compile
                for _ in range(args.steps):
                    t1 = time.perf_counter()
                    driver.decode(tokens, driver.lengths.copy())
                    steps.append(time.perf_counter() - t1)
                result["decode_step_s"] = float(np.median(steps))
        layers = model.cfg.n_layers
        one = exchange_seconds(model, args.steps) if args.ep > 1 else 0.0
        result.update({"moe_layers_per_step": layers, "exchange_per_layer_s": one,
                       "exchange_per_step_s": one * layers})
    with open(f"{args.out}.rank{result['rank']}.json", "w", encoding="utf-8") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
