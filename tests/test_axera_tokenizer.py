"""The CLIP tokenizer against an independent brute-force BPE (OpenAI's algorithm, written out here) and, where
available, transformers' CLIPTokenizer on ComfyUI's real SD1.5 vocabulary."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import regex

from pixart_nodes.core.axera.tokenizer import ClipTokenizer
from tests.support.tiny_axera import build_tokenizer, bytes_to_unicode

PROMPTS = [
    "a pixel art cat sitting on a red roof at sunset",
    "A Photograph of a RED fox   in the\tsnow, highly detailed!!",
    "it's the knight's sword, don't you think?",
    "8k, 1024x768 render #42 (v2.0)",
    "café naïve — ünïcödé ✨ 東京",
    "",
    "x",
]


class BruteBPE:
    """OpenAI CLIP simple_tokenizer's algorithm: repeatedly merge the lowest-ranked adjacent pair."""

    def __init__(self, folder: Path):
        self.encoder = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        self.ranks = {tuple(line.split()): i for i, line in enumerate(lines) if line}
        self.byte_encoder = bytes_to_unicode()
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)

    def bpe(self, token: str) -> list[str]:
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        text = regex.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
        ids = []
        for piece in self.pat.findall(text):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


@pytest.fixture(scope="module")
def tiny_tok_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_brute_force_bpe(tiny_tok_dir, prompt):
    tok = ClipTokenizer.from_dir(tiny_tok_dir)
    assert tok.tokens(prompt) == BruteBPE(tiny_tok_dir).encode(prompt)


def test_padding_truncation_and_specials(tiny_tok_dir):
    tok = ClipTokenizer.from_dir(tiny_tok_dir)
    vocab = json.loads((tiny_tok_dir / "vocab.json").read_text(encoding="utf-8"))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    short = tok.encode("a cat", 77)
    body = tok.tokens("a cat")
    assert short.dtype == np.int64 and short.shape == (77,)
    assert short[0] == bos and list(short[1:1 + len(body)]) == body
    assert (short[1 + len(body):] == eos).all()  # EOS then padding with the pad token (also <|endoftext|>)
    long_prompt = " ".join(["cyberpunk cityscape"] * 60)
    ids = tok.encode(long_prompt, 77)
    assert ids[0] == bos and ids[-1] == eos
    assert list(ids[1:-1]) == tok.tokens(long_prompt)[:75]


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ClipTokenizer.from_dir(tmp_path)


REAL_TOKENIZER = Path.home() / "ComfyUI" / "comfy" / "sd1_tokenizer"


@pytest.mark.skipif(not (REAL_TOKENIZER / "vocab.json").is_file(), reason="no ComfyUI checkout with sd1_tokenizer")
def test_real_sd15_vocab_matches_transformers_and_brute_force():
    transformers = pytest.importorskip("transformers")
    tok = ClipTokenizer.from_dir(REAL_TOKENIZER)
    brute = BruteBPE(REAL_TOKENIZER)
    hf = transformers.CLIPTokenizer.from_pretrained(str(REAL_TOKENIZER))
    for prompt in PROMPTS[:4] + [" ".join(["adult, face portrait photograph, 8k, realistic"] * 10)]:
        ours = tok.encode(prompt, 77)
        theirs = hf(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert list(ours) == list(theirs), prompt
        assert tok.tokens(prompt) == brute.encode(prompt)
