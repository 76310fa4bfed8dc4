"""JSON made a piece at a time (`bridge.jsontext`): the same bytes as json.dumps, whatever the long values are."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bridge import images
from bridge.jsontext import digest, split

LONG = "data:image/png;base64,iVBORw0KGgo" * 3
ODD = "caf\u00e9 \"quoted\" \\ \u2028 \U0001f3a8 \n\x00"


def body() -> dict[str, Any]:
    return {"sketchData": LONG, "z": [ODD * 3, (1, LONG[:9]), None], "a": {"k": LONG + ODD, "n": 2.5, "b": True},
            "short": LONG[:8], ODD * 2: {"b": 1, "a": [ODD * 4]}, "path": Path("x/y")}


@pytest.mark.parametrize("dumps", [{}, {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
                                   {"sort_keys": True, "indent": 1}, {"ensure_ascii": False}])
def test_pieces_join_to_the_json_text_and_hash_to_its_sha256(monkeypatch, dumps):
    monkeypatch.setattr(images, "B64_PIECE", 8)  # every text over 8 characters goes piece by piece, keys too
    value = body()
    text = json.dumps(value, default=str, **dumps).encode()
    pieces = split(value, default=str, **dumps)
    assert len(pieces.values) == 7 and ODD * 2 in pieces.values  # the long key was set apart
    assert b"".join(pieces) == text
    assert digest(value, default=str, **dumps) == hashlib.sha256(text).hexdigest()
    assert digest({**value, "short": LONG[:7]}, default=str, **dumps) != digest(value, default=str, **dumps)


def test_base64_values_are_written_as_their_text(monkeypatch):
    monkeypatch.setattr(images, "B64_PIECE", 4)
    blobs = [bytes(range(n)) for n in (0, 1, 2, 3, 100)]
    value = {"images": [images.Base64(b) for b in blobs], "url": images.Base64(blobs[4], "data:image/png;base64,")}
    pieces = split(value)
    assert b"".join(pieces) == json.dumps(value, default=str).encode()
    assert len(list(pieces)) > 2 * len(pieces.parts)  # images came a piece at a time


def test_longer_than_agrees_with_the_length_of_json_dumps():
    import random

    from bridge.jsontext import longer_than

    rng = random.Random(5)

    def value(depth: int) -> Any:
        kind = rng.randrange(7 if depth < 4 else 5)
        if kind == 0:
            return "".join(rng.choice("ab\u00e9 \U0001f3a8") for _ in range(rng.randrange(12)))
        if kind == 1:
            return rng.randrange(-10**6, 10**6)
        if kind == 2:
            return rng.random() * 10 ** rng.randrange(-5, 30)
        if kind == 3:
            return rng.choice([True, False, None])
        if kind == 4:
            return rng.randrange(10**30)
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(5))]
        return {"".join(rng.choice("kx\u00e9") for _ in range(rng.randrange(4))): value(depth + 1)
                for _ in range(rng.randrange(5))}

    for _ in range(500):
        v = value(0)
        n = len(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
        assert not longer_than(v, n) and longer_than(v, n - 1), (v, n)
