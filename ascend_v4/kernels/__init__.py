"""The kernel registry: which implementation runs each fusable operator of the model.

RuntimeConfig.kernels picks, for the whole model:
  'fused'      one C++ CPU kernel per call (fused_cpu.cpp via ops.Custom aot) for the block
               quant-dequant chain, the Sinkhorn split, RoPE and RMSNorm, and for decode-sized
               calls the mHC pre/post, attention with sinks, the compressor's one-token step and
               the weight-quant matmul: float32 and float64, bit-identical to the composite where
               it is exact (the default)
  'composite'  the chains as MindSpore primitives (ascend_v4/numerics.py, mhc.py): what graph
               export lowers to MindIR / ONNX, and the reference the fused kernels are tested on
custom_ops=True additionally routes the operator boundaries to the AscendC kernels' CPU twins
(sinkhorn_mhc, sparse_fp8_decode, kv_pack_fp8, moe_dispatch/combine): see custom_ops/.
Cells ask here (`QuantDequant(rt, fmt, block)`, `Rope(rt, rd)`, `rms_norm_op(kernels)`, `sinkhorn_kind(rt)`,
`FusedHcPre`, `FusedSinkAttention`, `FusedCompressorDecode`, `weight_matmul(...)`, `fused_route`,
`fused_swiglu`, `fused_topk_mask`, `fused_window_geometry`, `WeightMatmulPair` via linear.weight_pair)
instead of branching themselves.
The cache formats (RuntimeConfig.kv_cache / indexer_cache, docs/DESIGN.md 'Cache formats') are owned
here too: `KVEntryRound` rounds a KV entry as its cache stores it, `index_quant` the indexer's keys and
queries. 'int8' and 'bf16' run as composite primitives in both kernel modes (no fused kernel).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

from ascend_v4.numerics import FORMATS, int8_quant_dequant, quant_dequant, round_bf16
from ascend_v4.rope import apply_rope
from ascend_v4.runtime import RuntimeConfig

SOURCE = Path(__file__).resolve().parent / "fused_cpu.cpp"
KV_FP8_BLOCK = 64            # the release's KV nope tile (e4m3, ue8m0 scale)
KV_INT8_TILE = 64            # C8: symmetric INT8 per token per 64 nope dims (assumed tile, see DESIGN)
# per-tile KV quant of MlaProlog (kv_cache_quant_mode 3): amax >= 1e-4 as float32 (the operator's
# clamp is in fp32; a Python float enters the graph as float32 too, so this is exact in float64 runs)
KV_INT8_AMAX_FLOOR = float(np.float32(1e-4))
INDEX_FP4_BLOCK = 32


@functools.lru_cache(maxsize=None)
def library_path() -> str:
    """The fused kernels' shared object (compiled with g++ on first use, cached by source hash)."""
    from custom_ops.runtime.build import shared_object
    return str(shared_object("fused_cpu", SOURCE, []))


