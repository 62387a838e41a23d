"""`ascend-v4 launch`: real msrun jobs on 127.0.0.1 (2 ranks + msrun's scheduler), the watchdog
that ends a job on its first failure, rank-table checks before anything starts, usage errors.

Every job runs with a marker variable of its own; afterwards no process carrying it may remain
(found through /proc/<pid>/environ, never by name) and the master port must be free again."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner

from tools.cli import main
from tools.deploy.rank_table import RankTableError, check_rank_table
from tools import launcher
from tools.procwatch import all_pids, proc_stat

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "launch_scripts")
ROOT = os.path.dirname(HERE)
COLLECTIVE = os.path.join(SCRIPTS, "collective.py")
SLEEPER = os.path.join(SCRIPTS, "sleeper.py")
TEST_MARKER = "ASCEND_V4_LAUNCH_TEST"


def _env(marker):
    return dict(os.environ, GLOG_v="3", **{TEST_MARKER: marker})


def start(args, cwd=ROOT):
    """The launcher as a real process (the CLI entry), with a marker in its environment."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "tools.cli", "launch", *args], cwd=cwd,
                            env=_env(marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return proc, marker


def finish(proc, limit=150):
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.terminate()                                    # launch tears its job down
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"launch did not end within {limit} s:\n{err}")
    return proc.returncode, out, err


def marked(marker):
    """pids of processes whose environment holds TEST_MARKER=marker (zombies included)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if f"{TEST_MARKER}={marker}".encode() in env:
            found.append(int(name))
    return found


def assert_all_gone(marker, status):
    """Nothing of the job is left: no process with its marker, none in the process groups the
    launcher recorded (msrun's, each worker's), and the master port is free."""
    groups = set(status["process_groups"])

    def left():
        in_groups = [pid for pid in all_pids() if (st := proc_stat(pid)) and st.pgrp in groups]
        return marked(marker) + in_groups

    end = time.monotonic() + 5
    while left() and time.monotonic() < end:               # init reaps orphans' zombies
        time.sleep(0.1)
    assert left() == []
    assert launcher._port_free(status["master_port"])


def status_of(log_dir):
    with open(os.path.join(log_dir, "launch_node0.json")) as fh:
        return json.load(fh)


def test_two_ranks_all_gather(tmp_path):
    log_dir = str(tmp_path / "logs")
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--", COLLECTIVE, "ok"])
    code, out, err = finish(proc)
    assert code == 0, err
    assert "rank 0 of 2 (RANK_ID=0, RANK_SIZE=2): gathered [0, 1]" in out     # rank 0 streamed
    assert "rank 1 of 2" not in out and "[WARNING]" not in out
    assert "rank 1 of 2 (RANK_ID=1, RANK_SIZE=2): gathered [0, 1]" in \
        open(os.path.join(log_dir, "worker_1.log")).read()
    assert f"logs in {log_dir}" in err and "2 ranks finished" in err
    status = status_of(log_dir)
    assert set(status["ranks"]) == {"0", "1"} and status["outcome"]["exit_code"] == 0
    assert_all_gone(marker, status)


def test_killed_rank_ends_the_job(tmp_path):
    log_dir, fault_timeout = str(tmp_path / "logs"), 10
    t0 = time.monotonic()
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--fault-timeout",
                          str(fault_timeout), "--", COLLECTIVE, "kill"])
    code, out, err = finish(proc)
    wall = time.monotonic() - t0
    assert code == 128 + signal.SIGKILL, err
    assert "rank 1 failed first" in err and "SIGKILL" in err
    assert "gathered [0, 1]" in err                         # rank 1's last log lines
    status = status_of(log_dir)
    outcome = status["outcome"]
    assert outcome["first_failure"]["rank"] == 1
    # from the death to the end of the job: bounded by the fault timeout (msrun alone: ~33 s)
    stop = outcome["elapsed_s"] - outcome["first_failure"]["after_s"]
    assert stop < fault_timeout + 5, outcome
    assert wall < outcome["first_failure"]["after_s"] + fault_timeout + 10
    assert_all_gone(marker, status)


def test_rank_exception_is_reported(tmp_path):
    log_dir = str(tmp_path / "logs")
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--", COLLECTIVE, "raise"])
    code, out, err = finish(proc)
    assert code == 1
    assert "rank 1 failed first" in err and "exit status 1" in err
    assert "RuntimeError: rank 1 gives up on purpose" in err
    assert_all_gone(marker, status_of(log_dir))


def test_dead_scheduler_stops_blocked_ranks_after_fault_timeout(tmp_path):
    """msrun does not watch its scheduler: the launcher waits --fault-timeout for the ranks
    (rank 0 blocked in AllGather, rank 1 asleep), then terminates them."""
    log_dir, fault_timeout = str(tmp_path / "logs"), 3
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--fault-timeout",
                          str(fault_timeout), "--", COLLECTIVE, "hang"])
    worker_1 = os.path.join(log_dir, "worker_1.log")
    end = time.monotonic() + 90
    while time.monotonic() < end and proc.poll() is None:
        if os.path.exists(worker_1) and "gathered" in open(worker_1).read():
            break
        time.sleep(0.2)
    status = status_of(log_dir)
    os.kill(status["scheduler_pid"], signal.SIGKILL)
    t_kill = time.monotonic()
    code, out, err = finish(proc)
    assert time.monotonic() - t_kill < fault_timeout + 10
    assert code == 128 + signal.SIGKILL and "scheduler failed first" in err
    assert_all_gone(marker, status_of(log_dir))


def test_timeout_and_sigterm_tear_down(tmp_path):
    # --timeout: ranks that never finish (no cluster: plain sleeping scripts); default log folder
    proc, marker = start(["--nproc", "2", "--timeout", "8", "--", SLEEPER], cwd=str(tmp_path))
    code, out, err = finish(proc, limit=60)
    assert code == 124 and "--timeout 8" in err and "still running: rank 0, rank 1" in err
    (log_dir,) = [os.path.join(tmp_path, "launch_logs", d)
                  for d in os.listdir(tmp_path / "launch_logs")]
    assert "MS_WORKER 0 sleeping" in out
    assert_all_gone(marker, status_of(log_dir))
    # SIGTERM to launch once its ranks are up
    log_dir = str(tmp_path / "term")
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--", SLEEPER])
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if len(status_of(log_dir)["ranks"]) == 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, limit=60)
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in err
    assert_all_gone(marker, status_of(log_dir))


# A rank (MS_WORKER) that answers SIGTERM after `delay` s with exit 0, or ignores it (delay < 0);
# msrun's scheduler process runs the same code and keeps the default SIGTERM action.
TRAPPER = """
import os, signal, sys, time
delay = {delay}
def later(signum, frame):
    print("SIGTERM: ending in", delay, "s", flush=True)
    time.sleep(delay)
    sys.exit(0)
