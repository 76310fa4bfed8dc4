"""CLIP BPE tokenizer read from the Axera release's ``tokenizer/`` folder (vocab.json + merges.txt).

The reference scripts call ``CLIPTokenizer.from_pretrained(dir)(prompt, padding="max_length", max_length=77,
truncation=True)``. This builds the same tokenizer with the ``tokenizers`` library alone, so the node pack does not
need ``transformers``: NFC + whitespace collapse + lowercase, CLIP's word regex, byte-level BPE with the ``</w>``
end-of-word suffix, then ``<|startoftext|> ids <|endoftext|>`` truncated and padded to the text encoder's length.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLIP_WORD_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def _token_content(value: object, default: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return default


def read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{path}: line {line_no} is not a merge pair: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class ClipTokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], pad_token: str = EOS):
        from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        for special in (BOS, EOS, pad_token):
            if special not in vocab:
                raise ValueError(f"tokenizer: vocab.json has no {special!r} token")
        self.vocab_size = len(vocab)
        self.bos_id = vocab[BOS]
        self.eos_id = vocab[EOS]
        self.pad_id = vocab[pad_token]
        tok = Tokenizer(
            BPE(
                vocab=vocab,
                merges=merges,
                continuing_subword_prefix="",
                end_of_word_suffix="</w>",
                fuse_unk=False,
                unk_token=EOS,
            )
        )
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CLIP_WORD_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        self._tok = tok

    @classmethod
    def from_dir(cls, folder: str | Path) -> "ClipTokenizer":
        folder = Path(folder)
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        for f in (vocab_file, merges_file):
            if not f.is_file():
                raise FileNotFoundError(f"tokenizer: {f} is missing (the Axera release ships vocab.json and merges.txt)")
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        pad = EOS
        special_map = folder / "special_tokens_map.json"
        if special_map.is_file():
            pad = _token_content(json.loads(special_map.read_text(encoding="utf-8")).get("pad_token"), EOS)
        return cls(vocab, read_merges(merges_file), pad_token=pad)

    def tokens(self, text: str) -> list[int]:
        """Ids of the text without special tokens, untruncated."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str, length: int = 77) -> np.ndarray:
        """``int64 [length]``: BOS, ids (truncated to fit), EOS, then padding, as CLIPTokenizer max_length padding."""
        if length < 2:
            raise ValueError(f"tokenizer: length must be at least 2, got {length}")
        ids = [self.bos_id, *self.tokens(text)[: length - 2], self.eos_id]
        out = np.full(length, self.pad_id, dtype=np.int64)
        out[: len(ids)] = ids
        return out
