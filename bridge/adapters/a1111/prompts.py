"""What A1111 does to a prompt before the model sees it, and how each step reaches ComfyUI:

- `#` comments are removed (option `enable_prompt_comments`);
- extra-network tags `<lora:name:te:unet>` (and `<lyco:...>`) are taken out of the text and become the job's
  `loras` list, applied by the workflow's LoRA stack; other tags (`<hypernet:...>`) are removed and skipped, as
  A1111 skips networks it does not know;
- textual-inversion embeddings named bare, as A1111 users write them, become ComfyUI's `embedding:name`.

The infotext keeps the prompt as the client wrote it (tags included), as A1111's does.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

log = logging.getLogger("bridge.adapters.a1111")

_TAG = re.compile(r"<(\w+):([^>]+)>")
_LINE_COMMENT = re.compile(r"(^|\n)#[^\n]*(\n|$)")
_TRAILING_COMMENT = re.compile(r"#[^\n]*(\n|$)")
LORA_TAGS = ("lora", "lyco")


def strip_comments(text: str) -> str:
    """A1111's prompt comments: a line starting with `#` goes, and so does the rest of a line after `#`."""
    text = _LINE_COMMENT.sub("\n", text)
    return _TRAILING_COMMENT.sub("\n", text).strip("\n")


@dataclass(frozen=True)
class LoraTag:
    name: str
    te: float  # text-encoder (CLIP) multiplier
    unet: float  # UNet (model) multiplier


@dataclass
class Networks:
    loras: list[LoraTag] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _number(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{tag}: {text!r} is not a number") from None


def parse_lora(items: list[str], tag: str) -> LoraTag:
    """A1111's reading of `<lora:name[:te[:unet]]>` with named `te=`/`unet=` items."""
    positional = [i for i in items if i.count("=") != 1]
    named = dict(i.split("=", 1) for i in items if i.count("=") == 1)
    if not positional:
        raise ValueError(f"{tag}: no LoRA name")
    te = _number(positional[1], tag) if len(positional) > 1 else 1.0
    te = _number(named["te"], tag) if "te" in named else te
    unet = _number(positional[2], tag) if len(positional) > 2 else te
    unet = _number(named["unet"], tag) if "unet" in named else unet
    return LoraTag(positional[0], te, unet)


def take_networks(prompt: str) -> tuple[str, Networks]:
    """The prompt without its extra-network tags, and the networks they name."""
    nets = Networks()

    def take(match: re.Match[str]) -> str:
        kind, args = match.group(1), match.group(2)
        if kind in LORA_TAGS:
            try:
                nets.loras.append(parse_lora(args.split(":"), match.group(0)))
            except ValueError as exc:
                log.info("A1111 prompt: %s skipped (%s)", match.group(0), exc)
                nets.skipped.append(match.group(0))
        else:
            nets.skipped.append(match.group(0))
        return ""

    # Every tag ends at a `>`: past the last one nothing is searched. A search from each `<` of a text without `>`
    # ran to its end, the square of its length (a 10,000-character prompt: 0.14 s, once per image of a batch).
    end = prompt.rfind(">") + 1
    return _TAG.sub(take, prompt[:end]) + prompt[end:], nets


def lora_files(tags: list[LoraTag], files: list[str], aliases: dict[str, str] | None = None
               ) -> tuple[list[dict[str, object]], list[str]]:
    """The `loras` job parameter for A1111's tags: each name found by file stem (or training alias), strengths
    as ComfyUI's LoraLoader takes them (model = unet, clip = te). Names the backend lacks are left out and
    returned, as A1111 skips a LoRA it cannot find."""
    by_stem: dict[str, str] = {}
    for f in files:
        by_stem[PurePath(f).stem] = f  # A1111 flattens sub-folders: the same stem twice, the last one wins
    found, missing = [], []
    for tag in tags:
        name = by_stem.get(tag.name) or (aliases or {}).get(tag.name) or (tag.name if tag.name in files else None)
        if name is None:
            missing.append(tag.name)
            continue
        found.append({"name": name, "strength": tag.unet, "clip_strength": tag.te})
    return found, missing


def for_model(texts: list[str], embeddings: Iterable[str]) -> list[str]:
    """What the model reads of each prompt: its extra-network tags taken out and its embeddings named the ComfyUI
    way, each distinct text once (a batch repeats one prompt up to 64 times)."""
    names = list(embeddings)
    done: dict[str, str] = {}
    for text in texts:
        if text not in done:
            done[text] = with_embeddings(take_networks(text)[0], names)
    return [done[text] for text in texts]


class _Embeddings:
    """Every embedding name of a backend as one pattern, matched in one pass over a prompt. A pass per name took
    the prompt's length times the number of names, on the event loop (64 distinct prompts of 8,400 characters and
    300 embeddings: 6 s), and replaced a name inside one replaced before (`foo-bar` with `foo-bar` and `bar`
    installed became `embedding:foo-embedding:bar`)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        # ComfyUI names a file in a sub-folder `sub/name`; A1111 users write only `name`. Of names written alike
        # (any case) the first one listed wins.
        self.by_word: dict[str, str] = {}
        for name in names:
            self.by_word.setdefault(PurePath(name).name.lower(), name)
        words = [w for w in self.by_word if w]
        self.pattern = None

        def whole_words(body: str) -> re.Pattern[str]:
            return re.compile(rf"(?<![\w:/])({body})(?![\w])", re.IGNORECASE)

        if words:
            try:
                self.pattern = whole_words(_trie(words))
            except (RecursionError, re.error, OverflowError):
                # a pathological list (names nested hundreds deep): plain alternatives, the longest first
                self.pattern = whole_words("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)))

    def name(self, word: str) -> str:
        found = self.by_word.get(word.lower())
        if found is None:  # a case folding that lower() does not undo (IGNORECASE matched it)
            found = next((name for w, name in self.by_word.items()
                          if re.fullmatch(re.escape(w), word, re.IGNORECASE)), word)
        return found

    def sub(self, prompt: str) -> str:
        if self.pattern is None:
            return prompt
        return self.pattern.sub(lambda m: f"embedding:{self.name(m.group(1))}", prompt)


def _trie(words: list[str]) -> str:
    """A pattern matching any of `words`, as a prefix tree (each place of a prompt is tried against the names'
    common prefixes once, not against every name); at each place the longest name that ends there wins."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = []
        for ch in sorted(k for k in node if k):
            text, child = re.escape(ch), node[ch]
            while len(child) == 1 and "" not in child:  # a run with one way on is one literal
                (nxt, child), = child.items()
                text += re.escape(nxt)
            branches.append(text + build(child))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)


@functools.lru_cache(maxsize=8)
def _embeddings(names: tuple[str, ...]) -> _Embeddings:
    return _Embeddings(names)


def with_embeddings(prompt: str, names: Iterable[str]) -> str:
    """Bare embedding names written as ComfyUI's `embedding:name` (whole words, any case, as A1111 matches them
    by CLIP tokens); names already written the ComfyUI way are left alone."""
    return _embeddings(tuple(names)).sub(prompt)
