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


def test_rare_1_is_refused_by_the_option_check(tmp_path, capsys):
    # argparse took --rare as 0..1 and the core then refused 1 ("below 1"), reported against the image
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "-q", "cleanup", tmp_path / "a.png", tmp_path / "o.png", "--rare", "1")
    assert code == 2 and err.count("\n") == 1 and "rare: must be in 0..1 (below 1)" in err and "a.png" not in err, err


def test_a_transparent_gif_from_colors_256_is_written_exactly_in_255(tmp_path, capsys):
    # --colors 256 on a picture with transparency, written as .gif: a GIF holds 255 colours beside the clear index,
    # so Pillow's median cut merged two of the extracted colours, the summary still said "256 of 256 colours", and
    # the warning advised "pixart convert --colors 256", the very option given. Now 255 are extracted for it, and
    # written exactly: the colours of the same extraction written as PNG.
    rng = np.random.default_rng(0)
    rgba = np.dstack([rng.integers(0, 256, (64, 64, 3)).astype(np.uint8), np.full((64, 64), 255, np.uint8)])
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "n.png")
    code, _, err = _run(capsys, "-q", "convert", tmp_path / "n.png", tmp_path / "ref.png", "--colors", "255")
    assert code == 0, err
    code, out, err = _run(capsys, "convert", tmp_path / "n.png", tmp_path / "n.gif", "--colors", "256")
    assert code == 0 and "of 255 colours" in out and "Pillow's median cut" not in err, (out, err)
    png = np.asarray(Image.open(tmp_path / "ref.png").convert("RGBA"))
    gif = np.asarray(Image.open(tmp_path / "n.gif").convert("RGBA"))
    np.testing.assert_array_equal(gif, png)


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


def test_a_full_palette_with_transparency_still_writes_a_gif(tmp_path, capsys):
    # routing every palette .gif through the indexed writer refused a 256-colour palette beside clear pixels, which
    # the plain writer holds exactly when at most 255 of its colours are used (as Aseprite gives one index to
    # transparency); --indexed, which promises the palette as the file's table, still refuses
    src = _sprite_on_clear(tmp_path)
    full = " ".join(f"#{(255 << 16) | (i << 8) | 77:06x}" for i in range(255)) + " #000000"
    code, _, err = _run(capsys, "-q", "convert", src, tmp_path / "s.gif", "--palette", full)
    assert code == 0, err
    back = np.asarray(Image.open(tmp_path / "s.gif").convert("RGBA"))
    assert back[0, 0, 3] == 0 and back[8, 8].tolist() == [255, 0, 77, 255]
    code, _, err = _run(capsys, "-q", "convert", src, tmp_path / "i.gif", "--palette", full, "--indexed")
    assert code == 2 and "255" in err


def test_a_jpeg_takes_mostly_opaque_pixels(tmp_path, capsys):
    # the refusal is for pixels that are clear (alpha below 128, as the GIF and indexed writers count them); a
    # soft edge at alpha 200 was refused too
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., :3], a[..., 3] = (200, 100, 50), 255
    a[0, 0, 3] = 200
    Image.fromarray(a).save(tmp_path / "soft.png")
    code, _, err = _run(capsys, "-q", "convert", tmp_path / "soft.png", tmp_path / "soft.jpg", "--palette", "pico-8")
    assert code == 0, err


def test_a_name_without_a_number_comes_before_its_numbered_frames(tmp_path):
    from pixart_nodes.core import imageio

    for name in ("walk10.png", "walk.png", "walk2.png", "walk1.png", "a.png", "a10.png", "b\u0663.png"):
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    assert [p.name for p in imageio.list_images(tmp_path)] == [
        "a.png", "a10.png", "b\u0663.png", "walk.png", "walk1.png", "walk2.png", "walk10.png"]


