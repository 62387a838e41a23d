"""CLI `generate`/`demo` and the Python API's input checks."""
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from ascend_v4 import oracle
from tools.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def oracle_greedy(ckpt, prompt, n):
    """Greedy continuation computed by the numpy oracle alone."""
    W = oracle.dequantize({k: np.asarray(ckpt.raw(k)) for k in ckpt.schema}, ckpt.config)
    ids = list(prompt)
    for _ in range(n):
        logits, _ = oracle.forward_all(ckpt.config, W, np.array([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    return write_random_checkpoint(load_config("tiny"), str(tmp_path_factory.mktemp("cli") / "ckpt"),
                                   weight_format="fp8", seed=0)


def test_generate_preset_matches_oracle_greedy(tiny_ckpt):
    from ascend_v4.checkpoint import open_checkpoint
    res = run("generate", "--preset", "tiny", "--prompt-ids", "1,2,3", "--max-new-tokens", "4")
    assert res.exit_code == 0, res.output
    ids_line = next(line for line in res.output.splitlines() if re.fullmatch(r"\d+(,\d+)*", line))
    got = [int(t) for t in ids_line.split(",")]        # the decoded text follows on the next line
    # `--preset tiny` uses seed 0 weights: the same checkpoint as the fixture
    assert got == oracle_greedy(open_checkpoint(tiny_ckpt), [1, 2, 3], 4)


def test_generate_text_with_tokenizer(tiny_ckpt):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(["[UNK]", "hello", "world", "ascend"] + [f"w{i}" for i in range(508)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(tiny_ckpt, "tokenizer.json"))
    try:
        res = run("generate", "--checkpoint", tiny_ckpt, "--prompt", "hello world", "--max-new-tokens", "2")
    finally:
        os.remove(os.path.join(tiny_ckpt, "tokenizer.json"))
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    ids = [int(t) for t in lines[-2].split(",")]
    assert len(ids) == 2 and lines[-1] == tok.decode(ids)


def test_text_prompt_needs_a_tokenizer(tmp_path):
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    path = write_random_checkpoint(load_config("tiny"), str(tmp_path / "ckpt"), weight_format="bf16")
    os.remove(os.path.join(path, "tokenizer.json"))      # random checkpoints carry the built-in one
    res = run("generate", "--checkpoint", path, "--prompt", "hi")
    assert res.exit_code != 0 and "--prompt needs a checkpoint with tokenizer.json" in res.output


@pytest.mark.parametrize("args,message", [
    (["--preset", "tiny", "--checkpoint", "x", "--prompt-ids", "1"], "exactly one of --preset or --checkpoint"),
    (["--preset", "tiny"], "exactly one of --prompt-ids or --prompt"),
    (["--preset", "tiny", "--prompt-ids", "1,a"], "expected comma-separated integers"),
    (["--preset", "tiny", "--prompt-ids", "1,999"], "token id out of range [0, 512)"),
    (["--preset", "flash", "--prompt-ids", "1"], "too large to generate random weights"),
    (["--preset", "nano", "--prompt-ids", "1"], "unknown preset or missing file 'nano'"),
    (["--checkpoint", "/no/such/dir", "--prompt-ids", "1"], "/no/such/dir is not a folder"),
    (["--preset", "tiny", "--prompt-ids", "1", "--max-new-tokens", "0"], "0 is not in the range x>=1"),
])
def test_generate_bad_input(args, message):
    res = run("generate", *args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_demo_runs_end_to_end():
    """The main job: checkpoint, load, generate with speed figures, compile, three-way parity."""
    res = run("demo", "--prompt-len", "6", "--new-tokens", "3")
    assert res.exit_code == 0, res.output
    assert "[3/4]" in res.output and "tokens/s" in res.output
    assert "[4/4] compiled 2 graphs to MindIR + ONNX" in res.output
    assert "parity over prefill + 3 decode steps: PASS" in res.output


def test_api_input_checks(tiny_ckpt):
    from ascend_v4.api import InputError
    import ascend_v4
    model = ascend_v4.load(tiny_ckpt)
    with pytest.raises(InputError, match="before any prefill"):
        model([[1]], start_pos=5)
    with pytest.raises(InputError, match="token id out of range"):
        model([[1, 600]], 0)
    with pytest.raises(InputError, match="exceeds max_seq_len 256"):
        model([list(range(257))], 0)
    with pytest.raises(InputError, match="exceeds max_batch_size 2"):
        model([[1]] * 3, 0)
    with pytest.raises(InputError, match="integers of shape"):
        model([[0.5, 1.0]], 0)
    from ascend_v4.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="cannot override dim"):
        ascend_v4.load(tiny_ckpt, dim=64)


def test_sampling_rule():
    from ascend_v4.api import sample
    logits = np.array([[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]])
    np.testing.assert_array_equal(sample(logits, 0.0, np.random.default_rng(0)), [1, 0])
    draws = np.array([sample(logits[:1], 1.0, np.random.default_rng(s))[0] for s in range(4000)])
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    # empirical frequencies within 3 standard errors of softmax(logits / T)
    assert np.all(np.abs(np.bincount(draws, minlength=3) / 4000 - p) < 3 * np.sqrt(p * (1 - p) / 4000))
    same = [sample(logits, 0.7, np.random.default_rng(9)).tolist() for _ in range(2)]
    assert same[0] == same[1]
