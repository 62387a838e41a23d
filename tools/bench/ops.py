"""Benchmarks of the custom operators' CPU twins (`ascend-v4 bench --only ops`).

- sparse_fp8_decode (window 128 + top-k 512 over a MODEL1 FP8 cache) vs dense fp32 attention over the
  whole context, at 4K..256K tokens; bytes/s of each vs this machine's STREAM-like copy bandwidth.
- sinkhorn_mhc tokens/s: CPU twin vs numpy reference vs the same math as plain MindSpore ops (GRAPH_MODE).
- moe_dispatch + moe_combine tokens/s vs a per-expert Python loop like the official reference's.
All ratios come from one run on one machine.  The twins are functional emulations of AscendC kernels
(single-threaded, instruction by instruction), so their times say nothing about NPU speed.
"""
from __future__ import annotations

import numpy as np

from tools.bench.timing import best_of, stream_copy_bandwidth

H, DIM, WINDOW, TOPK = 64, 512, 128, 512


def bench_decode(contexts, bandwidth: float) -> list[dict]:
    import custom_ops as co
    from custom_ops.sparse_fp8_decode.reference import BF16_TOKEN_BYTES, TOKEN_BYTES, dense_attention_reference
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, H, DIM), dtype=np.float32)
    sink = rng.standard_normal(H, dtype=np.float32)
    scale = DIM ** -0.5
    rows = []
    for n in contexts:
        kv = rng.standard_normal((n, DIM), dtype=np.float32)
        cache = co.pack_kv_fp8(kv, 64)
        window = np.arange(n - WINDOW, n)
        older = rng.choice(n - WINDOW, size=min(TOPK, n - WINDOW), replace=False)
        idx = np.concatenate([window, older]).astype(np.int32)[None, :]
        t_sparse = best_of(lambda: co.sparse_fp8_decode(q, cache, idx, sink, scale), 5)
        t_dense = best_of(lambda: dense_attention_reference(q, kv, sink, scale), 3)
        sparse_bytes = idx.size * TOKEN_BYTES + q.nbytes
        dense_bytes = kv.nbytes + q.nbytes
        rows.append(dict(context=n, entries=int(idx.size), sparse_s=t_sparse, dense_s=t_dense,
                         speedup=t_dense / t_sparse, sparse_bytes_per_s=sparse_bytes / t_sparse,
                         dense_bytes_per_s=dense_bytes / t_dense,
                         sparse_bw_fraction=sparse_bytes / t_sparse / bandwidth,
                         dense_bw_fraction=dense_bytes / t_dense / bandwidth,
                         kv_bytes_per_token=TOKEN_BYTES, bf16_bytes_per_token=BF16_TOKEN_BYTES,
                         kv_bytes_ratio_vs_bf16=TOKEN_BYTES / BF16_TOKEN_BYTES))
        del kv, cache
    return rows


def _mindspore_sinkhorn(iters: int, eps: float):
    import mindspore as ms
    from mindspore import nn, ops
    ms.set_context(mode=ms.GRAPH_MODE)

    class Sinkhorn(nn.Cell):
        def construct(self, mixes, s, b):
            pre = ops.sigmoid(mixes[:, :4] * s[0] + b[:4]) + eps
            post = 2 * ops.sigmoid(mixes[:, 4:8] * s[1] + b[4:8])
            c = (mixes[:, 8:] * s[2] + b[8:]).reshape(-1, 4, 4)
            c = ops.softmax(c, -1) + eps
            c = c / (c.sum(-2, keepdims=True) + eps)
            for _ in range(iters - 1):
                c = c / (c.sum(-1, keepdims=True) + eps)
                c = c / (c.sum(-2, keepdims=True) + eps)
            return pre, post, c
    return Sinkhorn()


