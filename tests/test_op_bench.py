"""`ascend-v4 bench --only ops`: JSON and PNG written atomically; figures are measured (tiny sizes here)."""
import json

import pytest
from click.testing import CliRunner

import tools.bench.fp8_decode as fp8_bench
import tools.bench.ops as ops_bench
from tools.cmd_bench import command


def tiny_run(quick=False):
    bw = ops_bench.stream_copy_bandwidth(8, 2)
    return dict(machine_copy_bandwidth_bytes_per_s=bw, sparse_fp8_decode=ops_bench.bench_decode([1024, 2048], bw),
                sinkhorn_mhc=ops_bench.bench_sinkhorn(64), moe=ops_bench.bench_moe(64, 128, experts=16, topk=2))


def test_bench_writes_json_and_png(tmp_path, monkeypatch):
    monkeypatch.setattr(ops_bench, "run", tiny_run)
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(command, ["--only", "ops", "--json", str(js), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    r = json.loads(js.read_text())["ops"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["machine_copy_bandwidth_bytes_per_s"] > 1e8
    for row in r["sparse_fp8_decode"]:
        assert row["sparse_s"] > 0 and row["dense_s"] > 0
        assert row["speedup"] == pytest.approx(row["dense_s"] / row["sparse_s"])
        assert row["kv_bytes_per_token"] == 584 and row["bf16_bytes_per_token"] == 1024
    assert r["sinkhorn_mhc"]["max_abs_diff_mindspore_vs_twin"] < 1e-5
    assert r["moe"]["max_abs_diff"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]      # no temp files left


def test_fp8_decode_bench_software_vs_native_vs_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(fp8_bench, "bench_context", lambda n, rng, f=fp8_bench.bench_context: f(1024, rng))
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(command, ["--only", "fp8_decode", "--quick", "--json", str(js), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (row,) = json.loads(js.read_text())["fp8_decode"]["rows"]
    assert row["context"] == 1024 and row["entries"] == 640
    assert row["bit_identical_out"] and row["bit_identical_dequant"]       # software decode == vector Cast
    assert row["software_vs_native"] == pytest.approx(row["software_s"] / row["native_s"])
    assert row["fp8_bytes_per_entry"] == 588 and row["bf16_bytes_per_entry"] == 1028
    assert row["bytes_ratio_per_entry"] == pytest.approx(588 / 1028)
    assert 0 < row["max_abs_diff_vs_bf16_cache"] < 0.1                    # fp8 vs bf16 keys, same attention


def test_bench_rejects_bad_paths(tmp_path):
    res = CliRunner().invoke(command, ["--plot", str(tmp_path / "x.jpg")])
    assert res.exit_code != 0 and "must end in .png" in res.output
    res = CliRunner().invoke(command, ["--json", str(tmp_path / "no" / "r.json")])
    assert res.exit_code != 0 and "does not exist" in res.output
