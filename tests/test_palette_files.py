"""Palette files in every format people download (.hex .gpl .pal .act .txt and PNG swatch strips) round-trip with
their order, Pillow's own GIMP reader agrees with ours, and indexed PNG/GIF files carry the palette in order
(read back by Pillow)."""
from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import GimpPaletteFile, Image

from pixart_nodes.core import color, indexed, palette_files
from pixart_nodes.core.palette import Palette, named_palette
from tests.support.imaging import claimed_png

RNG = np.random.default_rng(7)
PALETTES = [
    named_palette("pico-8"),
    Palette("one", np.array([[12, 34, 56]], dtype=np.uint8)),
    Palette("with-duplicates", np.array([[0, 0, 0], [255, 255, 255], [0, 0, 0], [9, 9, 9]], dtype=np.uint8)),
    Palette("full", RNG.integers(0, 256, (256, 3), dtype=np.uint8)),
]


@pytest.mark.parametrize("fmt", palette_files.FORMATS)
@pytest.mark.parametrize("pal", PALETTES, ids=lambda p: p.name)
def test_every_format_round_trips_in_order(tmp_path: Path, fmt: str, pal: Palette) -> None:
    path = tmp_path / f"p.{fmt}"
    palette_files.write_palette(path, pal)
    back = palette_files.read_palette(path)
    assert back.colors.tolist() == pal.colors.tolist()


@pytest.mark.parametrize("block", [1, 8, 32])
def test_png_strips_at_any_block_size_and_grids_read_row_major(block: int) -> None:
    pal = named_palette("pico-8")
    strip = palette_files.palette_bytes(pal, "png", block=block)
    assert palette_files.parse_png(strip, "x.png") == [tuple(c) for c in pal.colors.tolist()]
    # a 4x4 grid of 8-pixel swatches, as Lospec's "PNG 8x" of a 16-colour palette, plus a transparent cell
    grid = np.zeros((4 * 8, 5 * 8, 4), dtype=np.uint8)
    for i, c in enumerate(pal.colors):
        y, x = divmod(i, 5)
        grid[y * 8:(y + 1) * 8, x * 8:(x + 1) * 8] = [*c, 255]
    out = io.BytesIO()
    Image.fromarray(grid, "RGBA").save(out, format="PNG")
    assert palette_files.parse_png(out.getvalue(), "g.png") == [tuple(c) for c in pal.colors.tolist()]


