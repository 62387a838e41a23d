"""A live `python -m ascend_v4.serve --preset tiny` on 127.0.0.1 against the official `openai`
client and raw HTTP: every greedy answer equals `Model.generate` of the same request alone (an
in-process model with the same weights), under 16 concurrent streams too; cancellation, queue
overflow, every bad input, metrics, and SIGTERM under load. Loops are bounded in count and time."""
import concurrent.futures as cf
import contextlib
import os
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

openai = pytest.importorskip("openai")

SLOTS, QUEUE, CHUNK = 4, 12, 64
ARGS = ["--preset", "tiny", "--max-batch", str(SLOTS), "--max-queue", str(QUEUE), "--prefill-chunk", str(CHUNK),
        "--drain-timeout", "2"]
READY_S, REQUEST_S = 600, 300


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ascend_v4.serve.process import ServerProcess
    srv = ServerProcess(ARGS, str(tmp_path_factory.mktemp("serve") / "server.log"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def solo():
    """The same model in this process (same preset and seed -> the same weights and runtime)."""
    import ascend_v4
    model = ascend_v4.load("tiny", max_batch_size=SLOTS, prefill_chunk=CHUNK)

    def run(prompt_ids, max_tokens, **sampling):
        out = model.generate([prompt_ids], max_tokens, **sampling)[0]
        eos = model.tokenizer.eos_token_ids
        cut = next((i + 1 for i, t in enumerate(out) if t in eos), len(out))    # the server stops at EOS
        return out[:cut]
    run.model = model
    return run


@pytest.fixture(scope="module")
def client(server, solo):
    server.wait_ready(READY_S)       # the solo model compiled meanwhile
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", timeout=REQUEST_S, max_retries=0)


def metric(server, name, **labels):
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_models_health_and_text_completion(client, server, solo):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    tok = solo.model.tokenizer
    prompt = "The quick brown fox jumps over the lazy dog."
    res = client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
    want = solo(tok.encode(prompt), 10)
    assert res.choices[0].text == tok.decode(want)
    assert res.usage.prompt_tokens == len(tok.encode(prompt))
    assert res.usage.completion_tokens == len(want)
    assert res.choices[0].finish_reason == ("stop" if want[-1] in tok.eos_token_ids else "length")


def test_chat_plain_and_streamed(client, solo):
    tok = solo.model.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello! How are you?"}]
    want = tok.decode(solo(tok.encode_chat(messages), 8))
    res = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    assert res.choices[0].message.role == "assistant"
    assert res.choices[0].message.content == want
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-1].usage.prompt_tokens == len(tok.encode_chat(messages))


def test_token_id_prompt_and_seeded_sampling_match_generate(client, solo):
    prompt = list(range(5, 45))
    res = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0.8, top_p=0.9, seed=7)
    want = solo(prompt, 6, temperature=0.8, top_p=0.9, seed=7)
    assert res.choices[0].text == solo.model.tokenizer.decode(want)
    assert res.usage.completion_tokens == len(want)


def test_stop_string_cuts_the_text(client, solo):
    tok = solo.model.tokenizer
    prompt = "Once upon a time there was"
    full = tok.decode(solo(tok.encode(prompt), 12))
    at = next((i for i, c in enumerate(full) if i > 0 and c.isascii() and c.isalnum()), None)
    if at is None:
        pytest.skip(f"no ASCII letter to stop at in {full!r}")
    stop = full[at]
    res = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0, stop=[stop])
    assert res.choices[0].text == full[:full.index(stop)]
    assert res.choices[0].finish_reason == "stop"
    assert res.usage.completion_tokens <= 12


def test_sixteen_concurrent_streams_each_equal_their_solo_run(client, solo):
    """16 streams of different prompt lengths (chunked prefill up to 3 chunks) and max_tokens fill
    4 slots and 12 queue places; each stream's text equals its request run alone."""
    rng = np.random.default_rng(11)
    lengths = [3, 150, 17, 64, 65, 1, 90, 33, 8, 129, 40, 12, 70, 5, 101, 26]
    jobs = [(rng.integers(3, 500, n).tolist(), int(rng.integers(2, 12))) for n in lengths]

    def stream(job):
        prompt, max_tokens = job
        pieces, finish = [], None
        for chunk in client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens,
                                               temperature=0, stream=True):
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        return "".join(pieces), finish

    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(stream, jobs, timeout=REQUEST_S))
    tok = solo.model.tokenizer
    for (prompt, max_tokens), (text, finish) in zip(jobs, results):
        want = solo(prompt, max_tokens)
        assert text == tok.decode(want), f"prompt of {len(prompt)} tokens"
        assert finish in ("stop", "length")


