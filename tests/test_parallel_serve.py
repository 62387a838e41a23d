"""Serving on 2 ranks through `ascend-v4 launch --nproc 2 -- serve --expert-parallel 2` against a
one-process server with the same preset and seed, both on 127.0.0.1 and asked through the
official `openai` client: greedy answers (text, finish_reason, usage) are identical, alone and
concurrent. Then the job's end: SIGTERM to `launch` drains rank 0 and ends every process of the
job; a SIGKILLed rank 1 ends the job with a non-zero status naming rank 1.

Each launch runs with a marker variable of its own; afterwards no process carrying it may remain
(found through /proc/<pid>/environ, never by name) and its ports must be free. Every wait is
bounded in time; processes are only ever signalled by pid or process group."""
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tools.launcher import _port_free
from tools.procwatch import proc_stat
from tests.test_launch import TEST_MARKER, marked

openai = pytest.importorskip("openai")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = ["--preset", "tiny", "--max-batch", "2", "--prefill-chunk", "16"]
READY_S = 420            # 3 processes compile the tiny serving graphs on 2 cores
REQUEST_S = 120
DRAIN_S, GRACE_S = 20, 40   # generous: other jobs may share the 2 cores and slow the drain
STOP_S = 60              # SIGTERM to launch -> launch has exited


def _pgrp(pid):
    st = proc_stat(pid)
    return st.pgrp if st else None


class Launch:
    """`python -m tools.cli launch --nproc 2 [launch args] -- serve ...` as a real process with a
    marker of its own; stdout / stderr go to files (a full pipe would stall rank 0's stream)."""

    def __init__(self, tmp, name, launch_args, serve_args):
        from ascend_v4.serve.process import free_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = str(tmp / f"{name}_logs")
        self.marker = uuid.uuid4().hex
        self.out_path, self.err_path = str(tmp / f"{name}.out"), str(tmp / f"{name}.err")
        env = dict(os.environ, GLOG_v="3", **{TEST_MARKER: self.marker})
        argv = [sys.executable, "-m", "tools.cli", "launch", "--nproc", "2", "--log-dir", self.log_dir,
                *launch_args, "--", "serve", *SERVE, *serve_args, "--port", str(self.port)]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)

    def status(self):
        try:
            with open(os.path.join(self.log_dir, "launch_node0.json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):             # not written yet / being replaced
            return None

    def text(self, what):
        path = {"out": self.out_path, "err": self.err_path}.get(what) or os.path.join(self.log_dir, what)
        try:
            with open(path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def wait_ready(self, timeout_s):
        """Until rank 0 answers /health and rank 1 has loaded (it is then replaying rank 0)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"launch exited with {self.proc.returncode}:\n{self.text('err')}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200 \
                        and "loaded tiny" in self.text("worker_1.log"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"2-rank server not ready after {timeout_s} s:\n{self.text('err')}\n"
                           f"{self.text('out')[-3000:]}")

    def wait(self, timeout_s):
        """launch's exit status, or None if it still runs after timeout_s."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def leftovers(self):
        """Processes of this job still alive: marked ones and members of its recorded groups."""
        groups = set((self.status() or {}).get("process_groups", []))
        left = set(marked(self.marker))
        left.update(int(n) for n in os.listdir("/proc") if n.isdigit() and _pgrp(int(n)) in groups)
        return sorted(left)

    def assert_all_gone(self):
        end = time.monotonic() + 5
        while self.leftovers() and time.monotonic() < end:      # init reaps orphans' zombies
            time.sleep(0.1)
        assert self.leftovers() == []
        status = self.status()
        assert _port_free(status["master_port"]), status
        assert _port_free(self.port)

    def cleanup(self):
        """After a failed test: SIGTERM to launch (its teardown), then SIGKILL by pid and group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(STOP_S) is None:
                self.proc.kill()
                self.proc.wait(10)
        groups = set((self.status() or {}).get("process_groups", []))
        left = marked(self.marker)
        for pgid in groups & {_pgrp(pid) for pid in left}:    # only groups still holding the job
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(one process, two ranks), started together so that they compile at the same time."""
    from ascend_v4.serve.process import ServerProcess
    tmp = tmp_path_factory.mktemp("parallel_serve")
    single = ServerProcess(SERVE, str(tmp / "single.log"))
    multi = Launch(tmp, "ep2", ["--grace", str(GRACE_S)],
                   ["--expert-parallel", "2", "--drain-timeout", str(DRAIN_S)])
    try:
        t0 = time.monotonic()
        single.wait_ready(READY_S)
        multi.wait_ready(max(30.0, READY_S - (time.monotonic() - t0)))
        yield single, multi
    finally:
        multi.cleanup()
        single.stop()


def client_of(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=REQUEST_S, max_retries=0)


def complete(url, prompt, max_tokens=8):
    res = client_of(url).completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens,
                                            temperature=0)
    return res.choices[0].text, res.choices[0].finish_reason, res.usage.model_dump()


def chat_streamed(url, messages, max_tokens=8):
    chunks = list(client_of(url).chat.completions.create(
        model="tiny", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage.model_dump() for c in chunks if c.usage]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(finish) == 1 and len(usage) == 1
    return text, finish[0], usage[0]


TOKENS = list(range(5, 45))            # 40 tokens: a prefill in 3 chunks of 16
TEXT = "The quick brown fox jumps over the lazy dog."
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello! How are you?"}]
ANSWERS = {}                           # the one-process answers, for the tests further down


@pytest.mark.parametrize("prompt", [TOKENS, TEXT], ids=["token-ids", "text"])
def test_greedy_completion_equals_one_process(servers, prompt):
    single, multi = servers
    want = complete(single.url, prompt)
    got = complete(multi.url, prompt)
    assert got == want
    assert want[2]["completion_tokens"] >= 1 and want[1] in ("stop", "length")
    ANSWERS[str(prompt)] = want


def test_streamed_chat_equals_one_process(servers):
    single, multi = servers
    want = chat_streamed(single.url, MESSAGES)
    assert chat_streamed(multi.url, MESSAGES) == want
    assert want[0]


def test_two_concurrent_requests_equal_their_answers_alone(servers):
    """Both slots of the 2-rank server busy at once (one prompt in 3 prefill chunks)."""
    single, multi = servers
    prompts = [TOKENS, TEXT]
    alone = [complete(multi.url, p) for p in prompts]
    with cf.ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: complete(multi.url, p), prompts, timeout=REQUEST_S))
    assert together == alone
    for p, a in zip(prompts, alone):
        assert a == ANSWERS.get(str(p)) or a == complete(single.url, p)


def test_sigterm_to_launch_drains_rank_zero_and_ends_the_job(servers):
    """A stream in flight when `launch` gets SIGTERM: launch forwards SIGTERM to the ranks alone,
    rank 0 drains the stream to its end within --drain-timeout, every process of the job ends
    within launch's --grace without a SIGKILL from launch, and the ports are free."""
    single, multi = servers
    want = chat_streamed(single.url, MESSAGES)
    stream = client_of(multi.url).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = [next(stream)]                   # the request is running on both ranks
    t0 = time.monotonic()
    multi.proc.send_signal(signal.SIGTERM)
    chunks += list(stream)
    code = multi.wait(STOP_S)
    took = time.monotonic() - t0
    assert code is not None, f"launch still runs {STOP_S} s after SIGTERM"
    err = multi.text("err")
    assert code == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "SIGKILL" not in err, err
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage.model_dump() for c in chunks if c.usage]
    assert (text, finish, usage) == (want[0], [want[1]], [want[2]])     # drained, not aborted
    assert "signal 15: draining" in multi.text("worker_0.log")
    assert "signal 15: draining" in multi.text("out")                    # rank 0 streamed to the end
    assert took < STOP_S
    multi.assert_all_gone()
    outcome = multi.status()["outcome"]
    assert outcome["exit_code"] == 128 + signal.SIGTERM
    ANSWERS["sigterm"] = outcome