if os.environ.get("MS_ROLE") == "MS_WORKER":
    signal.signal(signal.SIGTERM, later if delay >= 0 else signal.SIG_IGN)
print(os.environ.get("MS_ROLE"), os.environ.get("RANK_ID"), "up", flush=True)
time.sleep(120)
"""


def _ranks_up(proc, log_dir, limit=60):
    """Until both ranks have installed their SIGTERM handling."""
    logs = [os.path.join(log_dir, f"worker_{r}.log") for r in (0, 1)]
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if all(os.path.exists(p) and " up" in open(p).read() for p in logs):
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the ranks did not come up within {limit} s: {proc.communicate()[1]}")


def test_sigterm_gives_the_ranks_the_grace_to_end_by_themselves(tmp_path):
    """Ranks that need 7 s after SIGTERM (more than the former fixed 5 s) end by themselves within
    the default --grace of 15 s; launch reports 143 and sends no SIGKILL."""
    log_dir = str(tmp_path / "logs")
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--", "python", "-c",
                          TRAPPER.format(delay=7)])
    _ranks_up(proc, log_dir)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, limit=60)
    took = time.monotonic() - t0
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in err, err
    assert "every rank ended" in err and "SIGKILL" not in err, err
    assert "SIGTERM: ending in 7 s" in out                  # rank 0 streamed during the grace
    assert 7 <= took < 15, (took, err)
    status = status_of(log_dir)
    assert status["outcome"]["rank_exit"] == {"0": 0, "1": 0}
    assert_all_gone(marker, status)


@pytest.mark.parametrize("second", [None, signal.SIGINT])
def test_ranks_that_ignore_sigterm_are_killed_after_the_grace(tmp_path, second):
    """--grace 2: SIGKILL once it has passed; or a second signal to launch: SIGKILL at once."""
    log_dir = str(tmp_path / "logs")
    grace = 2 if second is None else 60
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--grace", str(grace), "--",
                          "python", "-c", TRAPPER.format(delay=-1)])
    _ranks_up(proc, log_dir)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if second is not None:
        time.sleep(1)
        proc.send_signal(second)
    code, out, err = finish(proc, limit=60)
    took = time.monotonic() - t0
    assert code == 128 + signal.SIGTERM, err                # the first signal names the status
    why = f"--grace {grace} s" if second is None else "a second signal"
    assert f"({why}) to rank 0, rank 1" in err and "SIGKILL after" in err, err
    assert took < (grace + 8 if second is None else 8), (took, err)
    if second is None:
        assert took >= grace
    status = status_of(log_dir)
    # every rank status launch could read is SIGKILL; msrun (itself SIGKILLed at the same moment)
    # sometimes reaps a rank first, and its status is then unknown (None, seen once in CI)
    exits = status["outcome"]["rank_exit"]
    assert set(exits) == {"0", "1"} and -signal.SIGKILL in exits.values(), exits
    assert set(exits.values()) <= {-signal.SIGKILL, None}, exits
    assert_all_gone(marker, status)


def test_subcommand_runs_on_every_rank(tmp_path):
    log_dir = str(tmp_path / "logs")
    proc, marker = start(["--nproc", "2", "--log-dir", log_dir, "--", "plan", "--model", "flash",
                          "--cluster", "cloudmatrix384", "--context", "8K"])
    code, out, err = finish(proc, limit=60)
    assert code == 0, err
    assert "decode:" in out                                 # `python -m tools.cli plan ...` on rank 0
    assert "decode:" in open(os.path.join(log_dir, "worker_1.log")).read()
    assert_all_gone(marker, status_of(log_dir))


# -------------------------------------------------------------------- rank tables, usage errors

def _table(servers=2, per_server=2):
    return {"version": "1.0", "server_count": str(servers), "status": "completed",
            "server_list": [{"server_id": f"10.0.0.{s + 1}", "device": [
                {"device_id": str(d), "device_ip": f"10.1.{s}.{d}",
                 "rank_id": str(s * per_server + d)} for d in range(per_server)]}
                for s in range(servers)]}


def _dup_rank(t):
    t["server_list"][1]["device"][0]["rank_id"] = "1"


def _no_ip(t):
    del t["server_list"][1]["device"][0]["device_ip"]


def _dup_ip(t):
    t["server_list"][1]["device"][1]["device_ip"] = "10.1.0.0"


def _gap(t):
    t["server_list"][1]["device"][0]["rank_id"] = "5"


def _server_count(t):
    t["server_count"] = "3"


def _three_per_server(t):
    for s in t["server_list"]:
        s["device"].append(dict(s["device"][0], device_id="9", device_ip=s["server_id"] + "9"))
    t["server_list"][0]["device"][2]["rank_id"], t["server_list"][1]["device"][2]["rank_id"] = "4", "5"


def _version(t):
    t["version"] = "2.0"


@pytest.mark.parametrize("spoil,words", [
    (_dup_rank, "rank_id 1 appears twice (server 0 device 1, server 1 device 0)"),
    (_no_ip, "server 1 device 0 has no device_ip"),
    (_dup_ip, "device_ip 10.1.0.0 appears twice (server 0 device 0, server 1 device 1)"),
    (_gap, "rank ids must be 0..3: missing 2, unexpected 5"),
    (_server_count, "server_count is 3 but server_list has 2 servers"),
    (_three_per_server, "6 devices, but the job has 4 ranks"),
    (_version, "version is '2.0'"),
    ("{not json", "not JSON"),
])
def test_bad_rank_table_is_refused_before_start(tmp_path, monkeypatch, spoil, words):
    path = tmp_path / "rank_table.json"
    if isinstance(spoil, str):
        path.write_text(spoil)
    else:
        table = _table()
        spoil(table)
        path.write_text(json.dumps(table))
    started = []
    monkeypatch.setattr(launcher.subprocess, "Popen", lambda *a, **k: started.append(a))
    log_dir = tmp_path / "logs"
    r = CliRunner().invoke(main, ["launch", "--nproc", "2", "--nnodes", "2", "--master-addr",
                                  "127.0.0.1", "--rank-table", str(path), "--log-dir", str(log_dir),
                                  "--", COLLECTIVE, "ok"])
    assert r.exit_code == 1 and words in r.output and str(path) in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not log_dir.exists() and started == []


def test_good_rank_table_passes():
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(_table(), fh)
    try:
        assert check_rank_table(fh.name, expected_ranks=4, expected_servers=2) == \
            {"ranks": 4, "servers": 2}
        with pytest.raises(RankTableError, match="2 servers, but the job runs on 1 nodes"):
            check_rank_table(fh.name, expected_ranks=4, expected_servers=1)
    finally:
        os.unlink(fh.name)


def test_plan_script_checks_its_rank_table(tmp_path):
    """A plan's launch script exports the HCCL variables with overridable defaults and runs
    `ascend-v4 launch --rank-table`, which refuses a broken rank table before msrun starts."""
    from tests.test_plan_cli import _cluster_with_hosts, run
    out = tmp_path / "deploy"
    r = run("--model", "flash", "--cluster", _cluster_with_hosts(tmp_path, "10.0.0.1"),
            "--context", "4K", "--out", str(out))
    assert r.exit_code == 0, r.output
    script = out / "launch_decode_0_node0.sh"
    text = script.read_text()
    for var, default in (("HCCL_CONNECT_TIMEOUT", "120"), ("HCCL_EXEC_TIMEOUT", "1836"),
                         ("HCCL_IF_BASE_PORT", "60000")):
        assert f': "${{{var}:={default}}}"' in text
    assert ': "${HCCL_BUFFSIZE:=' in text and "--rank-table=rank_table_decode_0.json" in text
    # a stand-in `ascend-v4` records the environment the launcher would get
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ascend-v4").write_text('#!/bin/sh\nenv | grep ^HCCL_ | sort > "$ARGS"\n')
    (fake / "ascend-v4").chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HCCL_")}   # MindSpore sets some on import
    env = dict(clean, PATH=f"{fake}:{os.environ['PATH']}", ARGS=str(tmp_path / "args.txt"),
               ASCEND_V4_CHECKPOINT=str(tmp_path), HCCL_EXEC_TIMEOUT="99")
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    hccl = (tmp_path / "args.txt").read_text()
    assert "HCCL_EXEC_TIMEOUT=99" in hccl and "HCCL_CONNECT_TIMEOUT=120" in hccl
    # the real launcher refuses a broken rank table: no log folder, no msrun
    table = out / "rank_table_decode_0.json"
    t = json.loads(table.read_text())
    t["server_list"][0]["device"][1]["rank_id"] = "0"
    table.write_text(json.dumps(t))
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    bad = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode != 0 and "rank_id 0 appears twice" in bad.stderr, bad.stderr
    assert not (out / "logs").exists()                      # nothing started


@pytest.mark.parametrize("args,words", [
    (["--nproc", "2"], "no command after `--`"),
    (["--nproc", "2", "--"], "no command after `--`"),
    (["--nproc", "0", "--", COLLECTIVE], "--nproc"),
    (["--nproc", "two", "--", COLLECTIVE], "--nproc"),
    (["--", COLLECTIVE], "--nproc"),
    (["--nproc", "2", "--", "nosuch"], "neither an ascend-v4 sub-command"),
    (["--nproc", "2", "--", "missing.py"], "missing.py: no such script"),
    (["--nproc", "2", "--nnodes", "2", "--node-rank", "2", "--master-addr", "10.0.0.1", "--",
      COLLECTIVE], "--node-rank 2 is not in 0..1"),
    (["--nproc", "2", "--nnodes", "2", "--", COLLECTIVE], "needs --master-addr"),
])
def test_usage_errors(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["launch", *args])
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "launch_logs").exists()
