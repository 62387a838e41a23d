"""MindSpore bindings: ops.Custom(func_type="aot") cells calling the CPU twins (GRAPH_MODE and PyNative).

Each factory returns an nn.Cell; use it inside a model Cell's construct like any other op.  Scalars are
passed as constant tensors (the aot interface has no attributes).  On Ascend the same cells would point at
the CANN custom-op package instead (custom_ops/README.md, "Ascend build").
"""
from __future__ import annotations

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from custom_ops.runtime.build import twin_library, twin_library_path


def _aot(twin: str, func: str, out_shape, out_dtype) -> ops.Custom:
    from custom_ops.runtime.claims import claimed_socs, require_claim
    from custom_ops.runtime.soc_spec import get_soc
    require_claim(twin, claimed_socs(twin), get_soc().profile)   # a SoC the kernel does not claim
    twin_library(twin)  # build + apply the SoC selection in this process
    return ops.Custom(f"{twin_library_path(twin)}:{func}", out_shape=out_shape, out_dtype=out_dtype,
                      func_type="aot")


class SinkhornMhcOp(nn.Cell):
    """(mixes [T, (2+n)n] f32, hc_scale [3], hc_base [(2+n)n]) -> (pre [T,n], post [T,n], comb [T,n,n])."""

    def __init__(self, hc_mult: int = 4, iters: int = 20, eps: float = 1e-6):
        super().__init__()
        n = hc_mult
        self.attrs = Tensor(np.array([iters, eps], np.float32))
        self.op = _aot("sinkhorn_mhc", "SinkhornMhcAot",
                       lambda m, s, b, a: ([m[0], n], [m[0], n], [m[0], n, n]),
                       lambda m, s, b, a: (ms.float32, ms.float32, ms.float32))

    def construct(self, mixes, hc_scale, hc_base):
        return self.op(mixes, hc_scale, hc_base, self.attrs)


def sinkhorn_mhc_op(hc_mult: int = 4, iters: int = 20, eps: float = 1e-6) -> SinkhornMhcOp:
    return SinkhornMhcOp(hc_mult, iters, eps)


class SparseFp8DecodeOp(nn.Cell):
    """(q [B,H,512] f32, cache u8 [n1, P*584], indices [B,K] i32, extra_cache u8 [n2, P2*584],
    extra_indices [B,K2] i32, attn_sink [H] f32) -> (out [B,H,512] f32, lse [B,H] f32).
    With no compressed cache pass custom_ops.sparse_fp8_decode.binding.NO_EXTRA_CACHE and indices of -1."""

    def __init__(self, softmax_scale: float):
        super().__init__()
        self.attrs = Tensor(np.array([softmax_scale], np.float32))
        self.op = _aot("sparse_fp8_decode", "SparseFp8DecodeAot",
                       lambda q, c, i, c2, i2, s, a: ([q[0], q[1], q[2]], [q[0], q[1]]),
                       lambda q, c, i, c2, i2, s, a: (ms.float32, ms.float32))

    def construct(self, q, cache, indices, extra_cache, extra_indices, attn_sink):
        return self.op(q, cache, indices, extra_cache, extra_indices, attn_sink, self.attrs)


def sparse_fp8_decode_op(softmax_scale: float) -> SparseFp8DecodeOp:
    return SparseFp8DecodeOp(softmax_scale)


class MoeDispatchOp(nn.Cell):
    """(x [T,D] f32/bf16, topk_idx [T,k] i32, topk_weights [T,k] f32) -> (recv_x, recv_scale, recv_weights,
    recv_token, slot_of, expert_counts, expert_offsets, rank_counts, rank_token_counts); see DispatchResult."""

    def __init__(self, num_experts: int, ep_size: int = 1, fp8: bool = False):
        super().__init__()
        e, ep = num_experts, ep_size
        self.attrs = Tensor(np.array([num_experts, ep_size, int(fp8)], np.int32))
        payload = (lambda x: ms.uint8) if fp8 else (lambda x: x)
        self.op = _aot("moe_dispatch", "MoeDispatchAot",
                       lambda x, i, w, a: ([x[0] * i[1], x[1]], [x[0] * i[1], (x[1] + 127) // 128], [x[0] * i[1]],
                                           [x[0] * i[1]], [x[0], i[1]], [e], [e + 1], [ep], [ep]),
                       lambda x, i, w, a: (payload(x), ms.uint8, ms.float32, ms.int32, ms.int32, ms.int32,
                                           ms.int32, ms.int32, ms.int32))

    def construct(self, x, topk_idx, topk_weights):
        return self.op(x, topk_idx, topk_weights, self.attrs)


def moe_dispatch_op(num_experts: int, ep_size: int = 1, fp8: bool = False) -> MoeDispatchOp:
    return MoeDispatchOp(num_experts, ep_size, fp8)


class MoeCombineOp(nn.Cell):
    """(expert_out [N,D] f32/bf16, slot_of [T,k] i32, topk_weights [T,k] f32) -> y [T,D] f32."""

    def __init__(self):
        super().__init__()
        self.op = _aot("moe_combine", "MoeCombineAot", lambda eo, s, w: [s[0], eo[1]], lambda eo, s, w: ms.float32)

    def construct(self, expert_out, slot_of, topk_weights):
        return self.op(expert_out, slot_of, topk_weights)


def moe_combine_op() -> MoeCombineOp:
    return MoeCombineOp()


class KvPackFp8Op(nn.Cell):
    """(cache u8 [blocks, P*584], entries [N,512] f32, slots [N] i32) -> the cache with those slots written
    (a new tensor; -1 = skip)."""

    def __init__(self):
        super().__init__()
        self.op = _aot("kv_pack_fp8", "KvPackFp8Aot", lambda c, e, s: c, lambda c, e, s: ms.uint8)

    def construct(self, cache, entries, slots):
        return self.op(cache, entries, slots)


def kv_pack_fp8_op() -> KvPackFp8Op:
    return KvPackFp8Op()


def last_twin_error(twin: str) -> str:
    """The message of the last failure of a twin (MindSpore only reports the error code)."""
    return twin_library(twin).ascendc_twin_last_error().decode(errors="replace")