def test_after_sigterm_every_rank_exits_by_itself():
    """Rank 0 releases rank 1 after its drain and both exit 0 (then msrun does not SIGKILL)."""
    outcome = ANSWERS.get("sigterm")
    if outcome is None:
        pytest.skip("the SIGTERM test did not get that far")
    assert outcome["rank_exit"] == {"0": 0, "1": 0}, outcome


def test_sigkilled_rank_one_ends_the_serving_job(tmp_path):
    """rank 1 (found in launch's status file, checked through /proc) SIGKILLed while the 2-rank
    server is up: launch exits non-zero within --fault-timeout + a margin, naming rank 1."""
    fault_timeout = 10
    job = Launch(tmp_path, "killed", ["--fault-timeout", str(fault_timeout), "--grace", "5"],
                 ["--expert-parallel", "2", "--no-warmup"])
    try:
        job.wait_ready(READY_S)
        pid = int(job.status()["ranks"]["1"])
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
        assert f"{TEST_MARKER}={job.marker}".encode() in env and b"RANK_ID=1" in env
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        code = job.wait(fault_timeout + 5 + 20)
        took = time.monotonic() - t_kill
        err = job.text("err")
        assert code is not None, f"launch still runs {took:.0f} s after rank 1 was killed:\n{err}"
        assert code == 128 + signal.SIGKILL, err
        assert "rank 1 failed first" in err and "SIGKILL" in err, err
        assert took < fault_timeout + 15, err
        job.assert_all_gone()
        outcome = job.status()["outcome"]
        assert outcome["first_failure"]["rank"] == 1 and outcome["first_failure"]["pid"] == pid
    finally:
        job.cleanup()
