"""What A1111 does to a prompt before the model sees it, and how each step reaches ComfyUI:

- `#` comments are removed (option `enable_prompt_comments`);
- extra-network tags `<lora:name:te:unet>` (and `<lyco:...>`) are taken out of the text and become the job's
  `loras` list, applied by the workflow's LoRA stack; other tags (`<hypernet:...>`) are removed and skipped, as
  A1111 skips networks it does not know;
- textual-inversion embeddings named bare, as A1111 users write them, become ComfyUI's `embedding:name`.

The infotext keeps the prompt as the client wrote it (tags included), as A1111's does.
"""
from __future__ import annotations

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
    way, each distinct text once (a batch repeats one prompt up to 64 times, and each embedding is a pass over
    it)."""
    names = list(embeddings)
    done: dict[str, str] = {}
    for text in texts:
        if text not in done:
            done[text] = with_embeddings(take_networks(text)[0], names)
    return [done[text] for text in texts]


def with_embeddings(prompt: str, names: list[str]) -> str:
    """Bare embedding names written as ComfyUI's `embedding:name` (whole words, any case, as A1111 matches them
    by CLIP tokens); names already written the ComfyUI way are left alone."""
    # ComfyUI names a file in a sub-folder `sub/name`; A1111 users write only `name`.
    for name in sorted(names, key=lambda n: len(PurePath(n).name), reverse=True):
        pattern = re.compile(rf"(?<![\w:/]){re.escape(PurePath(name).name)}(?![\w])", re.IGNORECASE)
        prompt = pattern.sub(lambda _m: f"embedding:{name}", prompt)
    return prompt
