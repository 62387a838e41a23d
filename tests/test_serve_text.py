"""Server pieces without a model: request validation, stop strings and incremental text, the
built-in tokenizer and its chat template, the parallel-config check."""

import pytest

from ascend_v4.serve import protocol
from ascend_v4.serve.protocol import APIError
from ascend_v4.serve.text import TextStream
from ascend_v4.tokenizer import BUILTIN_DIR, TextTokenizer


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer(BUILTIN_DIR)


def test_builtin_tokenizer_round_trips_and_has_deepseek_specials(tok):
    text = "Hello world! Ünïcode 日本語 and 12345."
    ids = tok.encode(text)
    assert ids[0] == tok.tokenizer.token_to_id("<｜begin▁of▁sentence｜>")
    assert tok.decode(ids) == text
    assert tok.vocab_size == 512 and max(ids) < 512
    assert tok.eos_token_ids == (tok.tokenizer.token_to_id("<｜end▁of▁sentence｜>"),)
    chat = tok.render_chat([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                            {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}])
    assert chat == ("<｜begin▁of▁sentence｜>S<｜User｜>U<｜Assistant｜>A<｜end▁of▁sentence｜>"
                    "<｜User｜>V<｜Assistant｜>")


def test_text_stream_holds_back_a_possible_stop_and_cuts_at_it(tok):
    ids = tok.encode("alpha beta gamma delta", add_special_tokens=False)
    stream = TextStream(tok, stops=["gamma"])
    sent = "".join(stream.feed([t]) for t in ids)
    assert sent == "alpha beta " and stream.stopped
    assert tok.decode(ids[:stream.tokens_used]).endswith("gamma")
    assert not tok.decode(ids[:stream.tokens_used - 1]).endswith("gamma")


def test_text_stream_never_splits_utf8(tok):
    ids = tok.encode("日本語", add_special_tokens=False)
    stream = TextStream(tok)
    pieces = [stream.feed([t]) for t in ids[:-1]] + [stream.feed(ids[-1:], final=True)]
    assert "".join(pieces) == "日本語"
    assert all("\ufffd" not in p for p in pieces)


def test_text_without_tokenizer_is_comma_separated_ids():
    stream = TextStream(None)
    assert stream.feed([5, 6]) + stream.feed([7], final=True) == "5,6,7"


@pytest.mark.parametrize("body,param", [
    ({"prompt": "x", "n": 2}, "n"), ({"prompt": "x", "temperature": -1}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"), ({"prompt": "x", "echo": True}, "echo"),
    ({"prompt": 5}, "prompt"), ({}, "prompt"), ({"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
])
def test_protocol_refuses_by_parameter(body, param):
    with pytest.raises(APIError) as err:
        protocol.parse(protocol.CompletionRequest, body)
    assert err.value.param == param and err.value.status == 400


def test_protocol_defaults_follow_openai():
    req = protocol.parse(protocol.CompletionRequest, {"prompt": [1, 2], "temperature": None, "stop": "x"})
    assert (req.max_tokens, req.temperature, req.top_p, req.n) == (16, 1.0, 1.0, 1)
    assert protocol.stop_strings(req) == ["x"]
    chat = protocol.parse(protocol.ChatRequest, {"messages": [{"role": "developer", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "max_completion_tokens": 3})
    assert protocol.chat_messages(chat) == [{"role": "system", "content": "ab"}]
    assert protocol.chat_max_tokens(chat) == 3


def test_serve_cli_refuses_bad_flags_before_loading(tmp_path):
    from click.testing import CliRunner
    from ascend_v4.serve.cli import command
    runner = CliRunner()
    assert "exactly one of --preset or --checkpoint" in runner.invoke(command, []).output
    assert "is not a folder" in runner.invoke(command, ["--checkpoint", str(tmp_path / "none")]).output
    res = runner.invoke(command, ["--preset", "tiny", "--speculative", "eagle"])
    assert res.exit_code == 2 and "eagle" in res.output
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        res = runner.invoke(command, ["--preset", "tiny", "--port", str(busy.getsockname()[1])])
    assert res.exit_code == 2 and "cannot listen on 127.0.0.1" in res.output and "in use" in res.output


def test_top_p_keeps_the_smallest_nucleus():
    import numpy as np
    from ascend_v4.sampling import probabilities
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(probabilities(logits, 1.0, top_p=0.79), [0.625, 0.375, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, 1.0, top_p=0.81), np.array([0.5, 0.3, 0.15, 0]) / 0.95,
                               rtol=1e-12)
    np.testing.assert_allclose(probabilities(logits, 0.5), np.array([25, 9, 2.25, 0.25]) / 36.5, rtol=1e-12)


def test_speculative_sampling_keeps_the_model_distribution():
    """Accept a point-mass draft with probability p(draft), else draw from p without it: the
    emitted token must follow p exactly (empirical frequencies within 3 standard errors)."""
    import numpy as np
    from ascend_v4.engine import Request, SamplingParams
    from ascend_v4.engine.speculative import MtpSpeculator
    from ascend_v4.sampling import probabilities
    logits = np.array([1.0, 0.2, 2.0, -1.0])
    p = probabilities(logits, 0.9, 0.95)
    n, draft = 6000, 0
    tokens = []
    for seed in range(n):
        r = Request([1], SamplingParams(4, temperature=0.9, top_p=0.95, seed=seed))
        got = MtpSpeculator._verify(logits, draft, r)
        tokens.append(draft if got is None else got)
    freq = np.bincount(tokens, minlength=4) / n
    assert np.all(np.abs(freq - p) <= 3 * np.sqrt(p * (1 - p) / n) + 1e-12)
    greedy = Request([1], SamplingParams(4))
    assert MtpSpeculator._verify(logits, 2, greedy) is None and MtpSpeculator._verify(logits, 1, greedy) == 2