def test_an_indexed_png_padded_past_its_colours_gives_only_them(tmp_path, capsys):
    # tools write 256 table entries for a 2-colour picture, the rest one padding value: a palette of 256, 254 of
    # them black; entries past the used ones that differ (a palette's unused colours) are kept
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    im.putpalette([255, 0, 77, 41, 173, 255] + [0, 0, 0] * 254)
    im.save(tmp_path / "padded.png")
    code, out, err = _run(capsys, "palette-file", tmp_path / "padded.png")
    assert code == 0, err
    assert out.split() == ["ff004d", "29adff"]


def test_rgb565_auto_enlarges_pixel_art_without_new_colours(tmp_path, capsys):
    # a 16x12 four-colour sprite sent to a 160x120 LCD with the default --resample auto was enlarged with Lanczos:
    # the preview had ~7000 colours, blurred edges and ringing. Art of at most 256 colours (the pack's quantized
    # output) is enlarged by blocks, as the pack does everywhere else (convert --upscale, snap --scale); a photo
    # still by Lanczos
    art = np.random.default_rng(1).integers(0, 4, (12, 16))
    pal = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 77], [41, 173, 255]], np.uint8)
    photo = np.random.default_rng(2).integers(0, 256, (24, 32, 3)).astype(np.uint8)  # over 256 colours
    for name, img, most in (("art", pal[art], 4), ("photo", photo, None)):
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        code, _, err = _run(capsys, "-q", "rgb565", tmp_path / f"{name}.png", tmp_path / f"{name}.bin",
                            "--size", "160x120")
        assert code == 0, err
        code, _, err = _run(capsys, "-q", "rgb565-preview", tmp_path / f"{name}.bin", tmp_path / f"{name}_p.png",
                            "--size", "160x120")
        assert code == 0, err
        shown = np.asarray(Image.open(tmp_path / f"{name}_p.png").convert("RGB")).reshape(-1, 3)
        colours = len(np.unique(shown, axis=0))
        assert colours <= most if most else colours > 1000, colours


def test_a_jpeg_keeps_a_sprites_colours_where_pillows_default_smears_them(tmp_path, capsys):
    # Pillow's JPEG default (quality 75, chroma at half resolution) moved a one-pixel checker of two colours by
    # dozens of levels; the command line writes quality 95 without subsampling
    sprite = np.zeros((32, 32, 3), np.uint8)
    sprite[::2, ::2] = sprite[1::2, 1::2] = (230, 40, 40)
    sprite[::2, 1::2] = sprite[1::2, ::2] = (40, 40, 230)
    src = tmp_path / "s.png"
    Image.fromarray(sprite).save(src)
    code, _, err = _run(capsys, "convert", str(src), str(tmp_path / "s.jpg"), "--colors", "2")  # exact: 2 colours
    assert code == 0, err
    ours = np.asarray(Image.open(tmp_path / "s.jpg").convert("RGB")).astype(int)
    Image.fromarray(sprite).save(tmp_path / "default.jpg")
    default = np.asarray(Image.open(tmp_path / "default.jpg").convert("RGB")).astype(int)
    ours_err, default_err = np.abs(ours - sprite).mean(), np.abs(default - sprite).mean()
    assert ours_err < 12 < 40 < default_err, (ours_err, default_err)


@pytest.mark.parametrize("n", ["0", "1", "257"])
def test_colors_out_of_range_are_worded_alike(tmp_path, capsys, n):
    src = tmp_path / "g.png"
    Image.fromarray(_gradient(8, 8)).save(src)
    code, _, err = _run(capsys, "convert", str(src), str(tmp_path / "o.png"), "--colors", n)
    assert code == 2 and f"expected 2..256 colours, got '{n}'" in err, err


@pytest.mark.parametrize("installed", [True, False])
def test_version_is_the_projects(capsys, monkeypatch, installed):
    import tomllib
    from importlib import metadata

    want = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    if not installed:  # the pack inside ComfyUI, run as python -m pixart_nodes from a checkout
        def missing(name):
            raise metadata.PackageNotFoundError(name)
        monkeypatch.setattr(metadata, "version", missing)
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"pixart {want}"
