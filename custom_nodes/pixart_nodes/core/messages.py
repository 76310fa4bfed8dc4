"""How the pack's error messages show what a user sent: one short line whatever was sent. Standard library only,
so every core module may import it (``aleaart`` imports nothing heavier)."""
from __future__ import annotations

from typing import Any

SHOWN = 40  # characters of a value a message repeats


def quote(text: str, limit: int = SHOWN) -> str:
    """``repr`` of user text, cut to ``limit`` characters (a 1 MB palette line or name would otherwise come back
    whole in the message)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def show(value: Any) -> str:
    """Any value as a message shows it: text by ``quote``, an integer past 24 digits by its size (``str`` of one
    past 4,300 digits raises a ValueError of its own, which names no field), anything else by its ``repr``."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**24:
        return f"{'a negative' if value < 0 else 'an'} integer of {value.bit_length()} bits"
    return quote(repr(value))
