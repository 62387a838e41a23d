"""`ascend-v4 plan` command line: JSON output, artifacts (atomic, rank tables, msrun scripts
that quote hostile cluster values), and one-sentence errors without tracebacks."""
import json
import os
import shlex
import stat
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from tools.cli import main
from tools.deploy import artifacts
from tools.deploy.model_stats import v4_stats
from ascend_v4.config import load_config

HOSTILE = "10.0.0.1; touch PWNED; $(touch PWNED2) `touch PWNED3`"


def run(*args):
    return CliRunner().invoke(main, ["plan", *args], catch_exceptions=False)


def test_json_plan_has_bytes_and_meets_target():
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--context", "128K",
            "--tpot", "50ms", "--json")
    assert r.exit_code == 0, r.output
    p = json.loads(r.output)
    d = p["decode"]
    assert d["tpot_ms"] <= 50.0 and d["tokens_per_s_per_npu"] > 0
    mem = d["memory_per_rank"]
    assert all(isinstance(mem[k], int) for k in ("weights", "kv_cache", "comm_buffers", "capacity"))
    assert mem["capacity"] == 64 * 2 ** 30 and mem["total"] <= mem["capacity"]
    kv = v4_stats(load_config("flash")).kv_bytes_per_seq(131072, "bf16")
    assert p["kv_cache"]["per_sequence"] == kv
    assert p["request"]["context"] == 131072 and p["request"]["weights"] == "w8a8"


def test_text_summary_names_the_binding_resource():
    r = run("--model", "pro", "--cluster", "cloudmatrix384", "--context", "128K")
    assert r.exit_code == 0, r.output
    assert "decode:" in r.output and "bound by" in r.output and "prefill:" in r.output


def _cluster_with_hosts(tmp_path, host_ip, device_ip="192.168.1.1"):
    raw = yaml.safe_load(open("tools/deploy/hardware/atlas-a3-superpod.yaml"))
    raw["nodes"] = 4
    raw["scale_up_domain_npus"] = 32
    raw["hosts"] = [{"host_ip": host_ip if n == 0 else f"10.0.0.{n + 1}",
                     "device_ips": [device_ip if (n, d) == (0, 0) else f"10.1.{n}.{d}"
                                    for d in range(16)]} for n in range(4)]
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_artifacts_rank_table_and_scripts(tmp_path):
    cluster = _cluster_with_hosts(tmp_path, "10.0.0.1")
    out = tmp_path / "deploy"
    r = run("--model", "flash", "--cluster", cluster, "--context", "128K", "--out", str(out))
    assert r.exit_code == 0, r.output
    names = sorted(os.listdir(out))
    tables = [n for n in names if "rank_table" in n]
    assert tables and "plan.json" in names
    plan = json.loads((out / "plan.json").read_text())
    for name in tables:
        t = json.loads((out / name).read_text())
        ranks = [int(dev["rank_id"]) for s in t["server_list"] for dev in s["device"]]
        assert ranks == list(range(len(ranks)))
        assert all({"device_id", "device_ip", "rank_id"} <= set(dev)
                   for s in t["server_list"] for dev in s["device"])
        assert int(t["server_count"]) == len(t["server_list"])
    role_ranks = {"decode": plan["decode"]["ranks"], "prefill": plan["prefill"]["ranks"]}
    for name in tables:
        role = name.split("_")[2]
        t = json.loads((out / name).read_text())
        assert sum(len(s["device"]) for s in t["server_list"]) == role_ranks[role]
    scripts = [n for n in names if n.endswith(".sh")]
    assert scripts
    for s in scripts:
        assert os.stat(out / s).st_mode & stat.S_IXUSR
        subprocess.run(["bash", "-n", str(out / s)], check=True)
    par = json.loads((out / "parallel_decode_0.json").read_text())
    assert par["mindspore"]["device_num"] == plan["decode"]["ranks"]
    assert par["ascend_v4"]["expert_parallel"] == plan["decode"]["expert_parallel"]
    assert (par["ascend_v4"]["soc"], par["ascend_v4"]["weights"], par["ascend_v4"]["indexer_cache"]) == \
        ("ascend910_93", "w8a8", "int8")                  # the formats the A3 pod's SoC picks
    # the scripts run the real server through `ascend-v4 launch`, which reads the same layout
    argv = shlex.split((out / "launch_decode_0_node0.sh").read_text().splitlines()[-1])
    assert argv[:3] == ["exec", "ascend-v4", "launch"]
    assert argv[argv.index("--") + 1:] == ["serve", "--role", "decode", "--parallel-config", "parallel_decode_0.json"]
    from ascend_v4.parallel.layout import read_parallel_config
    tp, ep, placement = read_parallel_config(str(out / "parallel_decode_0.json"))
    assert tp * ep == plan["decode"]["ranks"]
    assert placement is None or len(placement) == ep
    bad = run("--model", "flash", "--cluster", cluster, "--context", "128K", "--out", str(tmp_path / "bad"),
              "--entry", "bash run.sh")
    assert bad.exit_code != 0 and "--entry 'bash run.sh'" in bad.output and not (tmp_path / "bad").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".plan-")]


