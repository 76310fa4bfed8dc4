"""Named palette data: canonical name -> (display title, hex colours), plus aliases.

Sources (see /work/shared/reference/pixel-art.md §2): Lospec (as scraped 2025-01-10), Aseprite's bundled .gpl
files and TIC-80 carts. ``retro-8bit`` / ``retro-16bit`` are the two palettes the Pixart editor names (the
first 8 and all 16 PICO-8 colours). Lookup normalises names by dropping case and every non-alphanumeric
character, so "PICO-8", "pico8" and "pico_8" are one palette.
"""
from __future__ import annotations

_PICO8 = (
    "000000 1D2B53 7E2553 008751 AB5236 5F574F C2C3C7 FFF1E8 "
    "FF004D FFA300 FFEC27 00E436 29ADFF 83769C FF77A8 FFCCAA"
)

# The 64-entry NES 2C02 rendition used by Lospec, FCEUX-era tools and PixelArt-Detector, with the duplicate
# blacks of columns $0E/$0F (and $0D, "blacker than black") dropped: 55 distinct colours, row-major order.
_NES = (
    "7C7C7C 0000FC 0000BC 4428BC 940084 A80020 A81000 881400 503000 007800 006800 005800 004058 000000 "
    "BCBCBC 0078F8 0058F8 6844FC D800CC E40058 F83800 E45C10 AC7C00 00B800 00A800 00A844 008888 "
    "F8F8F8 3CBCFC 6888FC 9878F8 F878F8 F85898 F87858 FCA044 F8B800 B8F818 58D854 58F898 00E8D8 787878 "
    "FCFCFC A4E4FC B8B8F8 D8B8F8 F8B8F8 F8A4C0 F0D0B0 FCE0A8 F8D878 D8F878 B8F8B8 B8F8D8 00FCFC F8D8F8"
)

PALETTE_DATA: dict[str, tuple[str, str]] = {
    "pico-8": ("PICO-8", _PICO8),
    "retro-8bit": ("Retro 8-bit (first 8 PICO-8 colours)", " ".join(_PICO8.split()[:8])),
    "retro-16bit": ("Retro 16-bit (PICO-8)", _PICO8),
    "gameboy": ("Game Boy (DMG), dark to light", "0F380F 306230 8BAC0F 9BBC0F"),
    "gameboy-bgb": ("Game Boy (BGB emulator default)", "081820 346856 88C070 E0F8D0"),
    "nes": ("NES (55 distinct colours)", _NES),
    "cga": (
        "CGA (16-colour RGBI)",
        "000000 0000AA 00AA00 00AAAA AA0000 AA00AA AA5500 AAAAAA "
        "555555 5555FF 55FF55 55FFFF FF5555 FF55FF FFFF55 FFFFFF",
    ),
    "cga-p0-low": ("CGA mode 4, palette 0 low", "000000 00AA00 AA0000 AA5500"),
    "cga-p0-high": ("CGA mode 4, palette 0 high", "000000 55FF55 FF5555 FFFF55"),
    "cga-p1-low": ("CGA mode 4, palette 1 low", "000000 00AAAA AA00AA AAAAAA"),
    "cga-p1-high": ("CGA mode 4, palette 1 high", "000000 55FFFF FF55FF FFFFFF"),
    "sweetie-16": (
        "Sweetie 16 (GrafxKid)",
        "1A1C2C 5D275D B13E53 EF7D57 FFCD75 A7F070 38B764 257179 "
        "29366F 3B5DC9 41A6F6 73EFF7 F4F4F4 94B0C2 566C86 333C57",
    ),
    "endesga-32": (
        "Endesga 32",
        "BE4A2F D77643 EAD4AA E4A672 B86F50 733E39 3E2731 A22633 E43B44 F77622 FEAE34 FEE761 "
        "63C74D 3E8948 265C42 193C3E 124E89 0099DB 2CE8F5 FFFFFF C0CBDC 8B9BB4 5A6988 3A4466 "
        "262B44 181425 FF0044 68386C B55088 F6757A E8B796 C28569",
    ),
    "1bit": ("1-bit black and white", "000000 FFFFFF"),
}

ALIASES: dict[str, str] = {
    "pico": "pico-8",
    "game-boy": "gameboy",
    "gameboy-dmg": "gameboy",
    "game-boy-dmg": "gameboy",
    "dmg": "gameboy",
    "original-gameboy": "gameboy",
    "nintendo-gameboy-bgb": "gameboy-bgb",
    "nintendo-entertainment-system": "nes",
    "sweetie16": "sweetie-16",
    "edg32": "endesga-32",
    "endesga32": "endesga-32",
    "black-white": "1bit",
    "bw": "1bit",
    "mono": "1bit",
}
