"""A1111 prompt styles: its `styles.csv` format, read from the files named by A1111_STYLES_FILE, and applied to
prompts the way A1111 1.10 does (`styles: ["name", ...]` in a request; `GET /sdapi/v1/prompt-styles`).

Users copy their A1111 `styles.csv`: `name,prompt,negative_prompt` with a header (older files say `text` for
`prompt`), UTF-8 with or without a BOM; rows whose name starts with `#` are comments; a later row replaces an
earlier one of the same name. The files are read again when they change, so an edited file needs no restart.
"""
from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import quote
from bridge.fields import MAX_TEXT

from .models import field_error

# A style file is a small CSV; a runaway one must not be read into memory whole.
MAX_STYLE_FILE_BYTES = 4 * 1024 * 1024
# The longest prompt (or negative prompt) styles may make. A style with `{prompt}` twice doubles the prompt each
# time a request names it, and a request names up to 64 styles (repeats allowed): 2**64 copies. Ten of the longest
# prompts a request may send leave room for every style a real file holds.
MAX_STYLED_TEXT = 10 * MAX_TEXT


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str | None
    negative_prompt: str | None


def _parse(text: str) -> list[Style]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    styles: dict[str, Style] = {}
    for row in reader:
        name = (row.get("name") or "").strip()
        if not name or name.startswith("#"):
            continue
        prompt = row.get("prompt", row.get("text"))
        styles.pop(name, None)  # a repeated name moves to where it was last defined, as A1111's dict does
        styles[name] = Style(name, prompt, row.get("negative_prompt"))
    return list(styles.values())


def merged_length(style_text: str | None, prompt: str) -> int:
    """The length of `merge(style_text, prompt)`, found without building it."""
    style_text = style_text or ""
    wraps = style_text.count("{prompt}")
    if wraps:
        return len(style_text) + wraps * (len(prompt) - len("{prompt}"))
    parts = [len(part.strip()) for part in (prompt, style_text) if part.strip()]
    return sum(parts) + 2 * (len(parts) - 1) if parts else 0


def merge(style_text: str | None, prompt: str) -> str:
    """A1111's merge_prompts: a style with `{prompt}` wraps the prompt, one without is appended after a comma."""
    style_text = style_text or ""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


class StyleBook:
    """The styles of every configured file (paths or globs), re-read when a file changes."""

    def __init__(self, spec: str) -> None:
        self.patterns = [p.strip() for p in spec.split(os.pathsep) if p.strip()] if spec else []
        self._seen: tuple[tuple[str, float, int], ...] | None = None
        self._styles: list[Style] = []

    def files(self) -> list[Path]:
        out: list[Path] = []
        for pattern in self.patterns:
            matches = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
            out += [Path(m).expanduser() for m in matches if Path(m).expanduser().is_file()]
        return out

    def styles(self) -> list[Style]:
        files = self.files()
        stamp = tuple((str(f), f.stat().st_mtime, f.stat().st_size) for f in files)
        if stamp != self._seen:
            merged: dict[str, Style] = {}
            for f, (_, _, size) in zip(files, stamp):
                if size > MAX_STYLE_FILE_BYTES:
                    raise ValueError(f"style file {f} is {size} bytes; the limit is {MAX_STYLE_FILE_BYTES}")
                for style in _parse(f.read_text(encoding="utf-8-sig")):
                    merged.pop(style.name, None)
                    merged[style.name] = style
            self._styles, self._seen = list(merged.values()), stamp
        return self._styles

    def apply(self, names: list[str], prompt: str, negative_prompt: str) -> tuple[str, str]:
        """The prompts with the named styles applied in request order; an unknown name is an empty style (A1111
        only strips the prompt then). A prompt the styles would make longer than MAX_STYLED_TEXT is refused (400
        naming `styles`) before it is built."""
        by_name = {s.name: s for s in self.styles()}
        for name in names:
            style = by_name.get(name, Style(name, "", ""))
            for text, kind in ((style.prompt, "prompt"), (style.negative_prompt, "negative prompt")):
                size = merged_length(text, prompt if kind == "prompt" else negative_prompt)
                if size > MAX_STYLED_TEXT:
                    raise field_error("styles", f"the styles would make a {kind} of {size:,} characters (style "
                                                f"{quote(name, 100)}); at most {MAX_STYLED_TEXT:,} characters")
            prompt = merge(style.prompt, prompt)
            negative_prompt = merge(style.negative_prompt, negative_prompt)
        return prompt, negative_prompt