def test_adobe_swatch_files_read_and_write_as_the_swatch_package_does(tmp_path: Path) -> None:
    swatch = pytest.importorskip("swatch", reason="the swatch package (test extra) cross-checks .ase files")
    pal = named_palette("pico-8")
    ours = tmp_path / "ours.ase"
    palette_files.write_palette(ours, pal)
    (group,) = swatch.parse(str(ours))
    assert group["name"] == "pico-8"
    assert [[round(v * 255) for v in s["data"]["values"]] for s in group["swatches"]] == pal.colors.tolist()
    assert {s["data"]["mode"] for s in group["swatches"]} == {"RGB"}
    # every colour model an Adobe program writes, loose and in a group, in file order; Lab is D50 with L in 0..1
    # (the Lab values of sRGB's primaries and white under D50, Bradford-adapted, as Lindbloom's tables give them)
    theirs = tmp_path / "theirs.ase"
    swatch.write([
        {"name": "orange", "type": "Process", "data": {"mode": "RGB", "values": [1.0, 0.5, 0.0]}},
        {"name": "grey", "type": "Global", "data": {"mode": "Gray", "values": [0.75]}},
        {"name": "Spots", "type": "Color Group", "swatches": [
            {"name": "cyan", "type": "Spot", "data": {"mode": "CMYK", "values": [1.0, 0.0, 0.0, 0.0]}},
            {"name": "dark red", "type": "Process", "data": {"mode": "CMYK", "values": [0.0, 1.0, 1.0, 0.5]}},
            {"name": "red", "type": "Spot", "data": {"mode": "LAB", "values": [0.542917, 80.8125, 69.8851]}},
            {"name": "green", "type": "Spot", "data": {"mode": "LAB", "values": [0.878181, -79.2873, 80.9902]}},
            {"name": "blue", "type": "Spot", "data": {"mode": "LAB", "values": [0.295676, 68.2986, -112.0294]}},
            {"name": "white", "type": "Spot", "data": {"mode": "LAB", "values": [1.0, 0.0, 0.0]}}]},
    ], str(theirs))
    back = palette_files.read_palette(theirs)
    assert back.name == "Spots"  # the one group's name
    assert back.colors.tolist() == [[255, 128, 0], [191, 191, 191], [0, 255, 255], [128, 0, 0],
                                    [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]


def _aseprite(entries: list[tuple[int, int, int, int]], *, old_chunk: bool = False) -> bytes:
    """A one-frame Aseprite sprite holding a palette, laid out as Aseprite's file spec (docs/ase-file-specs.md)."""
    if old_chunk:  # 0x0004: one packet, skip 0, count (0 = 256), R G B each
        body = (1).to_bytes(2, "little") + bytes([0, len(entries) % 256]) + bytes(v for e in entries for v in e[:3])
        chunk = (6 + len(body)).to_bytes(4, "little") + (0x0004).to_bytes(2, "little") + body
    else:
        body = len(entries).to_bytes(4, "little") + (0).to_bytes(4, "little") + (len(entries) - 1).to_bytes(4, "little")
        body += bytes(8)
        for i, e in enumerate(entries):  # every other entry named, as Aseprite writes a named colour
            name = f"c{i}".encode()
            body += (i % 2).to_bytes(2, "little") + bytes(e) + (len(name).to_bytes(2, "little") + name if i % 2 else b"")
        chunk = (6 + len(body)).to_bytes(4, "little") + (0x2019).to_bytes(2, "little") + body
    # a chunk before the palette that the reader must step over: a layer (0x2004) of 10 bytes
    layer = (16).to_bytes(4, "little") + (0x2004).to_bytes(2, "little") + bytes(10)
    frame = (16 + len(layer) + len(chunk)).to_bytes(4, "little") + b"\xfa\xf1" + (2).to_bytes(2, "little")
    frame += (100).to_bytes(2, "little") + bytes(2) + (2).to_bytes(4, "little") + layer + chunk
    header = bytearray(128)
    header[0:4] = (128 + len(frame)).to_bytes(4, "little")
    header[4:6] = b"\xe0\xa5"
    header[6:8] = (1).to_bytes(2, "little")
    header[8:12] = (16).to_bytes(2, "little") * 2
    header[12:14] = (8).to_bytes(2, "little")  # indexed
    return bytes(header) + frame


@pytest.mark.parametrize("ext", ["aseprite", "ase"])
def test_an_aseprite_sprites_palette_is_read_in_index_order_without_clear_entries(ext: str) -> None:
    pal = named_palette("pico-8").colors.tolist()
    entries = [(*c, 255) for c in pal]
    entries[3] = (*pal[3], 0)  # a clear entry is not a colour of the palette (as the indexed PNG's table reads)
    got = palette_files.read_palette(f"sprite.{ext}", _aseprite(entries))
    assert got.colors.tolist() == pal[:3] + pal[4:] and got.name == "sprite"
    old = palette_files.read_palette(f"old.{ext}", _aseprite([(*c, 255) for c in pal], old_chunk=True))
    assert old.colors.tolist() == pal


def test_an_old_aseprite_palette_of_more_than_256_colours_is_refused() -> None:
    sprite = bytearray(_aseprite([(i, i, i, 255) for i in range(256)], old_chunk=True))
    packet = bytes([0, 0]) + bytes(range(256)) * 3  # a second packet of 256 more
    at = sprite.index((0x0004).to_bytes(2, "little")) - 4
    size = int.from_bytes(sprite[at:at + 4], "little")
    sprite[at + 6:at + 8] = (2).to_bytes(2, "little")
    sprite[at:at + 4] = (size + len(packet)).to_bytes(4, "little")
    sprite[at + size:at + size] = packet
    frame = 128
    sprite[frame:frame + 4] = (int.from_bytes(sprite[frame:frame + 4], "little") + len(packet)).to_bytes(4, "little")
    with pytest.raises(ValueError, match="256"):
        palette_files.read_palette("old.aseprite", bytes(sprite))


@pytest.mark.parametrize("data,why", [
    (b"ASEF\0\1\0\0\0\0\0\2", "block 1 of 2 is missing"),
    (b"ASEF\0\1\0\0\0\0\0\1\0\1\0\0\0\x40" + bytes(8), "block 1 says 64 bytes, the file holds 8"),
    (b"ASEF\0\1\0\0\0\0\0\1\0\1\0\0\0\x0c\0\1\0\0HSV " + bytes(4), "colour model 'HSV ' is not one of"),
    (b"ASEF\0\1\0\0\0\0\0\1\0\1\0\0\0\x0c\0\1\0\0RGB " + bytes(4), "colour '' is cut short"),
    (b"ASEF\0\1\0\0\0\0\0\1\0\1\0\0\0\x14\0\1\0\0RGB " + struct.pack(">3f", math.nan, 0, 0) + bytes(2),
     "not a number"),
    (b"ASEF\0\1\0\0\xff\xff\xff\xff", "block 1 of 4294967295 is missing"),
    (b"not a swatch file at all", "neither an Adobe Swatch Exchange file"),
    (bytes(4) + b"\xe0\xa5" + bytes(200), "without a first frame"),
])
def test_bad_swatch_and_sprite_files_name_the_file_and_the_problem(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        palette_files.read_palette("bad.ase", data)
    assert "bad.ase" in str(info.value)


def test_a_swatch_file_of_more_colours_than_a_palette_holds_is_refused() -> None:
    body = (1).to_bytes(2, "big") + b"\0\0" + b"Gray" + struct.pack(">f", 0.5) + (2).to_bytes(2, "big")
    grey = b"\x00\x01" + len(body).to_bytes(4, "big") + body
    with pytest.raises(ValueError, match="more than 256|over 256|at most 256"):
        palette_files.read_palette("many.ase", b"ASEF\0\1\0\0" + (257).to_bytes(4, "big") + grey * 257)


def test_pillow_reads_our_gpl_and_we_read_gimp_files(tmp_path: Path) -> None:
    pal = named_palette("pico-8")
    data = palette_files.palette_bytes(pal, "gpl")
    flat, _ = GimpPaletteFile.GimpPaletteFile(io.BytesIO(data)).getpalette()
    assert list(flat[:len(pal) * 3]) == pal.colors.reshape(-1).tolist()
    gimp = "GIMP Palette\nName: Two\nColumns: 2\n# comment\n255   0   0\tRed\n  0 128 255 Blue sky\n"
    (tmp_path / "two.gpl").write_text(gimp)
    back = palette_files.read_palette(tmp_path / "two.gpl")
    assert back.name == "Two" and back.colors.tolist() == [[255, 0, 0], [0, 128, 255]]
    # Aseprite's RGBA palettes: a Channels line and an alpha after each colour (a transparent one keeps its place)
    aseprite = "GIMP Palette\nName: A\nChannels: RGBA\n#\n  0   0   0   0\tClear\n255 255 255 255\tWhite\n"
    back = palette_files.read_palette("a.gpl", aseprite.encode())
    assert back.name == "A" and back.colors.tolist() == [[0, 0, 0], [255, 255, 255]]


def riff_pal(colors: list[tuple[int, int, int]], *, count: int | None = None, before: bytes = b"") -> bytes:
    """Microsoft's RIFF palette as its documentation lays it out (LOGPALETTE: version 0x300, count, R G B flags)."""
    n = len(colors) if count is None else count
    data = struct.pack("<HH", 0x300, n) + b"".join(struct.pack("BBBB", *c, 0) for c in colors)
    body = b"PAL " + before + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_microsofts_riff_palettes_are_read_in_order_by_their_first_bytes() -> None:
    colors = [(255, 0, 0), (0, 0, 0), (1, 2, 3), (0, 0, 0)]
    assert palette_files.read_palette("win.pal", riff_pal(colors)).colors.tolist() == [list(c) for c in colors]
    # a chunk before 'data' of odd length is padded to even, as RIFF writers do; the suffix does not matter
    listed = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"
    back = palette_files.read_palette("download", riff_pal(colors, before=listed))
    assert back.name == "download" and back.colors.tolist() == [list(c) for c in colors]


@pytest.mark.parametrize("name,data,why", [
    ("a.pal", riff_pal([(1, 2, 3)], count=3), "says 3 colours, holds 1"),
    ("a.pal", riff_pal([(1, 2, 3)], count=60000), "60000 colours, more than 256"),
    ("a.pal", riff_pal([]), "no colours"),
    ("a.pal", b"RIFF\4\0\0\0PAL ", "without a 'data' chunk"),
    ("a.act", b"\0" * 100, "768 or 772 bytes"),
    ("a.pal", b"JASC-PAL\r\n0100\r\n3\r\n1 2 3\r\n", "says 3 colours"),
    ("a.pal", b"JASC-PAL\r\n0100\r\n1\r\n1 2 300\r\n", "line 4"),
    ("a.txt", b";paint.net\nFFGG0000\n", "line 2"),
    ("a.gpl", b"GIMP Palette\n1 2\n", "line 2"),
    ("a.png", b"not a png", r"not a readable image \(not a format Pillow identifies\)$"),
    ("a.png", claimed_png(5000, 5000), r"^a.png: 5000x5000 is more than a palette strip needs \(16,777,216 pixels\)$"),
    ("a.hex", b"", "no colours"),
])
def test_bad_files_name_the_file_and_the_problem(name: str, data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        palette_files.read_palette(name, data)
    assert name in str(info.value)


# ------------------------------------------------------------------------------------------------ indexed
def test_indexed_png_has_the_palette_in_order_and_exact_indices() -> None:
    pal = named_palette("pico-8")
    idx = RNG.integers(0, 16, (24, 40))
    data = indexed.indexed_png(pal.colors[idx], pal)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.getpalette() == pal.colors.reshape(-1).tolist()
        assert np.array_equal(np.asarray(im), idx)
    # only a few colours used: the file still carries the whole palette, same order, same indices
    few = idx % 3
    with Image.open(io.BytesIO(indexed.indexed_png(pal.colors[few], pal))) as im:
        assert im.getpalette() == pal.colors.reshape(-1).tolist() and np.array_equal(np.asarray(im), few)


def test_transparency_gets_one_extra_entry_after_the_palette() -> None:
    pal = named_palette("pico-8")
    idx = RNG.integers(0, 16, (16, 16))
    rgba = np.dstack([pal.colors[idx], np.where(idx == 3, 0, 255)]).astype(np.uint8)
    with Image.open(io.BytesIO(indexed.indexed_png(rgba, pal))) as im:
        assert im.getpalette()[:48] == pal.colors.reshape(-1).tolist() and len(im.getpalette()) == 17 * 3
        assert im.info["transparency"] == 16
        got = np.asarray(im)
        assert (got[idx == 3] == 16).all() and np.array_equal(got[idx != 3], idx[idx != 3])
        assert np.array_equal(np.asarray(im.convert("RGBA"))[..., 3], rgba[..., 3])


def test_colours_outside_the_palette_take_the_nearest_in_oklab_as_brute_force_does() -> None:
    pal = named_palette("pico-8")
    img = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    got, _ = indexed.palette_indices(img, pal)
    lab = color.srgb_u8_to_oklab(img.reshape(-1, 3))
    plab = color.srgb_u8_to_oklab(pal.colors)
    brute = ((lab[:, None, :] - plab[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.array_equal(got.reshape(-1), brute)


def test_gif_frames_share_one_global_palette_in_order() -> None:
    pal = named_palette("pico-8")
    frames_idx = [RNG.integers(0, 16, (12, 20)), RNG.integers(0, 3, (12, 20))]
    data = indexed.indexed_gif([pal.colors[i] for i in frames_idx], pal, duration_ms=80)
    assert data[10] & 0x80 and 2 ** ((data[10] & 7) + 1) == 16  # a global table of 16 entries
    assert list(data[13:13 + 48]) == pal.colors.reshape(-1).tolist()
    assert _local_tables(data) == [False, False]
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 2
        for n, idx in enumerate(frames_idx):
            im.seek(n)
            assert np.array_equal(np.asarray(im.convert("RGB")), pal.colors[idx])


def _local_tables(g: bytes) -> list[bool]:
    pos = 13 + 3 * 2 ** ((g[10] & 7) + 1)
    out = []
    while pos < len(g) and g[pos] != 0x3B:
        if g[pos] == 0x21:
            pos += 2
        else:
            packed = g[pos + 9]
            out.append(bool(packed & 0x80))
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        while g[pos]:
            pos += g[pos] + 1
        pos += 1
    return out


def test_command_line_converts_palettes_and_writes_indexed_images(tmp_path: Path) -> None:
    def pixart(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pixart_nodes", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)

    done = pixart("palette-file", "pico-8", "-o", "p8.act")
    assert done.returncode == 0, done.stderr
    done = pixart("palette-file", "p8.act", "-o", "p8.pal")
    assert done.returncode == 0, done.stderr
    assert palette_files.read_palette(tmp_path / "p8.pal").colors.tolist() == \
        named_palette("pico-8").colors.tolist()
    src = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(src).save(tmp_path / "in.png")
    done = pixart("convert", "in.png", "out.png", "--palette", "p8.pal", "--indexed")
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "P" and im.getpalette() == named_palette("pico-8").colors.reshape(-1).tolist()
    bad = pixart("convert", "in.png", "out.png", "--pixel-size", "4", "--indexed")
    assert bad.returncode != 0 and "--indexed needs a palette" in bad.stderr


# ------------------------------------------------------------------------------------------------ hostile files
def _png(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def _traced_peak_mib(fn) -> tuple[float, BaseException | None]:
    tracemalloc.start()
    err = None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the caller asserts which
        err = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, err


def _loop_block(packed: np.ndarray) -> tuple[int, int]:
    """The swatch width and height as the gcd of every equal-colour run along each row, and along each column, one
    at a time."""
    def runs(line: np.ndarray) -> int:
        bounds = np.concatenate(([0], np.flatnonzero(line[1:] != line[:-1]) + 1, [len(line)]))
        return int(np.gcd.reduce(np.diff(bounds)))
    h, w = packed.shape
    return math.gcd(w, *(runs(packed[y]) for y in range(h))), math.gcd(h, *(runs(packed[:, x]) for x in range(w)))


def test_strip_block_sides_equal_the_gcd_of_every_run_along_each_axis() -> None:
    rng = np.random.default_rng(0)
    for bw, bh in ((1, 1), (2, 2), (3, 3), (8, 8), (32, 32), (20, 10), (3, 7)):
        for n in (1, 2, 5, 16, 17):
            for rows in (1, 3):  # few colours: neighbouring swatches often share one
                packed = np.repeat(np.repeat(rng.integers(0, 3, (rows, n)), bh, 0), bw, 1).astype(np.uint32)
                assert palette_files._block_sides(packed) == _loop_block(packed), (bw, bh, n, rows)


def test_png_with_more_swatches_than_a_strip_holds_is_refused_before_listing_them() -> None:
    y, x = np.mgrid[:512, :512]
    checker = _png(((x + y) % 2 * 255).astype(np.uint8))  # 1-px swatches: 262,144 cells of two colours
    peak, err = _traced_peak_mib(lambda: palette_files.read_palette("checker.png", checker))
    assert isinstance(err, ValueError)
    assert str(err) == ("checker.png: 512x512 in swatches of 1x1 px is 262,144 swatches; a palette strip has at "
                        f"most {palette_files.MAX_STRIP_CELLS:,}")
    assert peak < 8, f"{peak:.1f} MiB traced"  # the image is 1 MiB as RGBA; a list of its cells was 20+ MiB
    # the bound leaves room for padding: 1,024 cells of which 16 opaque read; 1,025 cells do not
    grid = np.zeros((32, 32, 4), np.uint8)
    grid[0, :16] = [[17 * i, 0, 255 - 17 * i, 255] for i in range(16)]
    assert len(palette_files.read_palette("grid.png", _png(grid))) == 16
    with pytest.raises(ValueError, match=r"^thin.png: 1025x1 in swatches of 1x1 px is 1,025 swatches"):
        palette_files.read_palette("thin.png", _png((np.arange(1025, dtype=np.uint8) % 2 * 255)[None]))
    # more rows than a column of 256 tall swatches are refused from the header: this one has no pixel data to decode
    with pytest.raises(ValueError, match=r"^tall.png: 1x16777216 is taller than a palette strip needs \(65,536 rows\)$"):
        palette_files.read_palette("tall.png", claimed_png(1, 1 << 24))
    assert palette_files.read_palette("column.png", _png(np.full((1 << 16, 1, 3), 7, np.uint8))).colors.tolist() \
        == [[7, 7, 7]]


@pytest.mark.parametrize("name,head,line,bad", [
    ("big.hex", b"", b"ff8800\n", b"zz\n"),
    ("big.gpl", b"GIMP Palette\n", b"255 136 0\tx\n", b"zz\n"),
    ("big.txt", b";paint.net\n", b"FFFF8800\n", b"zz\n"),
    ("big.pal", b"JASC-PAL\r\n0100\r\n300\r\n", b"1 2 3\r\n", b"zz\r\n"),
])
def test_text_files_stop_at_the_colour_past_the_limit(name: str, head: bytes, line: bytes, bad: bytes) -> None:
    # a bad line after the 257th colour: reached only by a reader that parses the whole file before counting
    with pytest.raises(ValueError, match=rf"^{name}: more than 256 colours; a palette holds at most 256$"):
        palette_files.read_palette(name, head + line * 257 + bad)
    assert len(palette_files.read_palette(name, head.replace(b"300", b"256") + line * 256)) == 256


def test_files_over_the_size_limit_are_refused_reading_only_the_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^p.hex: over 1,048,576 bytes; a palette file is far smaller$"):
        palette_files.read_palette("p.hex", b"fff\n" * (palette_files.MAX_FILE_BYTES // 4 + 1))
    big = tmp_path / "big.gpl"
    with big.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB that take no disk
    peak, err = _traced_peak_mib(lambda: palette_files.read_palette(big))
    assert isinstance(err, ValueError) and str(err) == "big.gpl: over 1,048,576 bytes; a palette file is far smaller"
    assert peak < 4, f"{peak:.1f} MiB traced"  # the limit plus one byte is read, not the file


def test_png_writer_refuses_a_strip_its_reader_would_refuse() -> None:
    two = Palette("two", np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"^block 2897: 2 swatches of 2897x2897 px are over 16,777,216 pixels"):
        palette_files.palette_bytes(two, "png", block=2897)  # 16,785,218 pixels, 50 MB before it was refused
    with pytest.raises(ValueError, match=r"^block 1000000: "):
        palette_files.palette_bytes(two, "png", block=1_000_000)
    # the largest strip written is read back
    one = Palette("one", np.array([[1, 2, 3]], dtype=np.uint8))
    data = palette_files.palette_bytes(one, "png", block=4096)
    assert palette_files.read_palette("one.png", data).colors.tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("name,data,why", [
    ("long.gpl", b"GIMP Palette\n1 2 x" + b"a" * 100_000 + b"\n", r"^long.gpl: line 2: expected 'R G B \[name\]'"),
    ("long.gpl", b"GIMP Palette\n1 2 300 " + b"a" * 100_000 + b"\n", r"^long.gpl: line 2: colour values must be"),
    ("long.pal", b"JASC-PAL\n0100\n" + b"x" * 100_000 + b"\n", r"^long.pal: line 3: expected the number"),
    ("long.hex", b"ff8800\n" + b"x" * 100_000 + b"\n", r"^long.hex: line 2: expected one hex colour"),
    ("long.txt", b";paint.net\nFF000000\n" + b"x" * 100_000 + b"\n", r"^long.txt: line 3: expected AARRGGBB"),
])
def test_errors_quote_a_long_line_shortened(name: str, data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        palette_files.read_palette(name, data)
    assert len(str(info.value)) < 200 and "characters)" in str(info.value)


def test_a_nul_in_the_file_name_names_the_file() -> None:
    with pytest.raises(ValueError, match=r"^'a\\x00b.hex': embedded null byte$"):
        palette_files.read_palette("a\x00b.hex")


@pytest.mark.parametrize("fmt", ["gpl", "txt"])
@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x0b", "\x85", "\u2028"])
def test_a_name_with_a_line_break_cannot_add_or_break_lines(fmt: str, brk: str) -> None:
    # the name is written into a header line: "x\nFFFF0000" gave a .txt file with one colour more (first, so every
    # index moved) and a .gpl file that no longer read ("line 3: expected 'R G B [name]'")
    pal = named_palette("pico-8")
    evil = Palette(f"x{brk}FFFF0000{brk}255 0 0", pal.colors)
    back = palette_files.read_palette(f"p.{fmt}", palette_files.palette_bytes(evil, fmt))
    assert back.colors.tolist() == pal.colors.tolist()
    if fmt == "gpl":
        assert back.name == "x FFFF0000 255 0 0"


def test_a_strip_over_pillows_warning_size_is_refused_without_its_warning(recwarn) -> None:
    # 100M pixels: Pillow warns (DecompressionBombWarning, printed with its source line) before our header check
    with pytest.raises(ValueError, match=r"^big.png: 10000x10000 is more than a palette strip needs"):
        palette_files.read_palette("big.png", claimed_png(10000, 10000))
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("name,data,title", [
    ("latin1.gpl", b"GIMP Palette\nName: Caf\xe9 colours\n# by Ren\xe9e\n255 0 0\tRouge fonc\xe9\n0 0 0\tNoir\n",
     "Caf\u00e9 colours"),
    ("latin1.txt", b";paint.net Palette File\n;Palette Name: Caf\xe9\n;by Ren\xe9e \x93quoted\x94\n"
                   b"FFFF0000\nFF000000\n", "latin1"),
    ("latin1.hex", b"; Caf\xe9\x81\nff0000\n000000\n", "latin1"),
])
def test_text_palettes_with_names_in_a_windows_code_page_are_read(name: str, data: bytes, title: str) -> None:
    # one Latin-1 byte in a name or comment refused the whole file: "not a text palette file (not UTF-8)"
    back = palette_files.read_palette(name, data)
    assert back.name == title and back.colors.tolist() == [[255, 0, 0], [0, 0, 0]]
    # binary (or UTF-16) data is still no text palette
    with pytest.raises(ValueError, match=rf"^{name}: not a text palette file \(not UTF-8\)$"):
        palette_files.read_palette(name, data.replace(b"\n", b"\0\n"))


def test_one_code_page_line_leaves_the_utf8_ones_as_they_are() -> None:
    # the whole file was decoded as cp1252 once one line was not UTF-8: "Café ünïcode" came back mojibake
    data = "GIMP Palette\nName: Café ünïcode\n".encode() + b"# by Ren\xe9e\n255 0 0\tRouge\n"
    assert palette_files.read_palette("mixed.gpl", data).name == "Café ünïcode"


def test_png_swatches_that_are_not_square_are_read_once_each() -> None:
    # the swatch side was one gcd for both axes: 20x10 swatches were read as two 10x10 each, every colour twice
    colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]
    strip = np.repeat(np.repeat(np.array([colours], np.uint8), 10, axis=0), 20, axis=1)
    assert strip.shape == (10, 80, 3)
    assert palette_files.read_palette("wide.png", _png(strip)).colors.tolist() == colours
    # two rows of 6x9 swatches, read row by row; a neighbour sharing a colour still shows the edge elsewhere
    grid = np.repeat(np.repeat(np.array([colours[:2] + colours[:1], colours[2:] + colours[3:]], np.uint8), 9, 0), 6, 1)
    assert palette_files.read_palette("grid.png", _png(grid)).colors.tolist() == [*colours[:2], colours[0],
                                                                                  *colours[2:], colours[3]]
    # a thin strip of a full palette of non-square swatches: their squares (2x2, the sides' gcd) would be 1,920
    many = np.random.default_rng(5).permutation(256 ** 3)[:256]
    many = np.stack([many >> 16, many >> 8 & 255, many & 255], axis=1).astype(np.uint8)
    for sides, strip in (("3x10", np.repeat(np.repeat(many[None], 10, 0), 3, 1)),
                         ("10x3", np.repeat(np.repeat(many[:, None], 3, 0), 10, 1))):
        assert palette_files.read_palette(f"{sides}.png", _png(strip)).colors.tolist() == many.tolist(), sides
    # square strips read as they did
    pico = named_palette("pico-8")
    assert palette_files.read_palette("p.png", palette_files.palette_bytes(pico, "png", block=8)).colors.tolist() \
        == pico.colors.tolist()
