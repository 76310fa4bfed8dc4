"""The palette library: 247 well-known palettes (Lospec's most used, the classic hardware ones), each with its
name, title, size, author and source, the colours in their published order. Searchable by text and size.

The data is ``palettes/library.json`` in the pack (credits inside, and in ``palettes/CREDITS.md``): Lospec
palettes as Lospec lists them (via the rafraser/elm-lospec scrape), hardware palettes Lospec lacks, or lists in
a different order than the machine's colour numbers, from the palettes Aseprite ships. ``retro-8bit`` /
``retro-16bit`` are the two palettes the Pixart editor names (the first 8 and all 16 PICO-8 colours).

Lookup normalises names by dropping case and every non-alphanumeric character, so "PICO-8", "pico8" and "pico_8"
are one palette; aliases (``db16``, ``c64``, ``tic-80``, the Lospec slugs of renamed entries, ...) resolve the same
way.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .messages import quote

LIBRARY_FILE = Path(__file__).resolve().parent.parent / "palettes" / "library.json"
KINDS = ("artist", "hardware")
# far above any name, title or author in the library; a search text is typed by a person (node widget, --search)
MAX_SEARCH_TEXT = 200


@dataclass(frozen=True)
class PaletteInfo:
    """One library entry. ``colors`` are lowercase ``rrggbb`` strings in the published order."""

    name: str
    title: str
    author: str
    source: str
    kind: str  # "artist" (made by a pixel artist) or "hardware" (a machine's or program's own colours)
    colors: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def size(self) -> int:
        return len(self.colors)

    def label(self) -> str:
        """``name (N colours, author)``, as lists show it."""
        return f"{self.name} ({self.size} colours, {self.author})"


def normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _load() -> tuple[tuple[PaletteInfo, ...], str]:
    data = json.loads(LIBRARY_FILE.read_text(encoding="utf-8"))
    entries = []
    for raw in data["palettes"]:
        entries.append(PaletteInfo(
            name=raw["name"], title=raw["title"], author=raw["author"], source=raw["source"], kind=raw["kind"],
            colors=tuple(raw["colors"]), aliases=tuple(raw.get("aliases", ())), note=raw.get("note", "")))
        if raw["size"] != len(raw["colors"]):  # the file is data people edit by hand: say which entry is off
            raise ValueError(f"{LIBRARY_FILE.name}: {raw['name']}: size {raw['size']} but {len(raw['colors'])} colours")
    return tuple(entries), data["credits"]


LIBRARY, CREDITS = _load()
_BY_NAME: dict[str, PaletteInfo] = {p.name: p for p in LIBRARY}

# name -> (title, hex colours): the shape core/palette.py reads
PALETTE_DATA: dict[str, tuple[str, str]] = {p.name: (p.title, " ".join(p.colors)) for p in LIBRARY}
ALIASES: dict[str, str] = {alias: p.name for p in LIBRARY for alias in p.aliases}

_LOOKUP: dict[str, PaletteInfo] = {normalise(p.name): p for p in LIBRARY}
_LOOKUP.update({normalise(alias): _BY_NAME[target] for alias, target in ALIASES.items()})


def info(name: str) -> PaletteInfo:
    """A library entry by name or alias (case and separators ignored)."""
    found = _LOOKUP.get(normalise(name)) if isinstance(name, str) else None
    if found is None:
        near = suggest(name) if isinstance(name, str) else []
        hint = f"; did you mean {', '.join(near)}?" if near else "; 'pixart palettes --search TEXT' lists them"
        raise ValueError(f"unknown palette {quote(name) if isinstance(name, str) else repr(name)}{hint}")
    return found


def suggest(name: str, limit: int = 5) -> list[str]:
    """Library names close to a misspelt or partial one: the search's matches first, then similar spellings."""
    import difflib

    try:
        found = [p.name for p in search(name)][:limit]
    except ValueError:  # over the search bound, so longer than any name: nothing is close, and difflib would be slow
        return []
    if len(found) < limit:
        for close in difflib.get_close_matches(normalise(name), list(_LOOKUP), n=2 * limit, cutoff=0.6):
            if _LOOKUP[close].name not in found:
                found.append(_LOOKUP[close].name)
    return found[:limit]


def search(text: str = "", *, colors: int | None = None, min_colors: int | None = None,
           max_colors: int | None = None, kind: str | None = None) -> list[PaletteInfo]:
    """Library entries whose name, alias, title or author contains every word of ``text`` (case and separators
    ignored), with exactly ``colors`` or between ``min_colors`` and ``max_colors`` colours.

    Best matches first: the exact name or alias, then names starting with the text, then names or titles containing
    it, then the rest (an author match); within each, the library's order (the most used palettes first)."""
    if len(text) > MAX_SEARCH_TEXT:
        raise ValueError(f"search text: at most {MAX_SEARCH_TEXT} characters, got {len(text):,}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    words = [normalise(w) for w in text.split()]
    words = [w for w in words if w]
    whole = normalise(text)
    ranked: list[tuple[int, int, PaletteInfo]] = []
    for order, p in enumerate(LIBRARY):
        if colors is not None and p.size != colors:
            continue
        if (min_colors is not None and p.size < min_colors) or (max_colors is not None and p.size > max_colors):
            continue
        if kind is not None and p.kind != kind:
            continue
        names = [normalise(p.name), *(normalise(a) for a in p.aliases)]
        fields = [*names, normalise(p.title), normalise(p.author)]
        if not all(any(w in f for f in fields) for w in words):
            continue
        if not whole:
            rank = 3
        elif whole in names:
            rank = 0
        elif any(n.startswith(whole) for n in names):
            rank = 1
        elif any(whole in f for f in (*names, normalise(p.title))):
            rank = 2
        else:
            rank = 3
        ranked.append((rank, order, p))
    return [p for _, _, p in sorted(ranked, key=lambda t: (t[0], t[1]))]


def credits_markdown() -> str:
    """``palettes/CREDITS.md``: every palette with its author and source (a test keeps the file in step)."""
    rows = [f"| `{p.name}` | {p.title} | {p.size} | {p.author} | {p.source} |" for p in LIBRARY]
    return "\n".join([
        "# Palette library credits",
        "",
        CREDITS,
        "",
        f"{len(LIBRARY)} palettes, in the library's order (`library.json`). Generated by "
        "`python -c \"from pixart_nodes.core.palettes import credits_markdown; print(credits_markdown(), end='')\"`.",
        "",
        "| name | title | colours | author | source |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