def _aot(entry: str, out_shape, out_dtype) -> ops.Custom:
    return ops.Custom(f"{library_path()}:{entry}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


class QuantDequant(nn.Cell):
    """x [..., K] -> x quant-dequantised to `fmt` in blocks of `block` along the last dim:
    'fp8' e4m3 | 'fp4' e2m1 with ue8m0 scales (numerics.quant_dequant: one fused kernel, or the
    composite chain); 'int8' symmetric with float scales max(amax, amax_floor) / 127
    (numerics.int8_quant_dequant); 'bf16' rounds every element (block unused)."""

    def __init__(self, rt: RuntimeConfig, fmt: str, block: int, amax_floor: float = 0.0, width: int = 0):
        super().__init__()
        self.fmt, self.block, self.floor = fmt, block, amax_floor
        self.fused = rt.kernels == "fused" and fmt in FORMATS
        self.params = FORMATS.get(fmt, ())
        if self.fused:
            # width > 0 (fused only): each row's first `width` dims only, the rest copied
            # (fused_cpu.cpp QuantDequantPrefix: a KV entry's nope dims before its rope dims)
            self.attrs = Tensor(np.array((block,) + self.params + ((width,) if width else ()), np.float64))
            self.op = _aot("QuantDequantAot", lambda x, a: x, lambda x, a: x)

    def construct(self, x):
        if self.fused:
            return self.op(x, self.attrs)
        if self.fmt == "int8":
            return int8_quant_dequant(x, self.block, self.floor)
        if self.fmt == "bf16":
            return round_bf16(x)
        return quant_dequant(x, self.block, *self.params)


class KVEntryRound(nn.Cell):
    """A KV entry [..., head_dim] (rope on its last `rope_dim` dims) as the KV cache holds it:
    'fp8' the nope dims e4m3 per 64 (ue8m0), rope dims as computed (the release);
    'bf16' (C16) every dim rounded to bf16; 'int8' (C8) the nope dims symmetric INT8 per 64-dim tile
    (scale max(amax, 1e-4) / 127), rope dims bf16."""

    def __init__(self, rt: RuntimeConfig, rope_dim: int, head_dim: int):
        super().__init__()
        self.fmt, self.rd = rt.kv_cache, rope_dim
        self.nope = self.whole = None           # bf16 rounds the whole entry in construct
        if self.fmt == "int8":
            self.nope = QuantDequant(rt, "int8", KV_INT8_TILE, KV_INT8_AMAX_FLOOR)
        elif self.fmt == "fp8" and rt.kernels == "fused":
            # one kernel quantises the nope dims and copies the rope dims
            self.whole = QuantDequant(rt, "fp8", KV_FP8_BLOCK, width=head_dim - rope_dim)
        elif self.fmt == "fp8":
            self.nope = QuantDequant(rt, "fp8", KV_FP8_BLOCK)

    def construct(self, kv):
        rd = self.rd
        if self.whole is not None:
            return self.whole(kv)
        if self.fmt == "bf16":
            return round_bf16(kv)
        rope = kv[..., -rd:]
        if self.fmt == "int8":
            rope = round_bf16(rope)
        return ops.concat((self.nope(kv[..., :-rd]), rope), -1)


def index_quant(rt: RuntimeConfig, head_dim: int) -> QuantDequant:
    """The indexer's key / query rounding (after the Hadamard rotation), per its cache format:
    'fp4' e2m1 per 32 (the release), 'int8' symmetric per token (keys) / per token-head (queries)."""
    if rt.indexer_cache == "int8":
        return QuantDequant(rt, "int8", head_dim)
    return QuantDequant(rt, "fp4", INDEX_FP4_BLOCK)


class FusedSinkhorn(nn.Cell):
    """mixes [..., (2+n)n] -> (pre [..., n], post [..., n], comb [..., n, n]) as one kernel;
    the same operation order as mhc.sinkhorn_split."""

    def __init__(self, n: int, iters: int, eps: float):
        super().__init__()
        self.n = n
        self.attrs = Tensor(np.array([n, iters, eps], np.float64))
        self.op = _aot("SinkhornSplitAot", lambda m, s, b, a: ([m[0], n], [m[0], n], [m[0], n, n]),
                       lambda m, s, b, a: (m, m, m))

    def construct(self, mixes, scale, base):
        lead, n = mixes.shape[:-1], self.n
        pre, post, comb = self.op(mixes.reshape(-1, mixes.shape[-1]), scale, base, self.attrs)
        return pre.reshape(lead + (n,)), post.reshape(lead + (n,)), comb.reshape(lead + (n, n))


class Rope(nn.Cell):
    """RoPE on the last `rd` dims of x [..rows.., (h,) D] by the rows' cos/sin [..rows.., rd/2]
    (inverse: by -angle), the first D - rd dims unchanged: one kernel (fused) or the slice /
    rotate / concat chain of rope.apply_rope (composite). Bit-identical either way."""

    def __init__(self, rt: RuntimeConfig, rd: int, inverse: bool = False):
        super().__init__()
        self.rd, self.inverse = rd, inverse
        self.fused = rt.kernels == "fused"
        if self.fused:
            self.attrs = Tensor(np.array([rd, float(inverse)], np.float64))
            self.op = _aot("RopeAot", lambda x, c, s, a: x, lambda x, c, s, a: x)

    def construct(self, x, cos, sin):
        headed = x.ndim == cos.ndim + 1                      # x has a head dim the angles broadcast over
        if self.fused and x.shape[:cos.ndim - 1] == cos.shape[:-1]:
            return self.op(x, cos, sin, self.attrs)
        if headed:
            cos, sin = cos.expand_dims(-2), sin.expand_dims(-2)
        rd = self.rd
        return ops.concat((x[..., :-rd], apply_rope(x[..., -rd:], cos, sin, self.inverse)), -1)


def rms_norm_op(kernels: str):
    """The one-kernel RMSNorm (x [.., d], weight [d] or a 1-element tensor for none, attrs [eps])
    under kernels 'fused', else None (numerics.rms_normalize's primitives)."""
    if kernels != "fused":
        return None
    return _aot("RmsNormAot", lambda x, w, a: x, lambda x, w, a: x)


class FusedHcPre(nn.Cell):
    """mHC pre of few tokens as one kernel (HcPreAot): X [b, s, n, d], fn, scale, base ->
    (u [b, s, d], post [b, s, n], comb [b, s, n, n]); mixes in float64 rounded once (as the
    oracle), then the fused Sinkhorn split."""

    def __init__(self, n: int, iters: int, hc_eps: float, norm_eps: float):
        super().__init__()
        self.n = n
        self.attrs = Tensor(np.array([n, iters, hc_eps, norm_eps], np.float64))
        self.op = _aot("HcPreAot", lambda x, f, s, b, a: ([x[0], x[2]], [x[0], n], [x[0], n], [x[0], n, n]),
                       lambda x, f, s, b, a: (x, x, x, x))

    def construct(self, X, fn, scale, base):
        b, s, n, d = X.shape
        u, pre, post, comb = self.op(X.reshape(b * s, n, d), fn, scale, base, self.attrs)
        return u.reshape(b, s, d), post.reshape(b, s, n), comb.reshape(b, s, n, n)


class FusedHcPost(nn.Cell):
    """mHC post as one kernel (HcPostAot): f [b, s, d], X [b, s, n, d], post, comb -> X'
    [b, s, n, d], X'_j = post_j f + sum_i comb[i, j] X_i."""

    def __init__(self):
        super().__init__()
        self.op = _aot("HcPostAot", lambda f, x, p, c: x, lambda f, x, p, c: x)

    def construct(self, f, X, post, comb):
        b, s, n, d = X.shape
        return self.op(f.reshape(b * s, d), X.reshape(b * s, n, d), post.reshape(b * s, n),
                       comb.reshape(b * s, n, n)).reshape(b, s, n, d)


class FusedCompressorDecode(nn.Cell):
    """One token per row into the compressor as one kernel (CompressorDecodeAot): kv, gate
    [b, 1, c*d], ape [m, c*d], kv_state / score_state [b, c*m, c*d], start / count int32 [b] ->
    (pooled [b, 1, d]: the entry, before `finish`, of the block the token completes, else 0,
    kv_state, score_state); the pooling softmax in float64 rounded once, as the oracle's pool_blocks."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.attrs = Tensor(np.array([head_dim], np.float64))
        self.op = _aot("CompressorDecodeAot",
                       lambda k, g, a, ks, ss, st, c, at: ([ks[0], head_dim], ks, ss),
                       lambda k, g, a, ks, ss, st, c, at: (k, k, k))

    def construct(self, kv, gate, ape, kv_state, score_state, start, count):
        b = kv.shape[0]
        pooled, kv_state, score_state = self.op(kv.reshape(b, -1), gate.reshape(b, -1), ape, kv_state,
                                                score_state, start, count, self.attrs)
        return pooled.reshape(b, 1, -1), kv_state, score_state


# multiply-adds per call up to which attention runs as one kernel (float64 loops: decode of the
# tiny configs; larger products keep the BLAS batched matmuls)
FUSED_ATTENTION_MACS = 1 << 21


class FusedSinkAttention(nn.Cell):
    """Attention with sinks as one kernel (SinkAttentionAot): q [b, s, h, d], the keys as 1-3
    segments keys [b, n_g, d] with masks [b, s, n_g] bool (attended as their concatenation,
    which is not built), sink [h] -> o [b, s, h, d], in float64 rounded once (the oracle's
    sparse_attention); used for calls of at most FUSED_ATTENTION_MACS multiply-adds."""

    def __init__(self, scale: float):
        super().__init__()
        self.attrs = Tensor(np.array([scale], np.float64))
        self.op = _aot("SinkAttentionAot", lambda q, *rest: q, lambda q, *rest: q)

    def construct(self, q, keys, masks, sink):
        if len(keys) == 1:
            return self.op(q, keys[0], masks[0], sink, self.attrs)
        if len(keys) == 2:
            return self.op(q, keys[0], masks[0], keys[1], masks[1], sink, self.attrs)
        return self.op(q, keys[0], masks[0], keys[1], masks[1], keys[2], masks[2], sink, self.attrs)


# checkpoint formats the fused weight-quant matmul reads (fused_cpu.cpp WeightKind)
WEIGHT_KINDS = {"bf16": 0, "fp8": 1, "fp4": 2}
# activation rows per weight matrix up to which the fused product runs (decode, small expert
# tiles): it reads each weight once, as stored; more rows go to dequantise + BLAS matmul
FUSED_MAX_ROWS = 16


class WeightMatmul(nn.Cell):
    """x @ dequant(W)^T as one kernel (fused_cpu.cpp WeightMatmulAot), W as stored (bf16 bits, FP8
    codes + ue8m0 128x128 bytes, FP4 pairs + 1x32 bytes): the CPU counterpart of Ascend's
    weight-quant matmul. plain: x [M, K], codes [N, Kc], scale -> [M, N]; experts: x [T, M, K],
    index [T], codes [E, N, Kc], scale [E, ..] -> [T, M, N]. Dequantised values are exact (as
    StoredWeight._dequant); products are summed in the compute dtype in 8 fixed lanes.
    grouped (a plain weight with a 3-D x): x [M, G, K], codes [G*N, Kc] -> [M, G, N], x[:, g]
    through rows g*N.. of the one matrix (the attention's grouped wo_a, in its token-major layout)."""

    def __init__(self, kind: str, out_features: int, experts: bool):
        super().__init__()
        self.experts = experts
        self.attrs = Tensor(np.array([WEIGHT_KINDS[kind]], np.float64))
        self.no_scale = Tensor(np.zeros(1, np.uint8))             # bf16 has no scale tensor
        if experts:
            self.op = _aot("WeightMatmulAot", lambda x, i, c, s, a: [x[0], x[1], out_features],
                           lambda x, i, c, s, a: x)
        else:
            self.op = _aot("WeightMatmulAot", lambda x, c, s, a: x[:-1] + [c[0] // x[1] if len(x) == 3 else c[0]],
                           lambda x, c, s, a: x)

    def construct(self, x, codes, scale=None, index=None):
        if scale is None:
            scale = self.no_scale
        if self.experts:
            return self.op(x, index, codes, scale, self.attrs)
        return self.op(x, codes, scale, self.attrs)


class WeightMatmulPair(nn.Cell):
    """Two weights of one format on the same x as one kernel (WeightMatmulPairAot), each product
    exactly as WeightMatmul's: plain x [M, K] -> ([M, Na], [M, Nb]); experts x [T, M, K] through
    index [T] of two stacks -> ([T, M, Na], [T, M, Nb]) (linear.paired_product)."""

    def __init__(self, kind: str, experts: bool):
        super().__init__()
        self.experts = experts
        self.attrs = Tensor(np.array([WEIGHT_KINDS[kind]], np.float64))
        self.no_scale = Tensor(np.zeros(1, np.uint8))
        if experts:
            self.op = _aot("WeightMatmulPairAot",
                           lambda x, i, ca, sa, cb, sb, a: (x[:2] + [ca[1]], x[:2] + [cb[1]]),
                           lambda x, i, ca, sa, cb, sb, a: (x, x))
        else:
            self.op = _aot("WeightMatmulPairAot", lambda x, ca, sa, cb, sb, a: ([x[0], ca[0]], [x[0], cb[0]]),
                           lambda x, ca, sa, cb, sb, a: (x, x))

    def construct(self, x, codes_a, scale_a, codes_b, scale_b, index=None):
        scale_a = self.no_scale if scale_a is None else scale_a
        scale_b = self.no_scale if scale_b is None else scale_b
        if self.experts:
            return self.op(x, index, codes_a, scale_a, codes_b, scale_b, self.attrs)
        return self.op(x, codes_a, scale_a, codes_b, scale_b, self.attrs)


def weight_matmul(kernels: str, kind: str, out_features: int, experts: bool):
    """The fused weight-quant matmul for a weight held as `kind`, or None (composite kernels, or
    a kind it does not read: int8 keeps its integer product, float weights use BLAS directly)."""
    if kernels != "fused" or kind not in WEIGHT_KINDS:
        return None
    return WeightMatmul(kind, out_features, experts)


# the router's score functions as RouteAot numbers them
SCORE_FUNCS = {"softmax": 0, "sigmoid": 1, "sqrtsoftplus": 2}


class FusedRoute(nn.Cell):
    """The gate's routing as one kernel (RouteAot): logits [T, E], bias [E] (score routing),
    experts [T, k] int32 (hash routing: tid2eid of the tokens) -> (weights [T, k], experts [T, k]
    int32). Scores in float64 as the oracle's moe.gate (top k of score + bias, descending, the
    lower expert on ties), weights renormalised (not softmax) x route_scale, rounded once."""

    def __init__(self, k: int, route_scale: float, score_func: str, hash_routed: bool, n_experts: int, dtype):
        super().__init__()
        self.attrs = Tensor(np.array([k, route_scale, SCORE_FUNCS[score_func], float(hash_routed)], np.float64))
        self.no_bias = Tensor(np.zeros(n_experts, dtype))          # hash routing has no bias
        self.no_experts = Tensor(np.zeros(1, np.int32))            # score routing chooses them
        self.op = _aot("RouteAot", lambda z, b, i, a: ([z[0], k], [z[0], k]), lambda z, b, i, a: (z, i))

    def construct(self, logits, bias=None, experts=None):
        return self.op(logits, self.no_bias if bias is None else bias,
                       self.no_experts if experts is None else experts, self.attrs)


class FusedSwiGlu(nn.Cell):
    """silu(min(gate, limit)) * clamp(up, -limit, limit) [* weight per row] as one kernel
    (SwiGluAot; limit 0: no clamp): gate, up [.., I], weight [..] (the leading dims) -> [.., I];
    silu in float64 rounded once (the oracle's silu), the products in the compute dtype."""

    def __init__(self, limit: float):
        super().__init__()
        self.plain = Tensor(np.array([limit, 0.0], np.float64))
        self.weighted = Tensor(np.array([limit, 1.0], np.float64))
        self.no_weight = Tensor(np.zeros(1, np.float32))            # read only with a weight
        self.op = _aot("SwiGluAot", lambda g, u, w, a: g, lambda g, u, w, a: g)

    def construct(self, gate, up, weight=None):
        if weight is None:
            return self.op(gate, up, self.no_weight, self.plain)
        return self.op(gate, up, weight, self.weighted)


class FusedTopKMask(nn.Cell):
    """The indexer's top-k selection as one kernel (TopKMaskAot): scores [.., n], visible bool
    [.., n] -> bool [.., n], the k largest visible scores with ties at the k-th value going to the
    lower entry index: the same choice as indexer.selected_mask's primitives (values compared
    exactly, in the compute dtype)."""

    def __init__(self, k: int):
        super().__init__()
        self.attrs = Tensor(np.array([k], np.float64))
        self.op = _aot("TopKMaskAot", lambda s, v, a: s, lambda s, v, a: v)

    def construct(self, scores, visible):
        return self.op(scores, visible, self.attrs)


def fused_topk_mask(kernels: str, k: int):
    """The one-kernel top-k selection under kernels 'fused', else None (selected_mask's primitives)."""
    return FusedTopKMask(k) if kernels == "fused" else None


class FusedWindowGeometry(nn.Cell):
    """attention.window_geometry of a step as one kernel (WindowGeometryAot): start, count int32
    [b], tokens [b, n] (its shape only) -> (pos, ring_vis, chunk_vis, ring_src, ring_hit), the
    primitives' integers and masks exactly."""

    def __init__(self, window: int):
        super().__init__()
        self.attrs = Tensor(np.array([window], np.float64))
        self.op = _aot("WindowGeometryAot",
                       lambda s, c, t, a: (t, t + [window], t + [t[1]], [t[0] * window], [t[0], window, 1]),
                       lambda s, c, t, a: (s, mstype.bool_, mstype.bool_, s, mstype.bool_))

    def construct(self, start, count, tokens):
        return self.op(start, count, tokens, self.attrs)


def fused_window_geometry(kernels: str, window: int):
    """The one-kernel window geometry under kernels 'fused', else None (the primitives)."""
    return FusedWindowGeometry(window) if kernels == "fused" else None


def fused_route(kernels: str, cfg, hash_routed: bool, dtype):
    """The one-kernel routing under kernels 'fused', else None (moe.route_scores' primitives)."""
    if kernels != "fused":
        return None
    return FusedRoute(cfg.n_activated_experts, cfg.route_scale, cfg.score_func, hash_routed,
                      cfg.n_routed_experts, dtype)


def fused_swiglu(kernels: str, limit: float):
    """The one-kernel SwiGLU under kernels 'fused', else None (the composite silu * up chain)."""
    return FusedSwiGlu(limit) if kernels == "fused" else None


class WeightDequant(nn.Cell):
    """A stored weight -> its values in the compute dtype as one kernel (fused_cpu.cpp DequantAot):
    `(codes, scale)` -> every matrix [*lead, out, in]; `(codes, scale, index [T])` -> experts
    [T, out, in]. The same exact values as the lookup chain of StoredWeight._dequant (four
    primitives and three full-size intermediates per weight; bf16's Cast costs 16 ns per element)."""

    def __init__(self, kind: str, shape, dtype):
        super().__init__()
        *lead, out, inp = shape
        # kind and in dim, in the compute dtype: the output's dtype is the attrs' (an op's inferred
        # type must follow its inputs: PyNative caches it by the input types)
        self.attrs = Tensor(np.array([WEIGHT_KINDS[kind], inp], dtype))
        self.no_scale = Tensor(np.zeros(1, np.uint8))
        self.op = _aot("DequantAot", lambda c, s, a: c[:-1] + [inp], lambda c, s, a: a)
        self.take_op = _aot("DequantAot", lambda c, s, i, a: i + [out, inp], lambda c, s, i, a: a)

    def construct(self, codes, scale=None, index=None):
        if scale is None:
            scale = self.no_scale
        if index is None:
            return self.op(codes, scale, self.attrs)
        return self.take_op(codes, scale, index, self.attrs)


def weight_dequant(kernels: str, kind: str, shape, dtype):
    """The one-kernel dequantisation of a weight held as `kind`, or None (composite kernels, or a
    kind it does not read)."""
    if kernels != "fused" or kind not in WEIGHT_KINDS:
        return None
    return WeightDequant(kind, shape, dtype)


def sinkhorn_kind(rt: RuntimeConfig) -> str:
    """'ascendc' (the sinkhorn_mhc twin, custom_ops), 'fused' or 'composite'."""
    if rt.custom_ops:
        return "ascendc"
    return "fused" if rt.kernels == "fused" else "composite"
