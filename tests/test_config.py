"""Configuration: presets, both config.json spellings, and validation errors that name the key."""
import json

import pytest

from ascend_v4.config import ConfigError, from_dict, load_config

# The HF-release config.json of DeepSeek-V4-Flash (facts of the release, V4_SPEC section 1).
HF_FLASH = {
    "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
    "hidden_size": 4096, "num_hidden_layers": 43, "num_attention_heads": 64,
    "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64, "q_lora_rank": 1024,
    "o_groups": 8, "o_lora_rank": 1024, "n_routed_experts": 256, "n_shared_experts": 1,
    "num_experts_per_tok": 6, "moe_intermediate_size": 2048, "num_hash_layers": 3,
    "num_nextn_predict_layers": 1, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
    "swiglu_limit": 10.0, "sliding_window": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000,
    "compress_rope_theta": 160000, "index_head_dim": 128, "index_n_heads": 64, "index_topk": 512,
    "hc_eps": 1e-6, "hc_mult": 4, "hc_sinkhorn_iters": 20, "vocab_size": 129280,
    "max_position_embeddings": 1048576, "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                     "original_max_position_embeddings": 65536, "type": "yarn"},
    "compress_ratios": [0, 0] + [4, 128] * 20 + [4, 0],
}


def test_hf_release_config_equals_flash_preset():
    hf = from_dict(HF_FLASH)
    flash = load_config("flash")
    for key in ("dim", "n_layers", "n_heads", "rope_head_dim", "moe_inter_dim", "n_activated_experts",
                "route_scale", "score_func", "n_hash_layers", "n_mtp_layers", "window_size",
                "compress_ratios", "original_seq_len", "rope_factor", "beta_fast", "dtype", "scale_fmt"):
        assert getattr(hf, key) == getattr(flash, key), key


def test_tiny_exercises_every_feature():
    cfg = load_config("tiny")
    ratios = cfg.compress_ratios[:cfg.n_layers]
    assert {0, 4, 128} <= set(ratios)
    assert cfg.n_hash_layers >= 1 and cfg.n_routed_experts >= 8 and cfg.hc_mult == 4
    assert cfg.n_mtp_layers == 1 and cfg.dtype == "fp8" and cfg.expert_dtype == "fp4"


def test_config_file_and_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF_FLASH))
    assert load_config(str(tmp_path)).dim == 4096
    assert load_config(str(tmp_path / "config.json")).n_layers == 43


@pytest.mark.parametrize("change,message", [
    ({"compress_ratios": [0, 4, 128, 4]}, "compress_ratios has 4 entries"),
    ({"head_dim": 64}, "head_dim (64) must be larger than rope_head_dim (64)"),
    ({"o_groups": 3}, "n_heads (4) must be divisible by o_groups (3)"),
    ({"score_func": "relu"}, "unknown score_func 'relu'"),
    ({"n_activated_experts": 9}, "n_activated_experts (9) exceeds n_routed_experts (8)"),
    ({"bogus_key": 1}, "unknown config key(s): bogus_key"),
    ({"dim": -4}, "dim must be a positive integer"),
    ({"compress_ratios": [0, 4, 128, 4, 4]}, "MTP block) must be 0"),
    ({"q_lora_rank": 96}, "q_lora_rank (96) must be a multiple of 128"),
    ({"compute_dtype": "float16"}, "compute_dtype must be float32 or float64"),
    ({"max_seq_len": 100}, "max_seq_len (100) must be a multiple of every compress ratio"),
])
def test_validation_errors_name_the_key(change, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", **change)
    assert message in str(err.value)


def test_runtime_options_are_apart_from_the_model_config():
    from ascend_v4.runtime import RuntimeConfig
    cfg = load_config("tiny", max_batch_size=4, compute_dtype="float64")
    assert cfg == load_config("tiny")                       # same model
    rt = RuntimeConfig.for_model(cfg, custom_ops=True)
    assert (rt.max_seq_len, rt.max_batch_size, rt.compute_dtype, rt.custom_ops, rt.prefill_chunk) == \
        (256, 4, "float64", True, 256)
    assert cfg.to_dict()["max_batch_size"] == 4             # written back to config.json as a hint
    with pytest.raises(ConfigError, match="unknown runtime option"):
        RuntimeConfig.for_model(cfg, max_tokens=3)
    with pytest.raises(ConfigError, match="prefill_chunk must be a positive integer"):
        RuntimeConfig.for_model(cfg, prefill_chunk=0)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="presets: flash, pro, small, tiny"):
        load_config("nano")


def test_bad_json_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))


@pytest.mark.parametrize("raw, expected", [(None, 1), ("3", 3), ("0", None), ("two", None), ("", None)])
def test_cpu_kernel_threads_come_from_the_environment(monkeypatch, raw, expected):
    from ascend_v4.api import CPU_THREADS_ENV, cpu_kernel_threads
    if raw is None:
        monkeypatch.delenv(CPU_THREADS_ENV, raising=False)
    else:
        monkeypatch.setenv(CPU_THREADS_ENV, raw)
    if expected is None:
        with pytest.raises(ConfigError, match=f"{CPU_THREADS_ENV} must be a positive integer, got {raw!r}"):
            cpu_kernel_threads()
    else:
        assert cpu_kernel_threads() == expected
