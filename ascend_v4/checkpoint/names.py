"""HF-release tensor names -> converted reference names (the renames of the release's convert.py).

`model.` is stripped; `self_attn` -> `attn`, `mlp` -> `ffn`, `weight_scale_inv` -> `scale`,
`e_score_correction_bias` -> `bias`; HF module names map onto the reference's
(embed_tokens -> embed, lm_head -> head, input_layernorm -> attn_norm, ...). The MTP block's
copies of the embedding and head are dropped: the model shares the main ones.
"""
from __future__ import annotations

from typing import Optional

# HF module name -> reference module name (one dotted component)
HF_MODULES = {
    "embed_tokens": "embed",
    "lm_head": "head",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "q_a_proj": "wq_a",
    "q_a_layernorm": "q_norm",
    "q_b_proj": "wq_b",
    "kv_a_layernorm": "kv_norm",
    "gate_proj": "w1",
    "down_proj": "w2",
    "up_proj": "w3",
    "self_attn": "attn",
    "mlp": "ffn",
    "weight_scale_inv": "scale",
    "e_score_correction_bias": "bias",
}
CONVERTED_MODULES = {v: k for k, v in HF_MODULES.items()}


def is_mtp_shared_copy(name: str) -> bool:
    """An MTP block's copy of the embedding or head (skipped, as the converter does)."""
    return name.startswith("mtp.") and ("emb" in name or name.endswith("head.weight"))


def hf_to_converted(name: str) -> Optional[str]:
    """Converted name of an HF-release tensor, or None when the converter drops it."""
    if name.startswith("model."):
        name = name[len("model."):]
    if is_mtp_shared_copy(name):
        return None
    return ".".join(HF_MODULES.get(part, part) for part in name.split("."))


def converted_to_hf(name: str) -> str:
    """Inverse of `hf_to_converted` for names it keeps (HF spellings; `model.` prefix except head)."""
    hf = ".".join(CONVERTED_MODULES.get(part, part) for part in name.split("."))
    return hf if hf.startswith("lm_head.") else "model." + hf
