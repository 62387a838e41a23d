"""Parameter counts (published targets + an independent closed-form count) and `ascend-v4 inspect`."""
import json
import os

import pytest
from click.testing import CliRunner

from ascend_v4.checkpoint import write_random_checkpoint
from ascend_v4.config import load_config
from ascend_v4.params import count_params, count_parameters, weight_memory
from tools.cli import main


def closed_form(c):
    """(main total, mtp, active) from config fields alone, following inference/model.py."""
    d, q, H, hd, E, k = c.dim, c.q_lora_rank, c.n_heads, c.head_dim, c.n_routed_experts, c.n_activated_experts
    ffn_expert = 3 * d * c.moe_inter_dim
    hc = 2 * (c.mix_hc * c.hc_mult * d + c.mix_hc + 3)

    def compressor(r, h):
        coff = 2 if r == 4 else 1
        return r * coff * h + 2 * coff * h * d + h

    def block(i):
        r = c.compress_ratios[i]
        attn = d * q + q + q * H * hd + d * hd + hd + c.o_lora_rank * H * hd + c.o_groups * c.o_lora_rank * d + H
        if r:
            attn += compressor(r, hd)
        if r == 4:
            attn += q * c.index_n_heads * c.index_head_dim + c.index_n_heads * d + compressor(4, c.index_head_dim)
        gate = E * d + (0 if i < c.n_hash_layers else E)
        dense = attn + gate + ffn_expert + 2 * d + hc            # shared expert, two norms, mHC
        return dense, E * ffn_expert

    head_mix = c.hc_mult * c.hc_mult * d + c.hc_mult + 1
    total = active = 2 * c.vocab_size * d + d + head_mix
    active -= c.vocab_size * d                                   # embedding row lookup
    for i in range(c.n_layers):
        dense, routed = block(i)
        total += dense + routed
        active += dense + routed * k // E
    mtp = sum(sum(block(c.n_layers + j)) + 2 * d * d + 3 * d + head_mix for j in range(c.n_mtp_layers))
    return total, mtp, active


@pytest.mark.parametrize("preset,total,active", [("flash", 284e9, 13e9), ("pro", 1.6e12, 49e9)])
def test_published_totals(preset, total, active):
    n = count_parameters(load_config(preset))
    assert abs(n.total / total - 1) < 0.02, n.total
    assert abs(n.active / active - 1) < 0.05, n.active
    assert count_params(load_config(preset))["total"] == n.total


@pytest.mark.parametrize("preset", ["flash", "pro", "tiny"])
def test_counts_match_closed_form(preset):
    cfg = load_config(preset)
    n = count_parameters(cfg)
    total, mtp, active = closed_form(cfg)
    assert (n.total, n.mtp) == (total, mtp)
    assert abs(n.active - active) <= 1


def test_weight_memory_equals_bytes_written(tmp_path):
    cfg = load_config("tiny")
    for fmt in ("fp8", "bf16"):
        d = write_random_checkpoint(cfg, str(tmp_path / fmt), fmt)
        path = os.path.join(d, "model0-mp1.safetensors")
        with open(path, "rb") as fh:
            header = int.from_bytes(fh.read(8), "little")
        mem = weight_memory(cfg, fmt)
        assert mem["total"] == os.path.getsize(path) - 8 - header
    mem = weight_memory(load_config("flash"))
    # FP4 experts: 0.5 byte per parameter + one 1-byte scale per 32 (43 layers + MTP)
    per_expert = 3 * 4096 * 2048
    assert mem["fp4"] == 44 * 256 * (per_expert // 2 + per_expert // 32)
    assert weight_memory(load_config("flash"), "bf16")["fp4"] == 0


def test_cli_inspect_text_json_and_checkpoint(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["inspect", "tiny"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    layer_lines = lines[lines.index("layers:") + 1:]
    assert [ln.split(None, 1)[1] for ln in layer_lines] == [
        "window                 hash-routed MoE (tid2eid)",
        "CSA ratio 4 + indexer  score-routed MoE",
        "HCA ratio 128          score-routed MoE",
        "CSA ratio 4 + indexer  score-routed MoE",
        "window                 score-routed MoE"]
    assert layer_lines[-1].split()[0] == "mtp.0"
    for key in ("FP8", "FP4", "BF16", "FP32", "INT32", "total"):
        assert any(ln.strip().startswith(key) for ln in lines), key
    js = json.loads(runner.invoke(main, ["inspect", "flash", "--json"]).output)
    n = count_parameters(load_config("flash"))
    assert js["parameters"]["total"] == n.total and js["parameters"]["active"] == n.active
    assert f"{n.total / 1e9:.2f}B" in runner.invoke(main, ["inspect", "flash"]).output
    assert len(js["layers"]) == 44 and js["layers"][3]["attention"] == "HCA ratio 128"
    assert js["weight_memory_bytes"] == weight_memory(load_config("flash"))
    d = write_random_checkpoint(load_config("tiny"), str(tmp_path / "ck"), "bf16")
    js = json.loads(runner.invoke(main, ["inspect", d, "--json"]).output)
    assert js["kind"] == "checkpoint (converted layout)" and js["weight_format"] == "bf16"
    assert js["weight_memory_bytes"]["fp8"] == 0
    res = runner.invoke(main, ["inspect", os.path.join(d, "config.json")])
    assert res.exit_code == 0 and "(config:" in res.output


def test_cli_inspect_bad_arguments(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["inspect", "nosuchpreset"])
    assert res.exit_code != 0 and "unknown preset or missing file 'nosuchpreset'" in res.output
    assert "Traceback" not in res.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**load_config("tiny").to_dict(), "compress_ratios": [0, 4]}))
    res = runner.invoke(main, ["inspect", str(bad)])
    assert res.exit_code != 0 and "compress_ratios has 2 entries" in res.output
    d = write_random_checkpoint(load_config("tiny"), str(tmp_path / "ck"))
    with open(os.path.join(d, "model0-mp1.safetensors"), "r+b") as fh:
        fh.truncate(1000)
    res = runner.invoke(main, ["inspect", d])
    assert res.exit_code != 0 and "model0-mp1.safetensors: truncated" in res.output
    assert "Traceback" not in res.output
