"""Planner accuracy on published deployments (tools/deploy/validation.py).

Every published row is predicted through the fixed-deployment code path and compared with the
published tokens/s per chip. Two rows are fitted (validation.FITTED_ROWS); every other row is
held out with the stated tolerance:
  * HELD_OUT_TOL = 25% on tokens/s per chip;
  * KNOWN_MISSES: rows the model misses by more than 25% today, each with the wider band it is
    held to and the reason; the test also fails if one of them comes back within 25%, so the
    list stays true.
"""
import math

import pytest

from ascend_v4.config import load_config
from tools.deploy import calibration as cal
from tools.deploy.catalogue import load_cluster
from tools.deploy.model_stats import v4_stats
from tools.deploy.validation import FITTED_ROWS, ROWS, fit, predict_row, run_all

HELD_OUT_TOL = 0.25
# name -> (tolerance it is held to, why it misses 25%)
KNOWN_MISSES = {
    "950DT flash MXFP8-MXFP4 16 chips B2880 MTP1 8K": (0.35, "per-token cost fitted on 910C (A3) "
                                                       "is ~2x what the 950 shows at large MTP1 batches"),
    "950DT flash MXFP8-MXFP4 16 chips B768 MTP1 128K": (0.40, "same; the guide's MTP1 rows run "
                                                        "faster than its MTP3 rows at equal work"),
    "950DT flash HiF8-MXFP8-MXFP4 16 chips B1536 MTP1 8K": (0.30, "same as the MXFP8 row"),
}


@pytest.fixture(scope="module")
def results():
    return {r["row"].name: r for r in run_all()}


def test_rows_have_exact_setup_and_source():
    names = [r.name for r in ROWS]
    assert len(names) == len(set(names)) and len(ROWS) >= 30
    for r in ROWS:
        assert r.source and r.published_tokens_per_chip > 0
        assert r.phase in ("decode", "decode-slo", "prefill")
        if r.phase == "decode":     # published throughput = batch / chips / TPOT (within 1%)
            assert r.batch / r.chips / (r.published_tpot_ms * 1e-3) == \
                pytest.approx(r.published_tokens_per_chip, rel=0.01), r.name
    assert set(FITTED_ROWS) <= set(names) and len(FITTED_ROWS) <= 2


def test_fitted_factors_reproduce_from_their_rows(results):
    f = fit()
    assert f["block_gap_us"] == pytest.approx(cal.fitted("block_gap_us"), rel=0.01)
    assert f["activation_passes"] == pytest.approx(cal.fitted("activation_passes"), rel=0.01)
    for name in FITTED_ROWS:
        assert results[name]["ratio"] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", [r.name for r in ROWS
                                  if r.name not in FITTED_ROWS and r.phase != "decode-slo"])
def test_held_out_row_within_tolerance(results, name):
    r = results[name]
    tol, why = KNOWN_MISSES.get(name, (HELD_OUT_TOL, ""))
    assert abs(r["ratio"] - 1) <= tol, (name, r["ratio"], r["tokens_per_chip"], why)
    if name in KNOWN_MISSES:                     # keep the list honest
        assert abs(r["ratio"] - 1) > HELD_OUT_TOL, f"{name} is now within 25%: drop it"


def test_r1_15ms_slo_row(results):
    """CloudMatrix-Infer sustains 538 tokens/s/NPU at TPOT <= 15 ms; the batch is not in the
    stored material. Our smallest R1 TPOT at the EP320 layout is held to within 25% of 15 ms
    (today the model misses the target itself: its per-block gaps come from the V4 Day-0 stack)."""
    r = results["CloudMatrix384 R1 decode INT8 TPOT <= 15 ms, 4K"]
    assert r["tokens_per_chip"] == 0.0 and 15.0 < r["tpot_ms"] <= 15.0 * 1.25


def test_tpot_follows_throughput(results):
    for row in ROWS:
        if row.phase == "decode":
            r = results[row.name]
            assert r["tokens_per_chip"] == pytest.approx(row.batch / row.chips / (r["tpot_ms"] / 1e3),
                                                         rel=1e-9)


# ---- why V4-Pro was predicted at half its published throughput -----------------------------
def test_pro_shapes_match_the_guide():
    """Not the cause: layer composition and expert sizes agree with the CANN guide (first two
    layers HCA, then CSA/HCA; 22.5 G routed-expert parameters per token for 1.6T, 6 G for 285B,
    counted in GiB units)."""
    pro, flash = load_config("pro"), load_config("flash")
    assert list(pro.compress_ratios[:2]) == [128, 128]
    assert set(pro.compress_ratios[2:-1]) == {4, 128} and pro.n_layers == 61
    assert list(flash.compress_ratios[:2]) == [0, 0]
    for cfg, guide in ((pro, 22.5), (flash, 6.0)):
        routed = cfg.n_activated_experts * 3 * cfg.dim * cfg.moe_inter_dim * cfg.n_layers
        assert abs(routed / 2 ** 30 / guide - 1) < 0.02


def test_one_multiplicative_factor_cannot_fit_pro_and_a3():
    """The cause: the old model divided the whole roofline by one factor (0.27) fitted on the A3
    throughput row. The physical roofline is already 0.5 of Pro's published small-batch step
    (weight streaming at 84% HBM) but only 0.3 of the A3 step, so no single factor fits both
    within 25%; the additive per-block and per-token terms do (test_held_out_row_within_tolerance)."""
    from tools.deploy.fixed import FixedRequest, predict
    share = {}
    for name in ("950DT pro MXFP8-MXFP4 16 chips B16 MTP3 8K",
                 "Atlas A3 flash W8A8C16 64 chips B8192 MTP1 8K"):
        row = next(r for r in ROWS if r.name == name)
        p = predict(FixedRequest(row.model, row.cluster, row.chips, row.batch, row.ctx,
                                 row.weights, row.cache, row.mtp, row.accept, roofline_only=True))
        share[name] = p["tpot_ms"] / row.published_tpot_ms
    pro, a3 = share.values()
    assert pro > 0.5 and a3 < 0.3 and pro / a3 > 1.25 ** 2


def test_pro_small_batch_is_weight_streaming():
    """At 1 sequence per rank the Pro step is dominated by streaming weights (HBM column)."""
    from tools.deploy.fixed import FixedRequest, predict
    p = predict(FixedRequest("pro", "atlas-950-superpod", 16, 16, 8192, "mxfp8", "fp8", 3, 1.44))
    hbm = sum(row["HBM"] for row in p["explain_ms"].values())
    assert hbm / p["step_ms"] > 0.5 and p["bound"] == "HBM bandwidth"
    # every routed expert slot is read once: 24 slots x 61 layers of 3 x 7168 x 3072 MXFP4
    stats = v4_stats(load_config("pro"))
    experts = 24 * stats.n_moe_layers * stats.expert_bytes("mxfp8")
    npu = load_cluster("atlas-950-superpod").npu
    moe_ms = experts / (npu.hbm_bw_per_rank * cal.eff("hbm")) * 1e3
    assert p["explain_ms"]["MoE experts"]["HBM"] >= moe_ms
    assert math.isclose(sum(sum(r.values()) for r in p["explain_ms"].values()), p["step_ms"],
                        rel_tol=1e-9)
