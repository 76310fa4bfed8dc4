"""Defects of the ``pixart`` command found by a hunt; each test fails on the code it was written against."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from tests.support.cli import gradient as _gradient, run as _run


def _sprite_on_clear(tmp_path: Path) -> Path:
    """A 16x16 sprite: an opaque square on a fully transparent background."""
    a = np.zeros((16, 16, 4), np.uint8)
    a[4:12, 4:12] = (255, 0, 77, 255)
    path = tmp_path / "sprite.png"
    Image.fromarray(a).save(path)
    return path


def test_snap_json_to_stdout_is_only_json(tmp_path, capsys):
    # `pixart snap a.png b.png --json - | jq .` : the human summary line "b.png: grid 5.00x5.00 ..." was printed to
    # stdout before the JSON, so stdout was not JSON (only -q made it so). `pixart palettes --json` prints JSON only.
    art = np.random.default_rng(1).integers(0, 4, (12, 16))
    pal = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 77], [41, 173, 255]], np.uint8)
    Image.fromarray(np.repeat(np.repeat(pal[art], 5, 0), 5, 1)).save(tmp_path / "big.png")
    code, out, err = _run(capsys, "snap", tmp_path / "big.png", tmp_path / "small.png", "--json", "-")
    assert code == 0, err
    report = json.loads(out)  # JSONDecodeError: the summary line comes first
    assert report["detected"] is True


def test_a_folder_into_a_gif_keeps_the_frames_numeric_order(tmp_path, capsys):
    # walk1.png .. walk11.png (Aseprite's unpadded {frame} numbering) became the frames 1, 10, 11, 2, 3, ...:
    # plain string sorting. Aseprite's "open sequence", ImageMagick's %d and ffmpeg order them by number.
    frames = tmp_path / "walk"
    frames.mkdir()
    for i in range(1, 12):
        img = np.zeros((8, 8, 3), np.uint8)
        img[..., 0] = i * 20
        Image.fromarray(img).save(frames / f"walk{i}.png")
    code, _, err = _run(capsys, "-q", "convert", frames, tmp_path / "walk.gif", "--colors", "16")
    assert code == 0, err
    with Image.open(tmp_path / "walk.gif") as gif:
        order = [int(np.asarray(f.convert("RGB"))[0, 0, 0]) // 20 for f in ImageSequence.Iterator(gif)]
    assert order == list(range(1, 12)), order


@pytest.mark.parametrize("argv", [["cleanup", "--background", "auto"], ["convert", "--palette", "pico-8"]])
def test_a_bmp_output_does_not_silently_drop_transparency(tmp_path, capsys, argv):
    # Pillow writes RGBA as a 32-bit BI_RGB BMP, whose fourth byte readers ignore (Pillow itself, so pixart too):
    # the removed background came back opaque black. cleanup refuses JPEG for exactly this reason.
    src = _sprite_on_clear(tmp_path)
    cmd, *opts = argv
    code, _, err = _run(capsys, "-q", cmd, src, tmp_path / "out.bmp", *opts)
    if code == 2:  # refused, as cleanup refuses a .jpg: fine
        assert "Traceback" not in err and "out.bmp" in err
        return
    assert code == 0, err
    with Image.open(tmp_path / "out.bmp") as im:
        rgba = np.asarray(im.convert("RGBA"))
    assert rgba[0, 0, 3] == 0, f"transparent corner read back as {rgba[0, 0].tolist()} ({im.mode})"


def test_option_values_are_checked_once_not_per_image(tmp_path, capsys):
    # a bad --rare / --min-size was found by the core on each file: a folder of 3 gave 3 error lines, each blaming
    # a file ("a.png: rare: ..."), and "0 of 3 written". --rare 1 passes the option's own 0..1 check first.
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(_gradient()).save(d / name)
    code, _, err = _run(capsys, "-q", "cleanup", d, f"{tmp_path / 'o1'}/", "--rare", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "rare" in lines[0], err
    code, _, err = _run(capsys, "-q", "snap", d, f"{tmp_path / 'o2'}/", "--min-size", "1")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "min" in lines[0], err


def test_rare_1_is_refused_by_the_option_check_or_works(tmp_path, capsys):
    # argparse takes --rare as 0..1 and the core then refuses 1 ("below 1"), reported against the image
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "-q", "cleanup", tmp_path / "a.png", tmp_path / "o.png", "--rare", "1")
    assert code == 0 or "argument --rare" in err, err


def test_a_transparent_gif_from_colors_256_keeps_its_palette_or_is_refused(tmp_path, capsys):
    # --colors 256 on a picture with transparency, written as .gif: a GIF holds 255 colours beside the clear index,
    # so Pillow's median cut merged two of the extracted colours, the summary still said "256 of 256 colours", and
    # the warning advised "pixart convert --colors 256", the very option given. --indexed refuses this clearly.
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), np.full((64, 64), 255, np.uint8)])
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "n.png")
    code, _, err = _run(capsys, "-q", "convert", tmp_path / "n.png", tmp_path / "n.png.png", "--colors", "256")
    assert code == 0, err
    code, _, err = _run(capsys, "-q", "convert", tmp_path / "n.png", tmp_path / "n.gif", "--colors", "256")
    if code == 2:
        assert "255" in err and "Traceback" not in err, err
        return
    assert "--colors 256 extracts" not in err, err
    png = np.asarray(Image.open(tmp_path / "n.png.png").convert("RGBA"))
    gif = np.asarray(Image.open(tmp_path / "n.gif").convert("RGBA"))
    want = {tuple(c) for c in png[png[..., 3] > 0][:, :3].tolist()}
    got = {tuple(c) for c in gif[gif[..., 3] > 0][:, :3].tolist()}
    assert got == want, f"{len(got - want)} colours not extracted, {len(want - got)} extracted colours lost"


def test_an_indexed_png_given_as_a_palette_is_its_plte(tmp_path, capsys):
    # the pack's own --indexed output (PLTE = pico-8 in order) fed back as a palette file was read as a swatch strip
    # of 1x1 swatches: 192 entries for a 16x12 sprite, its pixels in raster order with repeats. Aseprite's Load
    # Palette takes an indexed PNG's colour table; no reading of a sprite gives the same colour 50 times.
    art = np.random.default_rng(1).integers(0, 4, (12, 16))
    pal = np.array([[0, 0, 0], [255, 241, 232], [255, 0, 77], [41, 173, 255]], np.uint8)
    Image.fromarray(pal[art]).save(tmp_path / "art.png")
    code, _, err = _run(capsys, "-q", "convert", tmp_path / "art.png", tmp_path / "idx.png", "--palette", "pico-8",
                        "--indexed")
    assert code == 0, err
    code, out, err = _run(capsys, "palette-file", tmp_path / "idx.png")
    assert code == 0, err
    _, pico, _ = _run(capsys, "palette-file", "pico-8")
    got = out.split()
    assert len(got) == len(set(got)), f"{len(got)} entries, {len(set(got))} different"
    assert got == pico.split()
