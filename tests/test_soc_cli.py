"""`plan --soc`, `compile --soc` and `ascend-v4 socs`: formats picked per SoC profile, refusals of formats
a SoC cannot run, the planner's chips naming their profile consistently with their figures."""
import json

import pytest
import yaml
from click.testing import CliRunner

from custom_ops.runtime.soc_profiles import PROFILES
from tools.cli import main
from tools.cmd_compile import _soc_formats
from tools.deploy.catalogue import builtin_names, load_npu
from tools.deploy.model_stats import v4_stats
from ascend_v4.config import load_config


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


FIXED_950 = ("plan", "--model", "flash", "--cluster", "atlas-950-superpod", "--chips", "16", "--batch", "16",
             "--context", "8K", "--json")
FIXED_A3 = ("plan", "--model", "flash", "--cluster", "cloudmatrix384", "--chips", "16", "--batch", "64",
            "--context", "8K", "--json")


@pytest.mark.parametrize("argv,want", [
    (FIXED_A3, ("ascend910_93", "w8a8", "bf16", "int8")),
    (FIXED_A3 + ("--soc", "Ascend910_93", "--kv-cache", "int8"), ("ascend910_93", "w8a8", "int8", "int8")),
    (FIXED_950, ("ascend950", "native", "fp8", "fp4")),
    (FIXED_950 + ("--soc", "Ascend950DT", "--weights", "mxfp8", "--kv-cache", "bf16"),
     ("ascend950", "mxfp8", "bf16", "int8")),
])
def test_plan_formats_come_from_the_soc(argv, want):
    r = run(*argv)
    assert r.exit_code == 0, r.output
    p = json.loads(r.output)
    assert (p["soc"], p["weights"], p["kv_cache"], p["indexer_cache"]) == want


def test_searched_plan_records_the_soc():
    r = run("plan", "--model", "flash", "--cluster", "atlas-800i-a2", "--context", "8K", "--json")
    assert r.exit_code == 0, r.output
    req = json.loads(r.output)["request"]
    assert (req["soc"], req["weights"], req["kv_cache"], req["indexer_cache"]) == ("ascend910b", "w8a8", "bf16", "int8")


def test_c8_cache_is_smaller_than_c16():
    stats = v4_stats(load_config("flash"))
    assert stats.kv_bytes_per_seq(8192, "int8")["total"] < stats.kv_bytes_per_seq(8192, "bf16")["total"]


@pytest.mark.parametrize("argv,words", [
    (FIXED_A3 + ("--weights", "mxfp8"), ["--weights mxfp8: ascend910_93 cannot run it", "mxfp4, mxfp8",
                                         "runs w8a8, w4a8, bf16"]),
    (FIXED_A3 + ("--weights", "native"), ["ascend910_93 cannot run it", "fp8_e4m3"]),
    (FIXED_A3 + ("--kv-cache", "fp8"), ["--kv-cache fp8: ascend910_93 has no fp8 KV cache", "bf16, int8"]),
    (FIXED_A3 + ("--soc", "ascend950"), ["--soc ascend950: the cluster's Ascend 910C chips are ascend910_93"]),
    (FIXED_A3 + ("--soc", "ascend310p"), ["unknown SoC 'ascend310p'", "ascend910b (Ascend910B", "ascend950"]),
    (FIXED_950 + ("--weights", "fp2"), ["--weights 'fp2': expected one of native, w8a8, w4a8, mxfp8, bf16"]),
])
def test_plan_refuses_what_the_soc_cannot_run(argv, words):
    r = run(*argv)
    assert r.exit_code != 0 and r.output.startswith("Error: ") and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def test_chip_without_a_soc_needs_one(tmp_path):
    npu = yaml.safe_load(open("tools/deploy/hardware/ascend-910b.yaml"))
    del npu["soc"]
    cluster = yaml.safe_load(open("tools/deploy/hardware/atlas-800i-a2.yaml"))
    cluster["npu"] = npu
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cluster))
    base = ("plan", "--model", "flash", "--cluster", str(path), "--chips", "8", "--batch", "8", "--context", "8K",
            "--json")
    r = run(*base)
    assert r.exit_code != 0 and "chips name no SoC profile: add 'soc: NAME'" in r.output
    r = run(*base, "--soc", "ascend910b")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["weights"] == "w8a8"
    npu["soc"] = "ascend920"
    path.write_text(yaml.safe_dump(cluster))
    r = run(*base)
    assert r.exit_code != 0 and "npu: key 'soc': unknown SoC 'ascend920'" in r.output


