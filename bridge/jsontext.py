"""JSON text made a piece at a time, for answers that carry images or long texts and for digests of bodies that do.

json.dumps and base64 hold the interpreter lock for a whole call, in a thread too: 96 MB of images in one answer
held the event loop 0.65 s, a 21 MB sketch's digest 88 ms, 16 million "é" echoed 0.2 s. Here the long values
(`images.Base64` bytes, and strings of more than `images.B64_PIECE` characters, keys included) are set apart;
the JSON around them is encoded at once, and each long value piece by piece, a piece about 1 MB of text.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bridge import images as image_io
from bridge.images import Base64


# Deeper than any real request or workflow file (A1111 bodies nest 4 levels); deep nesting only ever comes from an
# attack, and Python's parser and deep copies would otherwise hit their recursion limit.
MAX_DEPTH = 64


def shape_problem(value: Any, max_values: int, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a parsed JSON value is too large to take ("is nested more than ..." past `max_depth` levels, "holds more
    than ..." past `max_values` items of every list and object together), or None."""
    values = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            values += len(node)
            if values > max_values:
                return f"holds more than {max_values} values"
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node)
                         if isinstance(v, (dict, list)))
    return None


@dataclass
class Pieces:
    """A JSON text as `parts` with a long value between each two: parts[0], values[0], parts[1], ..."""

    parts: list[bytes]
    values: list[Base64 | str]
    ensure_ascii: bool = True

    def __iter__(self) -> Iterator[bytes]:
        for part, value in zip(self.parts, [*self.values, None]):
            yield part
            if isinstance(value, Base64):
                yield from value.pieces()
            elif value is not None:
                yield from self.escaped(value)

    def escaped(self, text: str) -> Iterator[bytes]:
        """A long string's JSON text without its quotes (escaping works a character at a time)."""
        step = image_io.B64_PIECE
        for start in range(0, len(text), step):
            yield json.dumps(text[start:start + step], ensure_ascii=self.ensure_ascii)[1:-1].encode()


def has_long(value: Any) -> bool:
    """Whether `split` would set a value of `value` apart: a `Base64`, or a key or string longer than
    `images.B64_PIECE`. A walk of the value, without the encoding."""
    step = image_io.B64_PIECE
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if any(isinstance(k, str) and len(k) > step for k in v):
                return True
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, Base64) or (isinstance(v, str) and len(v) > step):
            return True
    return False


def longer_than(value: Any, limit: int) -> bool:
    """Whether `value`'s compact JSON text (separators "," and ":", ensure_ascii off) is longer than `limit`
    characters, escapes aside: a walk that stops once past it (checked after each value's own keys or items), where
    json.dumps would write all of a 32 MB value."""
    size = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            size += 1 + sum(len(k) + 3 if isinstance(k, str) else len(json.dumps(k)) + 3 for k in v) + max(len(v), 1)
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            size += 1 + max(len(v), 1)
            stack.extend(v)
        else:
            size += len(v) + 2 if isinstance(v, str) else len(json.dumps(v))
        if size > limit:
            return True
    return False


def split(value: Any, **dumps: Any) -> Pieces:
    """`json.dumps(value, **dumps)` as Pieces: the same bytes once joined."""
    token = f"pixart-long-{secrets.token_hex(16)}-"  # a client's text cannot guess it
    step = image_io.B64_PIECE
    long: list[Base64 | str] = []
    # Keys are sorted here, by what they are, since a long key becomes a token
    ordered = bool(dumps.pop("sort_keys", False))

    def mark(v: Any) -> Any:
        if isinstance(v, Base64) or (isinstance(v, str) and len(v) > step):
            long.append(v)
            return f"{token}{len(long) - 1}"
        return v

    def swap(v: Any) -> Any:
        if isinstance(v, dict):
            return {mark(k): swap(x) for k, x in (sorted(v.items()) if ordered else v.items())}
        if isinstance(v, (list, tuple)):
            return [swap(x) for x in v]
        return mark(v)

    text = json.dumps(swap(value), **dumps)
    parts, values, pos = [], [], 0
    for m in re.finditer(f'(?<="){token}(\\d+)(?=")', text):
        parts.append(text[pos:m.start()].encode())
        values.append(long[int(m.group(1))])
        pos = m.end()
    parts.append(text[pos:].encode())
    return Pieces(parts, values, dumps.get("ensure_ascii", True))


def digest(value: Any, **dumps: Any) -> str:
    """The sha256 (hex) of `json.dumps(value, **dumps)` in UTF-8, made a piece at a time: run it in a thread
    (`asyncio.to_thread`) and the event loop turns between pieces."""
    h = hashlib.sha256()
    for piece in split(value, **dumps):
        h.update(piece)
    return h.hexdigest()
