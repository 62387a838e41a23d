"""Text <-> token ids for checkpoints that carry `tokenizer.json` (the `tokenizers` package), the
chat template of `tokenizer_config.json` (Jinja, rendered in a sandbox), and the built-in
byte-level BPE (vocab 512) that the tiny presets and their random checkpoints ship with.

The built-in tokenizer is `ascend_v4/presets/tokenizer/` (tokenizer.json, tokenizer_config.json),
made by `build_builtin(out_dir)` from `_CORPUS`; its special tokens are DeepSeek's.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
BUILTIN_DIR = os.path.join(os.path.dirname(__file__), "presets", "tokenizer")
BUILTIN_VOCAB = 512
FILES = ("tokenizer.json", "tokenizer_config.json")

# DeepSeek-style turns: system text first, then <User>..., <Assistant>...<eos>; ends with an open
# assistant turn when add_generation_prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}")

_CORPUS = """\
DeepSeek-V4 is a mixture-of-experts language model. Each token is routed to a few experts out of many.
The attention layers keep a sliding window of recent tokens and a compressed cache of older ones.
A lightning indexer picks the compressed entries that a query reads; the rest are skipped.
Hyper-connections mix several residual streams with a doubly stochastic matrix from Sinkhorn iterations.
Weights are stored in FP8 with block scales, and the routed experts in FP4 with scales per 32 values.
Ascend NPUs run the model with MindSpore graphs; the CPU runs the same graphs for verification.
The server answers OpenAI-style requests: completions, chat completions, streaming, and metrics.
Hello! How are you today? I am fine, thank you. What would you like to know about the weather?
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
Once upon a time there was a small model that learned to count: one, two, three, four, five, six.
Numbers like 0 1 2 3 4 5 6 7 8 9 10 16 32 64 128 256 512 1024 and words like the, and, of, to, in.
Please write a short poem about the sea. The sea is wide and blue, the waves come in and out again.
def main():\n    print("hello world")\n    return 0\n
User: summarise this text. Assistant: the text describes how a deployment toolkit serves a model.
"""


def build_builtin(out_dir: str = BUILTIN_DIR, vocab_size: int = BUILTIN_VOCAB) -> None:
    """Train the built-in byte-level BPE on _CORPUS and write tokenizer.json +
    tokenizer_config.json into out_dir (how the shipped files were made)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, USER, ASSISTANT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS.splitlines(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump({"bos_token": BOS, "eos_token": EOS, "add_bos_token": True,
                   "model_max_length": 1 << 20, "chat_template": CHAT_TEMPLATE}, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


class TokenizerError(ValueError):
    """A tokenizer file that cannot be read, or a chat that cannot be rendered."""


def _token_text(value) -> Optional[str]:
    """tokenizer_config.json writes special tokens as strings or {"content": ...} objects."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class TextTokenizer:
    """tokenizer.json (+ tokenizer_config.json): encode, decode, chat template, EOS ids."""

    def __init__(self, folder: str):
        from tokenizers import Tokenizer
        self.folder = folder
        try:
            self.tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        except Exception as exc:   # the tokenizers package raises its own Exception subclass
            raise TokenizerError(f"{folder}/tokenizer.json: cannot be read ({exc})") from None
        config: Dict = {}
        path = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    config = json.load(fh)
            except (OSError, ValueError) as exc:
                raise TokenizerError(f"{path}: {exc}") from None
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.chat_template: Optional[str] = config.get("chat_template")
        eos = self.tokenizer.token_to_id(self.eos_token) if self.eos_token else None
        self.eos_token_ids = () if eos is None else (eos,)
        self.vocab_size = self.tokenizer.get_vocab_size()

    @classmethod
    def from_dir(cls, folder: Optional[str]) -> Optional["TextTokenizer"]:
        """The folder's tokenizer, or None when it has no tokenizer.json."""
        if not folder or not os.path.exists(os.path.join(folder, "tokenizer.json")):
            return None
        return cls(folder)

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_chat(self, messages: Sequence[Dict[str, str]]) -> str:
        """messages [{role, content}] -> the prompt text, ending in an open assistant turn."""
        if not self.chat_template:
            raise TokenizerError("this model's tokenizer_config.json has no chat_template")
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        try:
            template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
                self.chat_template)
            return template.render(messages=list(messages), add_generation_prompt=True,
                                   bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as exc:
            raise TokenizerError(f"chat template: {exc}") from None

    def encode_chat(self, messages: Sequence[Dict[str, str]]) -> List[int]:
        """The rendered chat as ids (the template writes its own BOS)."""
        return self.encode(self.render_chat(messages), add_special_tokens=False)


def copy_builtin(out_dir: str, vocab_size: int) -> bool:
    """Put the built-in tokenizer into a checkpoint folder whose vocab holds it; True if copied."""
    if vocab_size < BUILTIN_VOCAB:
        return False
    for name in FILES:
        shutil.copyfile(os.path.join(BUILTIN_DIR, name), os.path.join(out_dir, name))
    return True


if __name__ == "__main__":   # regenerate the shipped files: python -m ascend_v4.tokenizer
    build_builtin()