def test_builtin_chips_name_a_profile_consistent_with_their_figures():
    for name in builtin_names():
        raw = yaml.safe_load(open(f"tools/deploy/hardware/{name}.yaml"))
        if raw["kind"] != "npu":
            continue
        npu = load_npu(name)
        prof = PROFILES[npu.soc]
        assert (npu.fp8_tflops > 0) == ("fp8_e4m3" in prof.cube_dtypes), name
        assert (npu.fp4_tflops > 0) == ("mxfp4" in prof.cube_dtypes), name
        assert (npu.int8_tops > 0) == ("int8" in prof.cube_dtypes), name


def test_every_default_is_runnable_on_its_soc():
    from tools.deploy.formats import SCHEME_FORMATS
    for p in PROFILES.values():
        assert p.default_weights in p.runnable(SCHEME_FORMATS), p.name
        assert p.check_kv_cache(p.default_kv_cache) == p.default_kv_cache


def test_compile_soc_formats_for_the_manifest():
    a2, a5 = _soc_formats("Ascend910B"), _soc_formats("ascend950")
    assert (a2["soc"], a2["weights"], a2["kv_cache"], a2["indexer_cache"]) == ("ascend910b", "w8a8", "bf16", "int8")
    assert a2["weight_formats"]["expert"] == "int8" and a2["weight_formats"]["attn_a"] == "bf16"
    assert (a5["soc"], a5["weights"], a5["kv_cache"], a5["indexer_cache"]) == ("ascend950", "native", "fp8", "fp4")
    assert a5["weight_formats"]["expert"] == "fp4" and a5["weight_formats"]["attn"] == "fp8"


def test_compile_bad_soc_lists_the_known(tmp_path):
    r = CliRunner().invoke(main, ["compile", "--preset", "tiny", "--soc", "Ascend999", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "Invalid value for --soc: unknown SoC 'Ascend999'; known: ascend910b" in r.output
    assert "ascend910_93" in r.output and "ascend950" in r.output
    assert not (tmp_path / "o").exists()


def test_socs_matrix_text_and_json():
    r = run("socs", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert set(rows) == {"ascend910b", "ascend910_93", "ascend950"}
    assert rows["ascend910b"]["runs_weights"] == ["w8a8", "w4a8", "bf16"]
    assert rows["ascend950"]["runs_weights"] == ["native", "w8a8", "w4a8", "mxfp8", "bf16"]
    assert rows["ascend950"]["ub_bytes"] == 253952 and "fp8_e4m3" in rows["ascend950"]["vector_dtypes"]
    text = run("socs", "--sources").output
    assert text.count("source: ") == 3 * 8 and "ub_size=253952" in text and "assumed" in text


def test_design_matrix_matches_the_profiles():
    """docs/DESIGN.md's SoC matrix is a copy for readers: its figures must be the profiles'."""
    rows = {}
    for line in open("docs/DESIGN.md", encoding="utf-8"):
        if line.startswith("| ") and line.count("|") == 5:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    names = [c.split()[0] for c in rows["fact"]]
    assert names == list(PROFILES)
    for name, ub, cores, default in zip(names, rows["UB per AIV"], rows["AIC / AIV"], rows["default weights"]):
        p = PROFILES[name]
        assert ub.startswith(f"{p.ub_bytes} B") and cores.startswith(f"{p.cube_cores} / {p.vector_cores}")
        assert default.startswith(p.default_weights)
