"""``pixart palettes`` (the library by words and size) and one palette for a batch: a folder of indexed PNGs shares
one PLTE, a folder into one GIF is an animation with one global palette."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixart_nodes.core import palette as pal
from pixart_nodes.core import palettes as lib
from tests.support.cli import run as _run


# --- pixart palettes ---------------------------------------------------------------------------------------------

def test_palettes_table_search_and_sizes(capsys):
    code, out, _ = _run(capsys, "palettes", "--search", "gameboy", "--colors", "4")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "colours", "author"]
    want = lib.search("gameboy", colors=4)
    assert [ln.split()[0] for ln in lines[1:-1]] == [p.name for p in want]
    assert all(ln.split()[1] == "4" for ln in lines[1:-1])
    assert lines[1].split()[:3] == ["gameboy", "4", "Nintendo"]
    assert lines[-1] == f"{len(want)} of {len(lib.LIBRARY)} palettes"

    code, out, _ = _run(capsys, "-q", "palettes", "--min", "100", "--max", "128")
    rows = out.splitlines()[1:]
    assert code == 0 and sorted(r.split()[0] for r in rows) == sorted(
        p.name for p in lib.LIBRARY if 100 <= p.size <= 128)

    code, out, _ = _run(capsys, "palettes")
    assert code == 0 and len(out.splitlines()) == len(lib.LIBRARY) + 2


def test_palettes_json_has_the_colours_in_order(capsys):
    code, out, _ = _run(capsys, "palettes", "--search", "pico-8", "--json")
    data = json.loads(out)
    assert code == 0 and data[0]["name"] == "pico-8" and data[0]["size"] == 16
    assert data[0]["colors"] == pal.named_palette("pico-8").hex()
    assert data[0]["author"] == "Lexaloffle Games" and data[0]["source"].startswith("https://lospec.com/")


def test_palettes_errors(capsys):
    code, out, err = _run(capsys, "palettes", "--search", "no such thing")
    assert code == 1 and out == "" and "no palette matches" in err
    code, _, err = _run(capsys, "palettes", "--colors", "4", "--min", "2")
    assert code == 2 and "--colors and --min/--max exclude each other" in err
    code, _, err = _run(capsys, "palettes", "--min", "9", "--max", "4")
    assert code == 2 and "--min 9 is larger than --max 4" in err


# --- one palette for a batch ---------------------------------------------------------------------------------------

def _frames(folder: Path, n: int = 3, size: tuple[int, int] = (24, 32)) -> list[np.ndarray]:
    """Frames with different colours each (so per-image palettes would differ)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        base = rng.integers(0, 256, (6, 3))
        idx = rng.integers(0, 6, (size[0] // 4, size[1] // 4))
        img = np.repeat(np.repeat(base[idx], 4, 0), 4, 1).astype(np.uint8)
        Image.fromarray(img).save(folder / f"f{i:02d}.png")
        out.append(img)
    return out


def test_indexed_folder_shares_one_plte(tmp_path, capsys):
    frames = _frames(tmp_path / "in")
    code, out, err = _run(capsys, "convert", str(tmp_path / "in"), str(tmp_path / "out"), "--colors", "8",
                          "--indexed", "--seed", "3")
    assert code == 0, err
    assert "one palette of 8 colours from 3 images" in out
    want = pal.extract_palette(frames, 8, seed=3).colors
    for i in range(3):
        with Image.open(tmp_path / "out" / f"f{i:02d}.png") as im:
            assert im.mode == "P"
            assert im.getpalette() == want.reshape(-1).tolist(), i
    # asking for one palette per image is still possible, and gives different PLTEs here
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "in"), str(tmp_path / "sep"), "--colors", "8",
                        "--indexed", "--no-shared-palette")
    assert code == 0, err
    pltes = []
    for i in range(3):
        with Image.open(tmp_path / "sep" / f"f{i:02d}.png") as im:
            pltes.append(tuple(im.getpalette()))
    assert len(set(pltes)) > 1


def test_shared_palette_for_error_diffusion_is_chosen_on_the_pictures(tmp_path, capsys):
    """With an error-diffusion dither the shared palette is spread for dithering, judged on each picture as drawn
    (not on a strip of their pixels, where error has no sideways neighbours)."""
    (tmp_path / "in").mkdir()
    y, x = np.mgrid[0:48, 0:64]
    frames = []
    for i in range(2):
        img = np.stack([x * 255 // 63, y * 255 // 47, (x + y + 40 * i) * 255 // 150], -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "in" / f"g{i}.png")
        frames.append(img)
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "in"), str(tmp_path / "out"), "--colors", "8",
                        "--indexed", "--dither", "floyd-steinberg")
    assert code == 0, err
    want = pal.extract_palette(frames, 8, dither=True).colors
    strip = np.concatenate([f.reshape(-1, 1, 3) for f in frames])
    assert not np.array_equal(want, pal.extract_palette(strip, 8, dither=True).colors)
    for i in range(2):
        with Image.open(tmp_path / "out" / f"g{i}.png") as im:
            assert im.getpalette() == want.reshape(-1).tolist(), i


