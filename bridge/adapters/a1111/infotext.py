"""A1111's infotext both ways: the `parameters` text written into every image (`write`, shared with the engine's
stored results in `bridge.infotext`), and reading it back into the dict `/sdapi/v1/png-info` answers (A1111's
parse_generation_parameters, as 1.10 behaves; docs/api/a1111.md).

The text is `prompt`, an optional `Negative prompt: ...` part, and a last line of `Key: value` pairs; a value with a
comma, colon, newline or quote is written as a JSON string. Reading gives every value as a string (sizes split
into `Key-1`/`Key-2`), then adds A1111's defaults for keys the text lacks, so that pasting an old infotext
restores the settings it was made with.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from bridge.infotext import quote, write

# A1111's pattern for one `Key: value` of the last line, tried at one place at a time (`_pairs`)
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RUN = re.compile(r"\s*(\w[\w \-/]*)?")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
# `(word:1.2)`: A1111 records which emphasis rule such a prompt was made with. Its `\d*\.?\d+` written so that a
# long run of digits is split one way only: A1111's took seconds on `(x:` and 20,000 digits.
_WEIGHTED = re.compile(r"\(([^()]*):\s*[-+]?(?:\d+(?:\.\d+)?|\.\d+)\s*\)")
# Sizes beyond these digits are not sizes (int() refuses over 4,300 digits; the old first pass needs floats)
_SIZE_DIGITS = 6

# What A1111 assumes for keys an infotext lacks (in the order it adds them).
DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"),
    ("Hires resize-1", 0),
    ("Hires resize-2", 0),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
    ("Refiner switch by sampling steps", False),
)

# PIL `info` keys A1111 leaves out of png-info's `items` (format details, not what the image was made with).
NOT_ITEMS = {"parameters", "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
             "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop"}


def _pairs(line: str) -> list[tuple[str, str]]:
    """`_PARAM.findall(line)` in time linear in the line: findall tries every place in turn, and a place inside a
    run of key characters (`[\\w \\-/]`) scans to the run's end, so a long line without a colon took seconds
    (60,000 characters: 23 s). Every place in a run that does not end in a colon fails the same way: the next try
    is after it."""
    found: list[tuple[str, str]] = []
    at = 0
    while at < len(line):
        m = _PARAM.match(line, at)
        if m:
            found.append((m.group(1), m.group(2)))
            at = m.end()
        else:
            run = _KEY_RUN.match(line, at)
            at = max(run.end(), at + 1)
    return found


def parse(text: str) -> dict[str, Any]:
    """A1111's reading of an infotext: the parameters dict of `/sdapi/v1/png-info`."""
    res: dict[str, Any] = {}
    *lines, last = text.strip().split("\n")
    pairs = _pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    for key, value in pairs:
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass  # A1111 keeps such a value out; a broken quote is rare enough to keep as written
        size = _SIZE.match(value) if isinstance(value, str) else None
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    res["Prompt"] = "\n".join(prompt)
    res["Negative prompt"] = "\n".join(negative)
    sizes = [res.get(k, "") for k in ("First pass size-1", "First pass size-2", "Size-1", "Size-2")]
    if all(v.isascii() and v.isdigit() and len(v) <= _SIZE_DIGITS for v in sizes):
        # An infotext from before A1111 1.0's hires fix: "First pass size 0x0" meant half of Size. (A1111 answers
        # 500 for sizes of 0 or of thousands of digits; such a text is left as written here.)
        first_w, first_h, width, height = (int(v) for v in sizes)
        if (first_w == 0 or first_h == 0) and width and height:
            first_w, first_h = _old_first_pass(width, height)
        if first_w and first_h:
            del res["First pass size-1"], res["First pass size-2"]
            res["Size-1"], res["Size-2"] = first_w, first_h
            res["Hires resize-1"], res["Hires resize-2"] = width, height
    if _WEIGHTED.search(res["Prompt"]) or _WEIGHTED.search(res["Negative prompt"]):
        res.setdefault("Emphasis", "Original")
    for key, default in DEFAULTS:
        res.setdefault(key, default)
    return res


def _old_first_pass(width: int, height: int) -> tuple[int, int]:
    # The old hires fix picked a first pass of about 512x512 pixels with the final aspect ratio, in steps of 64.
    import math

    scale = math.sqrt((512 * 512) / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def items(info: Mapping[str, Any]) -> dict[str, Any]:
    """png-info's `items`: the image's own text and format values, minus `parameters` and format details, as JSON
    values."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key in NOT_ITEMS:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out[str(key)] = value
    return out


__all__ = ["quote", "write", "parse", "DEFAULTS", "NOT_ITEMS"]
