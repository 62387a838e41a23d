"""Deployment planner model: parameter counts, bytes by format, KV cache, placement, roofline,
catalogue validation and the published-deployment validation table (tools/deploy).

Tolerances are stated next to each check. Oracles are written independently of the planner
code (explicit tensor lists, numpy array sizes), not by calling the function under test twice.
"""
import math

import numpy as np
import pytest
import yaml

from ascend_v4.config import load_config
from tools.deploy import PlanError
from tools.deploy import calibration as cal
from tools.deploy.catalogue import builtin_names, load_cluster, load_npu
from tools.deploy.memory import Layout, moe_hccl_buffer_bytes, rank_budget
from tools.deploy.model_stats import CACHE_FORMATS, matrix_bytes, v4_param_counts, v4_stats
from tools.deploy.placement import place_experts, rank_loads
from tools.deploy.planner import Request, plan
from tools.deploy.reference_models import r1_stats
from tools.deploy.roofline import decode_step
from tools.deploy.units import parse_rate, parse_time, parse_tokens


# ---- units -----------------------------------------------------------------------------------
def test_parse_sizes_times_rates():
    assert parse_tokens("128K") == 131072 and parse_tokens("1M") == 1048576
    assert parse_tokens("4096") == 4096 and parse_tokens("1.5K") == 1536
    assert parse_time("50ms") == pytest.approx(0.05) and parse_time("0.2s") == pytest.approx(0.2)
    assert parse_time("800us") == pytest.approx(8e-4)
    assert parse_rate("200k") == 2e5 and parse_rate("1.5M/s") == 1.5e6
    for bad, fn, word in [("1X", parse_tokens, "--context"), ("0", parse_tokens, "--context"),
                          ("0.3K", parse_tokens, "whole"), ("50", parse_time, "unit"),
                          ("fast", parse_rate, "--prefill-throughput")]:
        with pytest.raises(PlanError, match=word):
            fn(bad)


# ---- parameter counts (published sizes) ----------------------------------------------------
@pytest.mark.parametrize("name,total,active,tol_total,tol_active", [
    ("flash", 284e9, 13e9, 0.02, 0.05),     # DeepSeek-V4 release: 284B total, 13B activated
    ("pro", 1.6e12, 49e9, 0.02, 0.05),      # 1.6T total, 49B activated
])
def test_v4_param_counts_match_published(name, total, active, tol_total, tol_active):
    p = v4_param_counts(load_config(name))
    assert abs(p["total"] / total - 1) < tol_total, p
    assert abs(p["active"] / active - 1) < tol_active, p


def test_r1_reference_counts_match_published():
    p = r1_stats().params()                  # DeepSeek-V3 report: 671B total, 37B activated
    assert abs(p["total"] / 671e9 - 1) < 0.02 and abs(p["active"] / 37e9 - 1) < 0.05