def test_shared_palette_for_plain_pngs(tmp_path, capsys):
    frames = _frames(tmp_path / "in")
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "in"), str(tmp_path / "out"), "--colors", "5",
                        "--shared-palette")
    assert code == 0, err
    want = pal.extract_palette(frames, 5).colors
    allowed = {tuple(c) for c in want.tolist()}
    used = set()
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / "out" / f"f{i:02d}.png").convert("RGB"))
        used |= {tuple(c) for c in got.reshape(-1, 3).tolist()}
    assert used <= allowed and len(used) >= 4


def _gif_tables(g: bytes) -> tuple[list[int], list[bool], list[int]]:
    """The global colour table, whether each frame has a local table, and each frame's delay (ms), read from the
    bytes (GIF89a: header, logical screen descriptor, global table, then extension and image blocks)."""
    assert g[:6] == b"GIF89a" and g[10] & 0x80
    n = 2 ** ((g[10] & 7) + 1)
    table = list(g[13:13 + 3 * n])
    pos, local, delays = 13 + 3 * n, [], []
    while g[pos] != 0x3B:
        if g[pos] == 0x21:
            if g[pos + 1] == 0xF9:
                delays.append(int.from_bytes(g[pos + 4:pos + 6], "little") * 10)
            pos += 2
        else:
            packed = g[pos + 9]
            local.append(bool(packed & 0x80))
            pos += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        while g[pos]:
            pos += g[pos] + 1
        pos += 1
    return table, local, delays


def test_folder_into_an_animated_gif_with_one_palette(tmp_path, capsys):
    frames = _frames(tmp_path / "in", n=4)
    gif = tmp_path / "anim.gif"
    code, out, err = _run(capsys, "convert", str(tmp_path / "in"), str(gif), "--colors", "12", "--frame-ms", "80")
    assert code == 0, err
    assert "4 frames 32x24, one palette of 12 colours" in out
    want = pal.extract_palette(frames, 12).colors
    table, local, delays = _gif_tables(gif.read_bytes())
    assert table[:36] == want.reshape(-1).tolist()  # the global table is the palette in order (padded to 16)
    assert local == [False] * 4 and delays == [80] * 4  # no frame has a palette of its own
    with Image.open(gif) as im:
        assert im.n_frames == 4
        for i in range(4):
            im.seek(i)
            rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
            assert {tuple(c) for c in rgb.tolist()} <= {tuple(c) for c in want.tolist()}, i
    # a library palette works too, and its order is the file's
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "in"), str(gif), "--palette", "gameboy",
                        "--pixel-size", "2", "--upscale")
    assert code == 0, err
    table, local, _ = _gif_tables(gif.read_bytes())
    assert table[:12] == pal.named_palette("gameboy").colors.reshape(-1).tolist() and not any(local)


@pytest.mark.parametrize("argv,needle", [
    (["--pixel-size", "2"], "an animated GIF is indexed: give --palette or --colors"),
    (["--colors", "4", "--no-shared-palette"], "the frames of one GIF share its global palette"),
])
def test_animated_gif_errors(tmp_path, capsys, argv, needle):
    _frames(tmp_path / "in")
    code, _, err = _run(capsys, "convert", str(tmp_path / "in"), str(tmp_path / "a.gif"), *argv)
    assert code == 2 and needle in err and err.count("\n") == 1


def test_animated_gif_frames_must_share_a_size(tmp_path, capsys):
    _frames(tmp_path / "in")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "in" / "z.png")
    code, _, err = _run(capsys, "convert", str(tmp_path / "in"), str(tmp_path / "a.gif"), "--colors", "4")
    assert code == 2 and "z.png: 10x10 differs from the first frame 32x24" in err
    assert not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize("single", [False, True], ids=["animation", "indexed-file"])
def test_frames_wider_than_a_gif_holds_are_refused_naming_the_gif(tmp_path, capsys, single):
    # the GIF's sizes are 16-bit: a 70000x1 strip was an OverflowError traceback from inside Pillow
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (70000, 1), (200, 10, 10)).save(tmp_path / "in" / name)
    src = tmp_path / "in" / "a.png" if single else tmp_path / "in"
    code, _, err = _run(capsys, "convert", str(src), str(tmp_path / "w.gif"), "--palette", "pico-8",
                        *(["--indexed"] if single else []))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'w.gif'}: 70000x1 is too large for a GIF (at most 65535 pixels a side)" in err, err
    assert not (tmp_path / "w.gif").exists()