def test_cancelled_stream_frees_its_slot(client, server):
    aborted = metric(server, "ascend_v4_request_finish_total", reason="abort")
    stream = client.completions.create(model="tiny", prompt=list(range(1, 30)), max_tokens=200, temperature=0,
                                       stream=True)
    got = [next(iter(stream)) for _ in range(2)]
    assert all(c.choices for c in got)
    stream.close()
    deadline = time.monotonic() + 30
    while metric(server, "ascend_v4_request_finish_total", reason="abort") == aborted:
        assert time.monotonic() < deadline, "the cancelled request was never aborted"
        time.sleep(0.2)
    assert metric(server, "ascend_v4_kv_slots_in_use") == 0


def test_full_queue_answers_429_and_the_server_recovers(client, server):
    """SLOTS running + QUEUE waiting long streams, then one more request is refused at once."""
    body = {"model": "tiny", "prompt": [7, 8, 9], "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as http, contextlib.ExitStack() as streams:
        for _ in range(SLOTS + QUEUE):          # each answer's headers come after its request is queued
            assert streams.enter_context(http.stream("POST", "/v1/completions", json=body)).status_code == 200
        extra = http.post("/v1/completions", json={**body, "stream": False})
        assert extra.status_code == 429
        assert extra.json()["error"]["code"] == "queue_full"
    deadline = time.monotonic() + 60
    while metric(server, "ascend_v4_kv_slots_in_use") or metric(server, "ascend_v4_requests_waiting"):
        assert time.monotonic() < deadline, "cancelled streams kept their slots"
        time.sleep(0.25)
    res = client.completions.create(model="tiny", prompt=[1, 2, 3], max_tokens=2, temperature=0)
    assert res.usage.completion_tokens >= 1


BAD = [  # (endpoint, body or raw text, param named in the error)
    ("/v1/completions", "{not json", None),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 4, "n": 2}, "n"),
    ("/v1/completions", {"model": "nope", "prompt": "hi"}, "model"),
    ("/v1/completions", {"model": "tiny"}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": list(range(300))}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 300}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "temperature": -0.5}, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 99999]}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 2}, "logprobs"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "many"}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 3}, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
     "tools"),
    ("/v1/chat/completions", [1, 2], None),
]


@pytest.mark.parametrize("endpoint,body,param", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_400_with_an_openai_error(client, server, endpoint, body, param):
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) \
        else {"json": body}
    r = httpx.post(server.url + endpoint, timeout=60, **kw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["param"] == param
    assert set(err) == {"message", "type", "param", "code"}


def test_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="tiny", prompt="hi", temperature=-1)