def test_hostile_cluster_values_stay_literal(tmp_path):
    cluster = _cluster_with_hosts(tmp_path, HOSTILE, device_ip="$(touch PWNED4)")
    out = tmp_path / "deploy"
    r = run("--model", "flash", "--cluster", cluster, "--context", "4K", "--out", str(out),
            "--entry", "python worker.py --tag 'a b'")
    assert r.exit_code == 0, r.output
    # run the first prefill node script with a fake `ascend-v4` that records its argv
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ascend-v4").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS"\n')
    (fake / "ascend-v4").chmod(0o755)
    script = "launch_prefill_0_node0.sh"          # the instance on node 0 (hostile host_ip)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", ARGS=str(tmp_path / "args.txt"))
    env.pop("ASCEND_V4_CHECKPOINT", None)
    missing = subprocess.run(["bash", str(out / script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode != 0 and "set ASCEND_V4_CHECKPOINT" in missing.stderr
    assert not (tmp_path / "args.txt").exists()            # launch never started
    env["ASCEND_V4_CHECKPOINT"] = str(tmp_path / "ckpt")    # `serve` reads it
    subprocess.run(["bash", str(out / script)], check=True, env=env, cwd=tmp_path)
    argv = (tmp_path / "args.txt").read_text().splitlines()
    assert argv[0] == "launch" and f"--master-addr={HOSTILE}" in argv
    assert any(a.startswith("--rank-table=rank_table_prefill_0") for a in argv)
    assert argv[argv.index("--") + 1:argv.index("--") + 4] == ["worker.py", "--tag", "a b"]
    for leftover in ("PWNED", "PWNED2", "PWNED3", "PWNED4"):
        assert not (tmp_path / leftover).exists() and not (out / leftover).exists()
    text = (out / script).read_text()
    assert shlex.quote(f"--master-addr={HOSTILE}") in text
    tables = [n for n in os.listdir(out) if "rank_table" in n]
    devs = [d["device_ip"] for n in tables for s in json.loads((out / n).read_text())["server_list"]
            for d in s["device"]]
    assert "$(touch PWNED4)" in devs          # data kept verbatim in JSON, never executed


def test_out_is_atomic_on_failure(tmp_path, monkeypatch):
    def boom(plan, cluster, root, entry):
        open(os.path.join(root, "plan.json"), "w").write("{}")
        raise RuntimeError("disk full")
    monkeypatch.setattr(artifacts, "_write_all", boom)
    out = tmp_path / "deploy"
    with pytest.raises(RuntimeError):
        run("--model", "flash", "--cluster", "cloudmatrix384", "--out", str(out))
    assert os.listdir(tmp_path) == []          # neither DIR nor a temp folder is left


@pytest.mark.parametrize("args,words", [
    (["--context", "1X"], ["--context", "1X"]),
    (["--tpot", "50"], ["--tpot", "unit"]),
    (["--cluster", "cm999"], ["unknown hardware", "cloudmatrix384"]),
    (["--model", "nope"], ["--model nope"]),
    (["--weights", "int4"], ["--weights"]),
    (["--model", "pro", "--cluster", "atlas-800i-a2", "--context", "1M"], ["weights need", "GiB"]),
    (["--tpot", "1ms", "--context", "1M"], ["TPOT", "1.0 ms target"]),
])
def test_errors_are_one_sentence(args, words):
    base = {"--model": "flash", "--cluster": "cloudmatrix384"}
    for k in list(base):
        if k in args:
            del base[k]
    argv = [x for kv in base.items() for x in kv] + args
    r = run(*argv)
    assert r.exit_code != 0
    assert "Traceback" not in r.output and r.output.startswith("Error: ")
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output


def test_out_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    r = run("--model", "flash", "--cluster", "cloudmatrix384", "--out", str(tmp_path))
    assert r.exit_code != 0 and "not an empty folder" in r.output
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_bad_cluster_file_names_key(tmp_path):
    raw = yaml.safe_load(open("tools/deploy/hardware/cloudmatrix384.yaml"))
    raw["npus_per_node"] = "eight"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = run("--model", "flash", "--cluster", str(path))
    assert r.exit_code != 0 and "'npus_per_node'" in r.output and str(path) in r.output