def bench_sinkhorn(tokens: int) -> dict:
    import custom_ops as co
    from mindspore import Tensor
    from custom_ops.sinkhorn_mhc.reference import sinkhorn_mhc_reference
    rng = np.random.default_rng(1)
    mixes = rng.standard_normal((tokens, 24), dtype=np.float32)
    s, b = rng.standard_normal(3, dtype=np.float32), rng.standard_normal(24, dtype=np.float32)
    net = _mindspore_sinkhorn(20, 1e-6)
    tm, ts, tb = Tensor(mixes), Tensor(s), Tensor(b)
    ms_out = net(tm, ts, tb)                                              # compile once
    err = float(np.abs(ms_out[2].asnumpy() - co.sinkhorn_mhc(mixes, s, b)[2]).max())
    t_twin = best_of(lambda: co.sinkhorn_mhc(mixes, s, b), 5, 0.3)
    t_ref = best_of(lambda: sinkhorn_mhc_reference(mixes, s, b), 5, 0.3)
    t_ms = best_of(lambda: net(tm, ts, tb)[2].asnumpy(), 5, 0.3)
    return dict(tokens=tokens, twin_tokens_per_s=tokens / t_twin, numpy_tokens_per_s=tokens / t_ref,
                mindspore_tokens_per_s=tokens / t_ms, twin_vs_numpy=t_ref / t_twin, twin_vs_mindspore=t_ms / t_twin,
                max_abs_diff_mindspore_vs_twin=err)


def bench_moe(tokens: int, hidden: int, experts: int = 256, topk: int = 6) -> dict:
    import custom_ops as co
    from custom_ops.moe_dispatch.reference import expert_loop_reference
    rng = np.random.default_rng(2)
    x = rng.standard_normal((tokens, hidden), dtype=np.float32)
    idx = np.argsort(rng.random((tokens, experts)), axis=1)[:, :topk].astype(np.int32)
    w = rng.random((tokens, topk), dtype=np.float32)

    def ours():
        r = co.moe_dispatch(x, idx, w, experts)
        return co.moe_combine(r.x, r)                                    # identity experts
    err = float(np.abs(ours() - expert_loop_reference(x, idx, w, experts)).max())
    t_ours = best_of(ours, 3)
    t_loop = best_of(lambda: expert_loop_reference(x, idx, w, experts), 3)
    return dict(tokens=tokens, hidden=hidden, experts=experts, topk=topk, twin_tokens_per_s=tokens / t_ours,
                loop_tokens_per_s=tokens / t_loop, twin_vs_loop=t_loop / t_ours, max_abs_diff=err)


def run(quick: bool = False) -> dict:
    bw = stream_copy_bandwidth(64 if quick else 256)
    contexts = [4096, 16384] if quick else [4096, 16384, 65536, 262144]
    return dict(
        machine_copy_bandwidth_bytes_per_s=bw,
        sparse_fp8_decode=bench_decode(contexts, bw),
        sinkhorn_mhc=bench_sinkhorn(1024 if quick else 4096),
        moe=bench_moe(4096, 512 if quick else 4096),
        notes="CPU twins run AscendC instruction by instruction on one thread; ratios are for this machine only.",
    )


def plot(result: dict, fig) -> None:
    ax = fig.subplots(1, 3)
    dec = result["sparse_fp8_decode"]
    ctx = [r["context"] for r in dec]
    ax[0].loglog(ctx, [r["dense_s"] * 1e3 for r in dec], "o-", label="dense fp32 (numpy)")
    ax[0].loglog(ctx, [r["sparse_s"] * 1e3 for r in dec], "s-", label="sparse_fp8_decode twin")
    ax[0].set(xlabel="context tokens", ylabel="ms per decode step (B=1, H=64)", title="decode attention")
    ax[0].legend()
    s = result["sinkhorn_mhc"]
    ax[1].bar(["twin", "numpy", "MindSpore"], [s["twin_tokens_per_s"], s["numpy_tokens_per_s"], s["mindspore_tokens_per_s"]])
    ax[1].set(ylabel="tokens/s", title=f"sinkhorn_mhc, {s['tokens']} tokens")
    m = result["moe"]
    ax[2].bar(["dispatch+combine twin", "per-expert loop"], [m["twin_tokens_per_s"], m["loop_tokens_per_s"]])
    ax[2].set(ylabel="tokens/s", title=f"MoE {m['experts']} experts top-{m['topk']}, D={m['hidden']}")
    fig.suptitle(f"custom ops (copy bandwidth {result['machine_copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s)")