def test_shared_prefix_is_cached_and_reported(client, server, solo):
    """Two prompts sharing 150 token ids: the second restores the first's state at its page
    boundary (128 positions) and reports it as usage.prompt_tokens_details.cached_tokens; its
    answer equals the request run alone (same chunk boundaries, so the same numbers)."""
    rng = np.random.default_rng(21)
    shared = rng.integers(3, 500, 150).tolist()
    before = metric(server, "ascend_v4_prompt_tokens_cached_total")
    first = client.completions.create(model="tiny", prompt=shared + [7, 8], max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    prompt = shared + rng.integers(3, 500, 20).tolist()
    res = client.completions.create(model="tiny", prompt=prompt, max_tokens=6, temperature=0)
    assert res.usage.prompt_tokens_details.cached_tokens == 128
    assert res.choices[0].text == solo.model.tokenizer.decode(solo(prompt, 6))
    deadline = time.monotonic() + 10
    while metric(server, "ascend_v4_prompt_tokens_cached_total") < before + 128:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_metrics_count_what_happened(client, server):
    before = metric(server, "ascend_v4_generation_tokens_total")
    res = client.completions.create(model="tiny", prompt=[4, 5, 6], max_tokens=3, temperature=0)
    deadline = time.monotonic() + 10
    while metric(server, "ascend_v4_generation_tokens_total") < before + res.usage.completion_tokens:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert metric(server, "ascend_v4_requests_total", endpoint="/v1/completions", status="400") >= 1
    assert metric(server, "ascend_v4_requests_total", endpoint="/v1/completions", status="429") >= 1
    assert metric(server, "ascend_v4_time_to_first_token_seconds_count") >= 1
    assert metric(server, "ascend_v4_time_per_output_token_seconds_count") >= 1
    assert metric(server, "ascend_v4_kv_slots_total") == SLOTS
    assert metric(server, "ascend_v4_requests_running") == 0


def test_sigterm_under_load_ends_the_server_quickly(client, server):
    """Last in this module: streams in flight, SIGTERM; the process exits within a few seconds
    (drain 2 s) and every stream ends."""
    def stream(_):
        n = 0
        try:
            for chunk in client.completions.create(model="tiny", prompt=[9, 9, 9], max_tokens=200,
                                                   temperature=0, stream=True):
                n += 1
        except (openai.APIError, httpx.HTTPError):
            pass
        return n

    with cf.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stream, i) for i in range(3)]
        deadline = time.monotonic() + 120
        while metric(server, "ascend_v4_requests_running") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        t0 = time.monotonic()
        server.terminate()
        code = server.proc.wait(timeout=30)
        took = time.monotonic() - t0
        counts = [f.result(timeout=30) for f in futures]
    assert code == 0, server.log_tail()          # drained, then a normal exit (multi-rank: releases the others)
    assert took < 15, f"took {took:.1f} s to stop"
    assert all(n >= 1 for n in counts)
    log = server.log_tail(60)
    assert "Finished server process" in log and "Traceback" not in log
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)          # nothing of the server's process group is left


# ---- MTP speculation, in process on the solo model (the engine the server runs) ----------------
def _run(engine, requests, steps=400):
    for r in requests:
        engine.submit(r)
    for _ in range(steps):
        if not engine.has_work():
            break
        engine.step()
    assert not engine.has_work(), "requests did not finish within the step bound"


def _jobs():
    rng = np.random.default_rng(5)
    return [(rng.integers(3, 500, n).tolist(), k) for n, k in ((6, 9), (40, 7), (70, 12), (19, 5), (2, 8))]


def test_mtp_speculation_equals_plain_greedy(solo):
    from ascend_v4.engine import Engine, Request, SamplingParams
    engine = Engine(solo.model, speculative="mtp")
    reqs = [Request(p, SamplingParams(k)) for p, k in _jobs()]
    _run(engine, reqs)
    for (p, k), r in zip(_jobs(), reqs):
        assert r.output == solo.model.generate([p], k)[0]
    assert sum(r.drafted for r in reqs) > 0


def test_accepted_and_rejected_drafts_are_exact(solo):
    """Drafts from an oracle that knows the greedy continuation: right for even slots, wrong for
    odd ones, so verification accepts (2 tokens per step) and rolls back in the same batch."""
    from ascend_v4.engine import Engine, Request, SamplingParams
    jobs = _jobs()
    want = [solo.model.generate([p], k)[0] for p, k in jobs]
    engine = Engine(solo.model, speculative="mtp")
    reqs = [Request(p, SamplingParams(k)) for p, k in jobs]
    truth = {r.request_id: w for r, w in zip(reqs, want)}
    spec = engine.speculator
    real_drafts = spec._drafts

    def oracle(rows):
        drafts = real_drafts(rows)          # the real MTP head decides which rows draft
        for r in rows:
            if r.slot in drafts:
                right = truth[r.request_id][len(r.output)]
                drafts[r.slot] = right if r.slot % 2 == 0 else (right + 1) % 512
        return drafts
    spec._drafts = oracle
    _run(engine, reqs)
    for r, w in zip(reqs, want):
        assert r.output == w
    accepted = sum(r.accepted for r in reqs)
    assert 0 < accepted < sum(r.drafted for r in reqs)
