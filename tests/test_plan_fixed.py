"""`ascend-v4 plan --chips N --batch B`: fixed-deployment predictions, `--explain` (table and
PNG summing exactly to the step), and one-sentence errors."""
import json
import math
import os

import pytest
from click.testing import CliRunner

from tools.cli import main
from tools.deploy import PlanError
from tools.deploy.catalogue import load_cluster
from tools.deploy.fixed import FixedRequest, predict
from tools.deploy.memory import Layout
from tools.deploy.planner import load_model
from tools.deploy.roofline import RESOURCES, decode_step


def run(*args):
    return CliRunner().invoke(main, ["plan", *args], catch_exceptions=False)


def test_fixed_json_matches_prediction_and_units():
    r = run("--model", "flash", "--cluster", "atlas-950-superpod", "--chips", "16", "--batch", "256",
            "--context", "8K", "--mtp", "3", "--mtp-accept", "1.44", "--weights", "mxfp8", "--json")
    assert r.exit_code == 0, r.output
    p = json.loads(r.output)
    direct = predict(FixedRequest("flash", "atlas-950-superpod", 16, 256, 8192, "mxfp8", None, 3, 1.44))
    assert p["tpot_ms"] == pytest.approx(direct["tpot_ms"], rel=1e-12)
    assert p["tokens_per_s_per_chip"] == pytest.approx(256 / 16 / (p["tpot_ms"] / 1e3), rel=1e-9)
    assert p["step_ms"] == pytest.approx(p["tpot_ms"] * 2.44, rel=1e-9)
    assert p["ranks"] == 16 and p["sequences_per_dp_group"] == 16 and p["kv_cache"] == "fp8"
    m = p["memory_per_rank"]
    assert m["total"] <= m["capacity"] == 144 * 2 ** 30
    assert 0 < p["ttft_s"] and p["prefill_tokens_per_s_per_chip"] > 0
    assert p["roofline_tpot_ms"] < p["tpot_ms"]


def test_fixed_text_names_binding_resource_and_target():
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--chips", "64", "--batch", "2048",
            "--context", "128K", "--tpot", "20ms")
    assert r.exit_code == 0, r.output
    assert "tokens/s per chip" in r.output and "bound by" in r.output and "TTFT" in r.output
    assert "meets the 20.0 ms TPOT target" in r.output
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--chips", "64", "--batch", "2048",
            "--context", "128K", "--tpot", "5ms")
    assert "misses the 5.0 ms TPOT target" in r.output


@pytest.mark.parametrize("model,cluster,ranks,tp,seqs,ctx,draft", [
    ("flash", "cloudmatrix384", 128, 1, 16, 131072, 1),
    ("pro", "atlas-950-superpod", 16, 1, 8, 8192, 3),
    ("flash", "atlas-950-superpod", 16, 2, 64, 1 << 20, 3),    # TP collectives appear
    ("flash", "atlas-800i-a2", 8, 1, 512, 4096, 0),            # HCCS, no MTP
    ("deepseek-r1", "cloudmatrix384", 320, 1, 48, 4096, 1),
])
def test_explain_sums_exactly_to_step(model, cluster, ranks, tp, seqs, ctx, draft):
    stats = load_model(model)
    cl = load_cluster(cluster).restrict(ranks // load_cluster(cluster).npu.dies)
    lay = Layout(ranks=ranks, tp=tp, scheme="w8a8", cache="bf16", draft=draft, accept=0.7 * draft,
                 head_tp=min(ranks, cl.ranks_per_node))
    s = decode_step(stats, cl, lay, seqs, ctx)
    total = sum(sum(row.values()) for row in s.table.values())
    assert math.isclose(total, s.seconds, rel_tol=1e-12)
    assert all(set(row) == set(RESOURCES) and min(row.values()) >= 0 for row in s.table.values())
    assert sum(s.parts.values()) == pytest.approx(s.seconds, rel=1e-12)
    kinds = {c for c in s.table if c.startswith("attention ")}
    expect = {"deepseek-r1": {"attention MLA"}, "pro": {"attention CSA", "attention HCA"},
              "flash": {"attention SWA", "attention CSA", "attention HCA"}}[model]   # Pro: no SWA
    assert kinds == expect | ({"attention TP collectives"} if tp > 1 else set())
    if model != "deepseek-r1":
        assert {"indexer", "compressor", "mHC", "MoE experts", "head"} <= set(s.table)
    assert ("MTP" in s.table) == bool(draft)


def test_explain_cli_table_and_png(tmp_path):
    png = tmp_path / "flash_cm384_128k.png"
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--chips", "64", "--batch", "2048",
            "--context", "128K", "--explain", "--explain-png", str(png))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    step_line = next(x for x in lines if x.startswith("step "))
    cols = [float(x) for x in step_line.split()[1:]]
    assert sum(cols[:4]) == pytest.approx(cols[4], abs=0.002)
    tpot = float(r.output.split("TPOT ")[1].split(" ms")[0])
    step = float(r.output.split("(step ")[1].split(" ms")[0])
    assert cols[4] == pytest.approx(step, abs=0.006) and step == pytest.approx(tpot * 1.7, rel=0.01)
    for comp in ("attention CSA", "attention HCA", "attention SWA", "indexer", "compressor", "mHC",
                 "MoE experts", "head", "MTP"):
        assert any(x.startswith(comp) for x in lines), comp
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["flash_cm384_128k.png"]     # no temporary left
    assert os.stat(png).st_mode & 0o044                                  # readable by others


def test_search_mode_explain_still_works():
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--context", "128K", "--explain")
    assert r.exit_code == 0 and "decode step by component and resource:" in r.output


def test_infeasible_fixed_deployment_is_one_sentence_with_numbers():
    with pytest.raises(PlanError) as exc:
        predict(FixedRequest("pro", "atlas-950-superpod", 16, 4096, 1 << 20, "mxfp8"))
    msg = str(exc.value)
    assert "do not fit on 16 x Ascend 950DT" in msg and "too much" in msg and "%" in msg
    assert "GiB" in msg and "at most" in msg and "\n" not in msg
    with pytest.raises(PlanError, match="not even one sequence fits"):
        predict(FixedRequest("pro", "atlas-800i-a2", 8, 1, 4096))


@pytest.mark.parametrize("args,words", [
    (["--chips", "16"], ["--chips and --batch go together"]),
    (["--chips", "16", "--batch", "64", "--out", "x"], ["--out"]),
    (["--chips", "12", "--batch", "64"], ["cannot take 12 NPUs"]),
    (["--chips", "0", "--batch", "4"], ["--chips"]),
    (["--chips", "16", "--batch", "99999", "--context", "1M", "--model", "pro"],
     ["do not fit", "too much"]),
    (["--chips", "16", "--batch", "16", "--attention-tp", "3"], ["attention TP3"]),
    (["--chips", "16", "--batch", "16", "--explain-png", "/nonexistent/dir/x.png"],
     ["--explain-png", "does not exist"]),
    (["--chips", "16", "--batch", "16", "--weights", "fp2"], ["--weights 'fp2'", "mxfp8"]),
])
def test_fixed_errors_are_clear(args, words):
    base = ["--model", "flash", "--cluster", "atlas-950-superpod"]
    if "--model" in args:
        base = ["--cluster", "atlas-950-superpod"]
    r = run(*base, *args)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: ")
    for w in words:
        assert w in r.output, r.output