def _tiny_param_oracle(c):
    """Independent count of the tiny preset from V4_SPEC section 10 tensor names."""
    d, q, H, hd, g, o = c.dim, c.q_lora_rank, c.n_heads, c.head_dim, c.o_groups, c.o_lora_rank
    E, m, n = c.n_routed_experts, c.moe_inter_dim, c.hc_mult
    mix = (2 + n) * n
    total = 2 * c.vocab_size * d + d + n * n * d + n + 1          # embed, head, norm, hc_head
    for i in range(c.n_layers):
        r = c.compress_ratios[i]
        blk = q * d + q + H * hd * q + hd * d + hd + g * o * (H * hd // g) + d * g * o + H
        blk += 2 * d + 2 * (mix * n * d + mix + 3)
        if r:
            cc = 2 if r == 4 else 1
            blk += r * cc * hd + 2 * cc * hd * d + hd
        if r == 4:
            ih, idim = c.index_n_heads, c.index_head_dim
            blk += ih * idim * q + ih * d + 4 * 2 * idim + 2 * 2 * idim * d + idim
        blk += E * d + (c.vocab_size * c.n_activated_experts if i < c.n_hash_layers else E)
        blk += E * 3 * d * m + 3 * d * m
        total += blk
    return total


def test_param_count_tiny_equals_tensor_list_oracle():
    cfg = load_config("tiny")
    assert v4_param_counts(cfg)["total"] == _tiny_param_oracle(cfg)


# ---- bytes by format ---------------------------------------------------------------------
@pytest.mark.parametrize("rows,cols", [(256, 300), (96, 128), (4096, 7168), (33, 64)])
def test_matrix_bytes_against_numpy_buffers(rows, cols):
    fp8 = np.zeros((rows, cols), np.uint8).nbytes + \
        np.zeros((-(-rows // 128), -(-cols // 128)), np.uint8).nbytes   # e4m3 + ue8m0 blocks
    fp4 = np.zeros((rows, cols // 2), np.uint8).nbytes + \
        np.zeros((rows, -(-cols // 32)), np.uint8).nbytes               # e2m1 x2 + ue8m0 1x32
    int8 = np.zeros((rows, cols), np.int8).nbytes + np.zeros(rows, np.float32).nbytes
    assert matrix_bytes(rows, cols, "fp8") == fp8
    assert matrix_bytes(rows, cols, "fp4") == fp4
    assert matrix_bytes(rows, cols, "int8") == int8
    assert matrix_bytes(rows, cols, "bf16") == 2 * rows * cols


def test_native_flash_weights_near_release_size():
    # The release's safetensors total 148.66 GiB (llm-cal page for DeepSeek-V4-Flash,
    # 'safetensors bytes 148.66 GB [verified]', read as GiB = 159.6e9 bytes); we count 161.1e9.
    total = sum(v4_stats(load_config("flash")).weight_bytes("native").values())
    assert abs(total / (148.66 * 2 ** 30) - 1) < 0.02


# ---- KV cache ------------------------------------------------------------------------------
@pytest.mark.parametrize("ctx", [4096, 131072, 1048576])
@pytest.mark.parametrize("cache", ["fp8", "bf16"])
def test_kv_cache_bytes_per_sequence(ctx, cache):
    cfg = load_config("flash")
    entry, key = CACHE_FORMATS[cache]["entry"], CACHE_FORMATS[cache]["index_key"]
    expect = 0
    for r in cfg.compress_ratios:             # 43 blocks + MTP block
        expect += 128 * entry                 # window ring of raw tokens
        if r:
            expect += ctx // r * entry + 2 * ((2 if r == 4 else 1) * r) * ((2 if r == 4 else 1) * 512) * 4
        if r == 4:
            expect += ctx // 4 * key + 2 * 8 * 256 * 4
    assert v4_stats(cfg).kv_bytes_per_seq(ctx, cache)["total"] == expect
    assert CACHE_FORMATS["fp8"]["entry"] == 448 + 64 * 2 + 7 + 1   # V4_SPEC section 8


# ---- expert placement ----------------------------------------------------------------------
def test_placement_slots_replicas_and_balance():
    E, R = 256, 64
    loads = 1.0 / np.arange(1, E + 1) ** 0.9          # Zipf-like hot experts
    p = place_experts(E, R, 64, loads)
    assert {len(x) for x in p} == {5}                 # ceil((256 + 64) / 64) slots on every rank
    assert set(sum(p, [])) == set(range(E))           # every expert placed
    assert all(len(set(x)) == len(x) for x in p)      # no two copies on one rank
    count = np.bincount(sum(p, []), minlength=E)
    assert count[:8].min() > 1 and count[-64:].max() == 1    # hot ones replicated, cold once
    naive = [[e for e in range(E) if e % R == r] for r in range(R)]
    balanced, worst = max(rank_loads(p, loads)), max(rank_loads(naive, loads))
    assert balanced < 0.5 * worst
    assert balanced <= 1.10 * loads.sum() / R        # within 10% of perfect balance


def test_placement_rejects_bad_inputs():
    with pytest.raises(PlanError, match="loads has 3"):
        place_experts(4, 2, 0, [1, 2, 3])


# ---- memory --------------------------------------------------------------------------------
def test_moe_hccl_buffer_formula():
    # local_experts=2, 128 tokens/rank, EP 128, hidden 4096, top-6 (cann-recipes hccl_utils):
    disp = 2 * 128 * 128 * 8704           # Align512(Align32(8192) + 44) = 8704
    comb = 6 * 128 * 8192
    mb = math.ceil((disp + comb) * 2 / 2 ** 20) + 1
    assert moe_hccl_buffer_bytes(4096, 6, 2, 128, 128) == 2 * mb * 2 ** 20
    assert moe_hccl_buffer_bytes(4096, 6, 1, 1, 8) == 2 * 200 * 2 ** 20     # default floor


def test_rank_budget_adds_up():
    stats, cm = v4_stats(load_config("flash")), load_cluster("cloudmatrix384")
    lay = Layout(ranks=128, scheme="w8a8", cache="bf16", redundant=0)
    b = rank_budget(stats, cm.npu, lay, 4, 131072, 8)
    parts = ["weights", "kv_cache", "activations", "comm_buffers", "runtime_reserved"]
    assert b["total"] == sum(b[k] for k in parts)
    assert b["capacity"] == 64 * 2 ** 30                  # one 910C die
    assert b["kv_cache"] == 4 * stats.kv_bytes_per_seq(131072, "bf16")["total"]
    assert b["weights"] == sum(b["weights_by_role"].values())


# ---- roofline --------------------------------------------------------------------------------
def test_decode_step_monotonic_and_bounded():
    stats, cm = v4_stats(load_config("flash")), load_cluster("cloudmatrix384")
    lay = Layout(ranks=128, scheme="w8a8", cache="bf16", draft=1, accept=0.7)
    steps = [decode_step(stats, cm, lay, b, 131072) for b in (1, 4, 16, 64)]
    assert all(a.seconds < b.seconds for a, b in zip(steps, steps[1:]))
    assert all(a.tokens_per_s_per_rank < b.tokens_per_s_per_rank for a, b in zip(steps, steps[1:]))
    # one sequence: the step is at least the time to stream the replicated attention weights
    npu = cm.npu
    attn = sum(g.nbytes("w8a8") for g in stats.groups if g.role in ("attn", "attn_bf16") and not g.mtp)
    assert steps[0].seconds > attn / (npu.hbm_bw_per_rank * cal.eff("hbm"))
    assert steps[0].tpot == pytest.approx(steps[0].seconds / 1.7)


# ---- catalogue ---------------------------------------------------------------------------------
def test_builtin_catalogue_loads_with_sources():
    names = builtin_names()
    for must in ("ascend-910b", "ascend-910c", "atlas-800i-a2", "atlas-a3-superpod",
                 "cloudmatrix384", "ascend-950dt"):
        assert must in names
    for name in names:
        raw = yaml.safe_load(open(f"tools/deploy/hardware/{name}.yaml"))
        obj = load_npu(name) if raw["kind"] == "npu" else load_cluster(name)
        assert obj.sources
        figures = [k for k, v in raw.items() if isinstance(v, (int, float, dict)) and k != "sources"]
        missing = [k for k in figures if k not in raw["sources"]]
        assert not missing, (name, missing)
    cm = load_cluster("cloudmatrix384")
    assert cm.n_npus == 384 and cm.cpus["count"] == 192 and cm.n_ranks == 768
    assert cm.npu.scale_up_gbps == 392 and cm.npu.hbm_gib == 128


@pytest.mark.parametrize("edit,word", [
    (lambda d: d.pop("nodes"), "missing key 'nodes'"),
    (lambda d: d.update(nodes="48"), "key 'nodes' must be a int"),
    (lambda d: d.update(npus_per_node=-8), "key 'npus_per_node' must be > 0"),
    (lambda d: d.update(rack_count=3), "unknown key\\(s\\) rack_count"),
    (lambda d: d.update(npu={"kind": "npu", "dies": 1}), "missing key 'hbm_gib'"),
    (lambda d: d.update(npu="ascend-9999"), "unknown hardware 'ascend-9999'"),
    (lambda d: d.update(hosts=[{"host_ip": "10.0.0.1", "device_ips": ["a"]}]), "hosts"),
])
def test_user_cluster_file_errors_name_the_key(tmp_path, edit, word):
    raw = yaml.safe_load(open("tools/deploy/hardware/cloudmatrix384.yaml"))
    edit(raw)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=word):
        load_cluster(str(path))


# ---- planner ---------------------------------------------------------------------------------
def test_plan_flash_cloudmatrix_fits_and_meets_tpot():
    p = plan(Request("flash", "cloudmatrix384", 131072, 0.05))
    d = p["decode"]
    m = d["memory_per_rank"]
    assert d["tpot_ms"] <= 50.0 and m["total"] <= m["capacity"]
    assert d["sequences_per_dp_group"] <= d["max_batch_by_memory"]
    used = (d["instances"] * d["ranks"] + p["prefill"]["instances"] * p["prefill"]["ranks"]) // 2
    assert used + p["unused_npus"] == 384
    assert sum(len(x) for x in d["expert_placement"]) == 256 + d["redundant_experts"]


def test_infeasible_weights_say_why():
    with pytest.raises(PlanError) as exc:
        plan(Request("pro", "atlas-800i-a2", 1 << 20, 0.05))
    msg = str(exc.value)
    assert "weights" in msg and "GiB" in msg and msg.count(".") >= 2 and "\n" not in msg


def test_infeasible_tpot_says_why():
    with pytest.raises(PlanError, match=r"TPOT of [\d.]+ ms .* above the 1.0 ms target"):
        plan(Request("flash", "cloudmatrix384", 1 << 20, 0.001))


def test_infeasible_kv_cache_per_request(tmp_path):
    raw = yaml.safe_load(open("tools/deploy/hardware/cloudmatrix384.yaml"))
    npu = yaml.safe_load(open("tools/deploy/hardware/ascend-910c.yaml"))
    npu["hbm_gib"] = 24                      # 12 GiB per die
    raw["npu"] = npu
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match=r"KV cache of one request at 1M tokens \(6\.10 GiB\) exceeds"):
        plan(Request("flash", str(path), 1 << 20, 0.05))


# Accuracy on published deployments: tests/test_plan_accuracy.py


def test_prefill_instances_cover_requested_throughput():
    demand = 1e6                                       # prompt tokens/s
    p = plan(Request("flash", "cloudmatrix384", 131072, 0.05, prefill_throughput=demand))
    f = p["prefill"]
    per_instance = f["tokens_per_s_per_npu"] * f["npus_per_instance"]
    assert f["instances"] * per_instance >= demand > (f["instances"] - 1) * per_instance
    assert f["tokens_per_s_total"] == pytest.approx(f["instances"] * per_instance)
    with pytest.raises(PlanError, match="leaving none of the 384 NPUs for decode"):
        plan(Request("flash", "cloudmatrix384", 131072, 0.05, prefill_throughput=1e9))


def test_engram_tables_counted_in_host_memory(tmp_path):
    raw = yaml.safe_load(open("ascend_v4/presets/flash.yaml"))
    raw.update(engram_layer_ids=[1, 14], engram_max_ngram_size=4, engram_n_heads=8, engram_head_dim=256,
               engram_vocab_size=1000000)
    path = tmp_path / "engram.yaml"
    path.write_text(yaml.safe_dump(raw))
    primes = [n for n in range(1000000, 1000500) if all(n % f for f in range(2, 1001))][:24]
    rows = 2 * sum(primes)          # layers x (24 tables: 3 orders x 8 heads, distinct primes >= 1e6)
    expect = rows * (256 + 2)                         # fp8 row + one ue8m0 scale per 128
    p = plan(Request(str(path), "cloudmatrix384", 131072, 0.05))
    assert p["engram_host_bytes"] == expect
    raw["engram_vocab_size"] = 2_000_000_000          # ~25 TB of tables per node
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlanError, match="Engram tables need .* of host memory"):
        plan(Request(str(path), "cloudmatrix384", 131072, 0.05))
