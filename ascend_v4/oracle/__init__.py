"""Independent plain-numpy oracle of the DeepSeek-V4 forward (V4_SPEC.md + reference inference/).

Written from the spec and the official reference only (no code from ascend_v4 beyond config and
file reading), to check the MindSpore cells layer by layer and end to end.

    W = dequantize(tensors, cfg)                  # stored checkpoint arrays -> float32 + formats
    logits, H = forward_all(cfg, W, ids)          # ids [b, s] -> [b, s, vocab], [b, s, n, dim]
    mtp_logits = mtp_forward_all(cfg, W, H, ids)  # [b, s, vocab]
    engram.attach(W, cfg, folder, cmap)           # Engram models: tables + compressed-id map first

Numerics: float32 everywhere (float64 in softmax, attention, RoPE angles, norms' mean); the
reference's bf16 rounding of activations between operators is NOT emulated. Quantisation
simulation that the reference performs IS reproduced: fp8 activation quant-dequant before every
fp8/fp4-weight linear (tiles of 128, ue8m0 scales when cfg.scale_fmt == 'ue8m0'), fp8 q-dq of
the KV non-rope dims (tiles of 64), Hadamard + FP4 q-dq in the indexer. Top-k ties (indexer,
expert gate) go to the lower index (stable descending sort); the reference's order is undefined.
A linear whose input dim is not a multiple of 128 (tiny: q_lora_rank 96) quantises the short
last tile on its own (the reference asserts divisibility instead).

Comparing with another implementation: fp32 noise from a different operation order
occasionally moves a value across an fp8/fp4 rounding boundary (or an amax across a power of
two), which changes that token's output by ~1e-3..1e-1 and then propagates through later
layers and decode steps. Compare sublayers/blocks on identical inputs (`attention_layer`,
`moe_layer`, `block_forward`) for tight tolerances; end to end, expect rare such outliers.
"""
from .attention import attention_layer, block_prefix, sparse_attention, window_mask
from . import engram
from .compressor import compressor_entries, indexer_topk, pool_blocks, visible_mask
from .hc import hc_head, hc_post, hc_pre, sinkhorn
from .model import block_forward, forward_all, forward_layers, mtp_forward_all
from .moe import expert, gate, moe_layer
from .numerics import (e2m1_round, fp4_quant_dequant, fp8_quant_dequant, hadamard, precision, real,
                       hadamard_matrix, pow2_ceil, rms_norm, rope, rope_frequencies)
from .weights import WeightError, dequantize, linear, unpack_fp4

__all__ = [
    "attention_layer", "block_prefix", "sparse_attention", "window_mask", "compressor_entries",
    "indexer_topk", "pool_blocks", "visible_mask", "hc_head", "hc_post", "hc_pre", "sinkhorn",
    "block_forward", "forward_all", "forward_layers", "mtp_forward_all", "expert", "gate", "moe_layer",
    "e2m1_round", "fp4_quant_dequant", "fp8_quant_dequant", "hadamard", "hadamard_matrix",
    "pow2_ceil", "rms_norm", "rope", "rope_frequencies", "WeightError", "dequantize", "linear",
    "unpack_fp4", "precision", "real", "engram",
]
