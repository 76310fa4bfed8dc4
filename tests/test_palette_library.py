"""The palette library: its data against independent sources and the hardware's own definitions, its invariants,
the names other code uses, search by text and size, the credits file, and the Palette Search node."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from pixart_nodes.core import palettes as lib
from pixart_nodes.core.palette import NAMED_PALETTES, named_palette


def _rgb(hexes: str) -> list[tuple[int, int, int]]:
    return [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in hexes.split()]


def _colours(name: str) -> list[tuple[int, int, int]]:
    return [tuple(c) for c in named_palette(name).colors.tolist()]


# --- data against sources other than the library's own -------------------------------------------------------

# Typed from Aseprite's bundled db16.gpl and aap-64.gpl (the library takes them from Lospec's list)
DB16 = "140c1c 442434 30346d 4e4a4e 854c30 346524 d04648 757161 597dce d27d2c 8595a1 6daa2c d2aa99 6dc2ca dad45e deeed6"
AAP64_HEAD = "060608 141013 3b1725 73172d b4202a df3e23 fa6a0a f9a31b ffd541 fffc40"
AAP64_TAIL = "e4d2aa c7b08b a08662 796755 5a4e44 423934"


def test_known_palettes_are_exact():
    assert _colours("pico-8") == _rgb("000000 1D2B53 7E2553 008751 AB5236 5F574F C2C3C7 FFF1E8 "
                                      "FF004D FFA300 FFEC27 00E436 29ADFF 83769C FF77A8 FFCCAA")
    assert _colours("gameboy") == _rgb("0F380F 306230 8BAC0F 9BBC0F")  # the original Game Boy, dark to light
    assert _colours("original-gameboy") == _colours("gameboy")
    assert _colours("gameboy-bgb") == _rgb("081820 346856 88C070 E0F8D0")
    assert _colours("db16") == _rgb(DB16)
    aap = _colours("aap-64")
    assert len(aap) == 64 and aap[:10] == _rgb(AAP64_HEAD) and aap[-6:] == _rgb(AAP64_TAIL)


def test_hardware_palettes_match_their_definitions():
    # CGA / EGA RGBI: index bits b0 blue, b1 green, b2 red at 0xAA, b3 intensity adds 0x55; colour 6 is brown
    cga = []
    for i in range(16):
        c = [0xAA * ((i >> s) & 1) + 0x55 * (i >> 3) for s in (2, 1, 0)]
        cga.append(tuple(c) if i != 6 else (0xAA, 0x55, 0x00))
    assert _colours("cga") == cga
    for name, idx in (("cga-p0-low", (0, 2, 4, 6)), ("cga-p1-low", (0, 3, 5, 7)),
                      ("cga-p0-high", (0, 10, 12, 14)), ("cga-p1-high", (0, 11, 13, 15))):
        assert _colours(name) == [cga[i] for i in idx], name
    # EGA's 64 colours: index bits b0 b1 b2 = blue, green, red at 0xAA; b3 b4 b5 = blue, green, red at 0x55
    ega = [tuple(0xAA * ((i >> s) & 1) + 0x55 * ((i >> (s + 3)) & 1) for s in (2, 1, 0)) for i in range(64)]
    assert _colours("ega") == ega
    assert _colours("ega")[:16] != cga  # EGA's index 6 is dark yellow; the BIOS maps CGA brown to index 20
    # Master System: two bits per channel, index = r + 4 g + 16 b
    assert _colours("master-system") == [(85 * r, 85 * g, 85 * b) for b, g, r in itertools.product(range(4), repeat=3)]
    # web-safe: every mix of 0x00, 0x33, ... 0xFF; 3-bit RGB: every mix of 0 and 255
    assert set(_colours("web-safe-216")) == set(itertools.product(range(0, 256, 51), repeat=3))
    assert set(_colours("3-bit-rgb")) == set(itertools.product((0, 255), repeat=3)) and len(_colours("3-bit-rgb")) == 8
    # VGA mode 13h: the 16 CGA colours first, then a 16-step grey ramp from black to white
    vga = _colours("vga-13h")
    assert len(vga) == 256 and vga[:16] == cga and vga[16] == (0, 0, 0) and vga[31] == (255, 255, 255)
    assert all(r == g == b for r, g, b in vga[16:32]) and vga[248:] == [(0, 0, 0)] * 8
    # NES: the same 55 colours as Lospec's list, in the PPU's order
    assert set(_colours("nes")) == set(_colours("nintendo-entertainment-system")) and len(_colours("nes")) == 55


# --- invariants ----------------------------------------------------------------------------------------------

def test_library_invariants():
    assert len(lib.LIBRARY) >= 200
    assert tuple(NAMED_PALETTES) == tuple(p.name for p in lib.LIBRARY)
    keys: dict[str, str] = {}
    for p in lib.LIBRARY:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name), p.name
        assert p.title.strip() and p.author.strip() and p.kind in lib.KINDS, p.name
        assert re.fullmatch(r"https://(lospec\.com/palette-list/[a-z0-9-]+|github\.com/aseprite/aseprite/\S+\.gpl)",
                            p.source), p.name
        assert 1 <= p.size <= 256 and all(re.fullmatch(r"[0-9a-f]{6}", c) for c in p.colors), p.name
        assert len(named_palette(p.name)) == p.size
        for key in (p.name, *p.aliases):  # no name or alias may shadow another palette's
            n = lib.normalise(key)
            assert keys.setdefault(n, p.name) == p.name, (key, keys[n], p.name)
    # repeated colours only where the machine repeats them (index = colour number), each saying so in its note
    repeats = {p.name for p in lib.LIBRARY if len(set(p.colors)) < p.size}
    assert repeats == {"vga-13h", "commodore-plus4", "zx-spectrum-aseprite", "apple-ii-aseprite"}
    assert all(lib.info(n).kind == "hardware" and lib.info(n).note for n in repeats)


def test_the_size_field_is_checked_when_the_file_is_read(tmp_path, monkeypatch):
    import json

    data = json.loads(lib.LIBRARY_FILE.read_text(encoding="utf-8"))
    data["palettes"][1]["size"] += 1
    bad = tmp_path / "library.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(lib, "LIBRARY_FILE", bad)
    with pytest.raises(ValueError, match=r"library.json: retro-8bit: size 9 but 8 colours"):
        lib._load()


def test_names_other_code_uses_still_work():
    # the pack's names before the library, the Pixart editor's styles, and their aliases
    for name in ("pico-8", "retro-8bit", "retro-16bit", "gameboy", "gameboy-bgb", "nes", "cga", "cga-p0-low",
                 "cga-p0-high", "cga-p1-low", "cga-p1-high", "sweetie-16", "endesga-32", "1bit"):
        assert named_palette(name).name == name
    for alias, target in (("pico", "pico-8"), ("Game Boy", "gameboy"), ("dmg", "gameboy"), ("bw", "1bit"),
                          ("nintendo-gameboy-bgb", "gameboy-bgb"), ("nintendo-entertainment-system", "nes"),
                          ("edg32", "endesga-32"), ("sweetie16", "sweetie-16"), ("TIC-80", "sweetie-16"),
                          ("DB32", "dawnbringer-32"), ("C64", "commodore64"), ("ZX", "zx-spectrum")):
        assert named_palette(alias).name == target, alias


def test_well_known_palettes_are_there():
    for name in ("resurrect-64", "aap-64", "apollo", "endesga-8", "endesga-16", "endesga-36", "endesga-64",
                 "dawnbringer-16", "dawnbringer-32", "slso8", "lost-century", "nyx8", "ammo-8", "oil-6",
                 "2bit-demichrome", "kirokaze-gameboy", "ice-cream-gb", "vinik24", "zughy-32", "na16", "cc-29",
                 "lospec500", "commodore64", "zx-spectrum", "msx", "amstrad-cpc", "apple-ii", "master-system",
                 "atari-2600-ntsc", "atari-2600-pal", "ega", "nintendo-super-gameboy", "grafxkid-gameboy-pocket-gray"):
        assert lib.info(name).size >= 2, name


# --- search ------------------------------------------------------------------------------------------------------

def test_search_by_text_ranks_exact_then_prefix_then_contains():
    names = [p.name for p in lib.search("gameboy")]
    assert names[0] == "gameboy" and "kirokaze-gameboy" in names and "grafxkid-gameboy-pocket-gray" in names
    assert [p.name for p in lib.search("endesga 16")][:2] == ["endesga-16", "endesga-soft-16"]
    assert [p.name for p in lib.search("db16")] == ["dawnbringer-16"]  # an alias
    by_author = lib.search("Adigun Polack")
    assert by_author and all(p.author == "Adigun A. Polack" for p in by_author)
    assert lib.search("no such palette at all") == []
    # an alias ('pico'), then names starting with it in the library's order (the most used first), then titles
    names = [p.name for p in lib.search("pico")]
    assert names[:3] == ["pico-8", "pico-db", "pico-8-secret-palette"] and "retro-8bit" in names[3:]


def test_search_by_size_brute_force():
    four = lib.search(colors=4)
    assert [p.name for p in four] == [p.name for p in lib.LIBRARY if p.size == 4] and len(four) >= 30
    mid = lib.search("", min_colors=17, max_colors=32)
    assert [p.name for p in mid] == [p.name for p in lib.LIBRARY if 17 <= p.size <= 32]
    assert {p.name for p in lib.search("gameboy", colors=4)} == {p.name for p in lib.search("gameboy") if p.size == 4}
    assert all(p.kind == "hardware" for p in lib.search(kind="hardware"))
    with pytest.raises(ValueError, match="kind must be one of"):
        lib.search(kind="nonsense")


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ValueError, match=r"unknown palette 'sweety16'; did you mean sweetie-16"):
        lib.info("sweety16")
    with pytest.raises(ValueError, match=r"unknown palette 'zx-spectrum-9000'"):
        named_palette("zx-spectrum-9000")


def test_search_text_is_bounded():
    # each palette tests every word: before the bound, 50,000 words took 12 s and a 2 MB text 262 s
    text = "pico " * (lib.MAX_SEARCH_TEXT // 5)
    lib.search(text)  # the bound itself is accepted
    with pytest.raises(ValueError, match=r"^search text: at most 200 characters, got 201$"):
        lib.search(text + "x")
    with pytest.raises(ValueError, match=r"^search text: at most 200 characters, got 2,000,000$"):
        lib.search("a " * 1_000_000)


def test_unknown_name_messages_quote_a_long_name_shortened():
    with pytest.raises(ValueError, match=r"^unknown palette 'zqzq.*\.\.\. \(100,000 characters\); 'pixart") as info:
        named_palette("zq" * 50_000)
    assert len(str(info.value)) < 200


def test_credits_file_lists_every_palette():
    text = (lib.LIBRARY_FILE.parent / "CREDITS.md").read_text(encoding="utf-8")
    assert text == lib.credits_markdown()  # regenerate with the command the file names
    for p in lib.LIBRARY:
        assert f"| `{p.name}` |" in text and p.source in text


# --- nodes ---------------------------------------------------------------------------------------------------------

def test_palette_node_search_picks_the_first_match():
    from pixart_nodes.nodes_palette import PixartPalette

    node = PixartPalette()
    args = dict(source="named", name="pico-8", hex_colors="", file="", n_colors=16, method="kmeans", seed=0)
    p, _, n = node.build(**args, search="kirokaze")
    assert p.name == "kirokaze-gameboy" and n == 4
    p, _, _ = node.build(**args, search="")
    assert p.name == "pico-8"
    p, _, _ = node.build(**args, search="  ")
    assert p.name == "pico-8"
    with pytest.raises(ValueError, match=r"search: no library palette matches 'qqqq'"):
        node.build(**args, search="qqqq")
    p, _, _ = node.build(**{**args, "source": "hex", "hex_colors": "#000 #fff"}, search="kirokaze")
    assert p.name == "custom"  # search applies to named palettes only


def test_palette_search_node_lists_matches_and_returns_the_first():
    from pixart_nodes.nodes_palette import PixartPaletteSearch

    out = PixartPaletteSearch().search(text="gameboy", min_colors=4, max_colors=4, pick=2)
    palette, swatch, names, count = out["result"]
    want = [p.name for p in lib.search("gameboy", min_colors=4, max_colors=4)]
    assert count == len(want) and palette.name == want[1]
    assert names.splitlines()[1].startswith(f"{want[1]} (4 colours")
    assert swatch.shape[0] == 1 and swatch.shape[-1] == 3
    assert out["ui"]["text"][0] == names
    with pytest.raises(ValueError, match="no library palette matches"):
        PixartPaletteSearch().search(text="gameboy", min_colors=5, max_colors=8, pick=1)
    # pick past the end takes the last match
    out = PixartPaletteSearch().search(text="endesga", min_colors=2, max_colors=256, pick=99)
    assert out["result"][0].name == lib.search("endesga")[-1].name
    assert np.array_equal(out["result"][0].colors, named_palette(out["result"][0].name).colors)
