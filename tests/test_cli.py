"""The ``pixart`` command end to end on temporary files."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixart_nodes import cli
from pixart_nodes.core import palette as pal
from pixart_nodes.core import imageio, pixelate, rgb565
from tests.support.cli import gradient as _gradient, run as _run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    rgba = np.dstack([_gradient()[::-1], np.full((32, 48), 255, np.uint8)])
    rgba[:, :8, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "b.png")
    return tmp_path


def test_convert_file_palette_dither_pixel_size(images, capsys):
    code, out, _ = _run(capsys, "convert", str(images / "a.png"), str(images / "o.png"),
                        "--palette", "pico-8", "--dither", "floyd-steinberg", "--pixel-size", "4")
    assert code == 0 and "o.png: 12x8" in out
    got = np.asarray(Image.open(images / "o.png").convert("RGB"))
    assert got.shape == (8, 12, 3)
    pico = {tuple(c) for c in pal.named_palette("pico-8").colors.tolist()}
    assert {tuple(c) for c in got.reshape(-1, 3).tolist()} <= pico
    # without dithering the output is exactly the pixelated image mapped to the nearest palette colour
    _run(capsys, "convert", str(images / "a.png"), str(images / "n.png"), "--palette", "pico-8", "--pixel-size", "4",
         "--distance", "rgb")
    small = pixelate.pixelate(_gradient(), pixel_size=4)
    colours = pal.named_palette("pico-8").colors.astype(int)
    nearest = colours[((small[:, :, None, :].astype(int) - colours) ** 2).sum(-1).argmin(-1)]
    assert np.array_equal(np.asarray(Image.open(images / "n.png").convert("RGB")), nearest)


def test_convert_folder_upscale_keeps_alpha(images, capsys):
    out_dir = images / "out"
    code, out, err = _run(capsys, "convert", str(images), str(out_dir), "--size", "12x8", "--method", "kcentroid",
                          "--colors", "4", "--upscale")
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]
    assert "2 of 2" in out and "convert" in err  # summary on stdout, tqdm bar on stderr
    b = np.asarray(Image.open(out_dir / "b.png"))
    assert b.shape == (32, 48, 4)
    assert np.all(b[:, :8, 3] == 0) and np.all(b[:, 8:, 3] == 255)
    assert len(np.unique(b[:, 8:, :3].reshape(-1, 3), axis=0)) <= 4
    assert np.array_equal(b[::4, ::4], b[1::4, 2::4])  # 4x4 blocks from the upscale


def test_convert_folder_with_bad_file_reports_it_and_exits_2(images, capsys):
    (images / "broken.png").write_bytes(b"not an image")
    code, _, err = _run(capsys, "-q", "convert", str(images), str(images / "out"), "--pixel-size", "2")
    assert code == 2
    assert "broken.png: not a readable image" in err
    assert (images / "out" / "a.png").exists() and (images / "out" / "b.png").exists()


def test_rgb565_file(images, capsys):
    code, out, _ = _run(capsys, "rgb565", str(images / "a.png"), str(images / "a.bin"), "--size", "240x240",
                        "--byte-order", "big", "--invert", "--mode", "crop")
    assert code == 0 and "115200 bytes" in out
    data = (images / "a.bin").read_bytes()
    expected = rgb565.to_rgb565(rgb565.fit(_gradient(), 240, 240, "crop"), invert=True)
    assert data == expected and len(data) == 115_200


def test_rgb565_folder_and_preview(images, capsys):
    code, _, _ = _run(capsys, "-q", "rgb565", str(images), str(images / "bins"), "--size", "24x16",
                      "--byte-order", "little", "--background", "#ff0000", "--resample", "nearest")
    assert code == 0
    assert sorted(p.name for p in (images / "bins").iterdir()) == ["a.bin", "b.bin"]
    code, _, _ = _run(capsys, "rgb565-preview", str(images / "bins" / "b.bin"), str(images / "b_prev.png"),
                      "--size", "24x16", "--byte-order", "little", "--scale", "2")
    assert code == 0
    prev = np.asarray(Image.open(images / "b_prev.png"))
    assert prev.shape == (32, 48, 3)
    assert np.all(prev[:, :8] == [255, 0, 0])  # transparent columns flattened onto the red background, full red as the panel shows it


def test_palette_hex_and_gpl(images, capsys):
    code, out, _ = _run(capsys, "palette", str(images / "a.png"), "--colors", "8")
    assert code == 0
    lines = out.split()
    assert len(lines) == 8 and all(len(x) == 6 and int(x, 16) >= 0 for x in lines)
    expected = pal.extract_palette(_gradient(), 8)
    assert ["#" + x for x in lines] == expected.hex()
    target = images / "p.gpl"
    code, _, _ = _run(capsys, "palette", str(images / "a.png"), "--colors", "4", "--method", "median-cut",
                      "--format", "gpl", "-o", str(target))
    assert code == 0
    loaded = pal.load_palette_file(target)  # the other engineer's reader accepts what we write
    assert np.array_equal(loaded.colors, pal.extract_palette(_gradient(), 4, method="median-cut").colors)


def test_palette_for_dithering_and_convert_extracts_for_its_dither(images, capsys):
    """``palette --for-dithering`` and ``convert --colors N`` with error diffusion take the spread palette that
    bench_extract measures; ``--damping`` reaches quantize; ordered dithering keeps the plain palette."""
    from pixart_nodes.core import quantize as qz

    code, out, _ = _run(capsys, "palette", str(images / "a.png"), "--colors", "8", "--for-dithering")
    spread = pal.extract_palette(_gradient(), 8, dither=True)
    assert code == 0 and ["#" + x for x in out.split()] == spread.hex() != pal.extract_palette(_gradient(), 8).hex()
    code, _, _ = _run(capsys, "convert", str(images / "a.png"), str(images / "fs.png"), "--colors", "8",
                      "--dither", "floyd-steinberg", "--damping")
    assert code == 0
    want = qz.quantize(_gradient(), spread, dither="floyd-steinberg", damping=True).image
    assert np.array_equal(np.asarray(Image.open(images / "fs.png").convert("RGB")), want)
    assert not np.array_equal(want, qz.quantize(_gradient(), spread, dither="floyd-steinberg").image)
    code, _, _ = _run(capsys, "convert", str(images / "a.png"), str(images / "bayer.png"), "--colors", "8",
                      "--dither", "bayer-4x4")
    plain = qz.quantize(_gradient(), pal.extract_palette(_gradient(), 8), dither="bayer-4x4").image
    assert code == 0 and np.array_equal(np.asarray(Image.open(images / "bayer.png").convert("RGB")), plain)


def test_convert_uses_a_written_palette_file(images, capsys):
    (images / "bw.hex").write_text("000000\nffffff\n")
    code, _, _ = _run(capsys, "convert", str(images / "a.png"), str(images / "bw.png"), "--palette",
                      str(images / "bw.hex"))
    assert code == 0
    got = np.asarray(Image.open(images / "bw.png").convert("RGB"))
    assert set(np.unique(got)) <= {0, 255} and got.shape == (32, 48, 3)


def test_aleaart_seed_and_params(capsys):
    from pixart_nodes.core import aleaart

    seed = "0x" + "ab" * 32
    code, out, _ = _run(capsys, "aleaart", "--seed", seed)
    assert code == 0
    doc = json.loads(out)
    params = aleaart.derive_params(seed)
    assert doc["params"] == params.to_dict()
    assert doc["prompt"] == aleaart.resolve(params)["prompt"]
    code, out2, _ = _run(capsys, "aleaart", "--params", json.dumps(params.to_dict()), "--compact")
    assert code == 0 and json.loads(out2) == doc and out2.count("\n") == 1


@pytest.mark.parametrize("argv, needle", [
    (["convert", "{d}/missing.png", "{d}/o.png", "--pixel-size", "2"], "missing.png: no such file"),
    (["convert", "{d}/junk.png", "{d}/o.png", "--pixel-size", "2"], "junk.png: not a readable image"),
    # a decompression bomb is no OSError: it ended the command with a traceback
    (["convert", "{d}/bomb.png", "{d}/o.png", "--pixel-size", "2"], "bomb.png: too many pixels to read"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "{d}/nope.gpl"], "nope.gpl: no such palette file"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "my palettes/x.hex"], "no such palette file"),
    (["convert", "{d}/a.png", "{d}/o.png"], "nothing to do"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "no-such-palette"], "argument --palette: unknown palette"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "#12345g"], "argument --palette"),
    (["convert", "{d}/a.png", "{d}/o.png", "--pixel-size", "0"], "argument --pixel-size"),
    (["convert", "{d}/a.png", "{d}/o.png", "--size", "100x100"], "larger than the image"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "pico-8", "--dither", "wobbly"], "--dither must be one of"),
    (["convert", "{d}/a.png", "{d}/o.png", "--palette", "pico-8", "--colors", "4"], "--palette and --colors"),
    (["convert", "{d}/a.png", "{d}/o.png", "--pixel-size", "2", "--method", "bicubic"], "argument --method"),
    (["rgb565", "{d}/a.png", "{d}/o.bin", "--size", "240"], "argument --size"),
    (["rgb565", "{d}/a.png", "{d}/o.bin", "--byte-order", "middle"], "argument --byte-order"),
    (["rgb565", "{d}/a.png", "{d}/o.bin", "--background", "blue"], "argument --background"),
    (["rgb565-preview", "{d}/a.png", "{d}/o.png"], "a.png: data: expected 115200 bytes"),
    # read only one byte past the frame the size implies: a device or a huge file is not read whole
    (["rgb565-preview", "{d}/f.bin", "{d}/o.png", "--size", "2x2"],
     "f.bin: data: expected 8 bytes for 2x2 RGB565, got more"),
    (["palette", "{d}/junk.png"], "junk.png: not a readable image"),
    (["palette", "{d}/a.png", "--colors", "1"], "argument --colors: expected 2..256 colours"),
    (["convert", "{d}/a.png", "{d}/o.png", "--colors", "300"], "argument --colors: expected 2..256 colours"),
    (["aleaart", "--seed", "0x1234"], "seed: expected 32 bytes"),
    (["aleaart", "--params", "{not json"], "--params: not valid JSON"),
    (["aleaart", "--params", "[" * 50_000], "--params: JSON nested too deeply"),
    (["aleaart", "--params", "@{d}/deep.json"], "--params: JSON nested too deeply"),
    (["aleaart", "--params", "@{d}/huge.json"], "huge.json: larger than 1024 KiB"),
    # the GIF stores 16-bit numbers: these were OverflowError tracebacks
    (["convert", "{d}", "{d}/o.gif", "--palette", "pico-8", "--loop", "-1"],
     "argument --loop: expected an integer 0..65535"),
    (["convert", "{d}", "{d}/o.gif", "--palette", "pico-8", "--loop", "70000"], "argument --loop"),
    (["convert", "{d}", "{d}/o.gif", "--palette", "pico-8", "--frame-ms", "100000000"], "argument --frame-ms"),
    (["rgb565-preview", "{d}/f.bin", "{d}/o.png", "--size", "4x4", "--scale", "100000"],
     "--scale 100000: 4x4 enlarged 100000 times would be 400000x400000"),  # was a MemoryError traceback
    (["aleaart"], "one of the arguments --seed --params is required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_clear_line(images, capsys, argv, needle):
    (images / "junk.png").write_bytes(b"\x89PNG but not really")
    (images / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (images / "huge.json").write_bytes(b" " * (2 << 20))
    (images / "f.bin").write_bytes(bytes(4 * 4 * 2))
    # a PNG header that says 20000x20000: Pillow refuses it on opening (more than twice its pixel limit)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    (images / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) +
                                      chunk(b"IEND", b""))
    argv = [a.replace("{d}", str(images)) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert lines[0].startswith("pixart")
    assert "Traceback" not in err


def test_python_dash_m_entry_point(images):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "custom_nodes") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pixart_nodes", "rgb565", str(images / "a.png"),
                           str(images / "m.bin"), "--size", "8x8"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (images / "m.bin").stat().st_size == 128
    bad = subprocess.run([sys.executable, "-m", "pixart_nodes", "rgb565", str(images / "none.png"), "x.bin"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "none.png: no such file" in bad.stderr


# --- hostile input, end to end -----------------------------------------------------------------------------------

def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_long_hex_list_is_a_palette_not_a_file_name(tmp_path, capsys):
    # 64 colours make one argument over the 255 bytes a file name may have: is_file() raised ENAMETOOLONG, which
    # came back as "[Errno 36] File name too long: '#000000,...'" instead of the palette
    colours = [f"#{i * 4:02x}{i * 4:02x}{i * 4:02x}" for i in range(64)]
    code, out, err = _run(capsys, "palette-file", ",".join(colours))
    assert code == 0, err
    assert ["#" + x for x in out.split()] == colours


def test_folder_errors_name_the_file_they_are_about(images, capsys):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(images / "clear.png")  # nothing opaque to extract from
    code, _, err = _run(capsys, "-q", "convert", str(images), str(images / "out"), "--colors", "4",
                        "--no-shared-palette")
    assert code == 2
    assert f"pixart convert: error: {images / 'clear.png'}: image has no opaque pixels" in err, err
    assert sorted(p.name for p in (images / "out").iterdir()) == ["a.png", "b.png"]


def test_folder_inputs_that_would_share_an_output_are_refused(images, capsys):
    Image.fromarray(_gradient()).save(images / "a.jpg")  # a.jpg and a.png would both be written as out/a.png
    code, _, err = _run(capsys, "-q", "convert", str(images), str(images / "out"), "--pixel-size", "2")
    line = _one_error_line(err)
    assert code == 2 and "a.jpg" in line and "a.png" in line and "same output" in line, line
    assert not (images / "out").exists() or not any((images / "out").iterdir())


def test_an_animation_written_into_its_own_folder_is_not_one_of_its_frames(images, capsys):
    for _ in range(2):  # the second run found the first run's GIF in the folder and added it as a frame
        code, out, err = _run(capsys, "convert", str(images), str(images / "anim.gif"), "--palette", "pico-8")
        assert code == 0, err
        assert "2 frames" in out
        with Image.open(images / "anim.gif") as im:
            assert im.n_frames == 2


@pytest.mark.parametrize("name, needle", [
    ("o.xyz", "o.xyz: cannot write"),  # was "unknown file extension: .xyz", no file named
    ("noext", "noext: cannot write"),  # was "unknown file extension: " (an empty name)
    ("o.gif", "o.gif: 70000x1 is too large for a GIF"),  # a struct.error traceback
    ("o.tga", "o.tga: 70000x1 is too large for TGA"),  # a struct.error traceback
    ("o.jpg", "o.jpg: 70000x1 is too large for JPEG"),  # libjpeg's own stderr line, then "broken data stream"
    ("o.webp", "o.webp: 70000x1 is too large for WEBP"),  # "encoding error 5", no file named
])
def test_output_files_that_cannot_be_written_are_named(tmp_path, capsys, name, needle):
    Image.new("RGB", (70000, 1), (10, 20, 30)).save(tmp_path / "wide.png")
    code, _, err = _run(capsys, "convert", str(tmp_path / "wide.png"), str(tmp_path / name), "--palette", "pico-8")
    line = _one_error_line(err)
    assert code == 2 and line.startswith("pixart convert: error: ") and needle in line, line
    assert not (tmp_path / name).exists()


def test_a_failed_write_leaves_an_existing_output_as_it_was(tmp_path, capsys):
    # Pillow opens the file for writing before encoding: a failure left the old output (or the input itself,
    # when OUT is IN) truncated to 0 bytes
    Image.new("RGB", (70000, 1), (10, 20, 30)).save(tmp_path / "wide.png")
    Image.fromarray(_gradient()).save(tmp_path / "old.gif")
    before = (tmp_path / "old.gif").read_bytes()
    code, _, err = _run(capsys, "convert", str(tmp_path / "wide.png"), str(tmp_path / "old.gif"), "--pixel-size", "1")
    assert code == 2 and "old.gif" in _one_error_line(err)
    assert (tmp_path / "old.gif").read_bytes() == before
    # a write that succeeds replaces it whole, from a file beside it that does not stay
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "old.gif"), str(tmp_path / "old.gif"),
                        "--pixel-size", "2")
    assert code == 0, err
    assert Image.open(tmp_path / "old.gif").size == (_gradient().shape[1] // 2, _gradient().shape[0] // 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.gif", "wide.png"]


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path, capsys):
    # a 16-bit grey PNG opens as I;16: Pillow's convert clips every value over 255 to white (all but one of the 256 values of this ramp)
    ramp = (np.arange(256 * 4, dtype=np.uint32).reshape(4, 256) % 256 * 257).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp).save(tmp_path / "g16t.png", transparency=0)  # a tRNS grey value: alpha kept
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "g16.png"), str(tmp_path / "o.png"),
                        "--pixel-size", "1")
    assert code == 0, err
    got = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    assert np.array_equal(got[..., 0], (ramp >> 8).astype(np.uint8)) and (got[..., 0] == got[..., 2]).all()
    code, _, err = _run(capsys, "-q", "convert", str(tmp_path / "g16t.png"), str(tmp_path / "t.png"),
                        "--pixel-size", "1")
    assert code == 0, err
    got = np.asarray(Image.open(tmp_path / "t.png"))
    assert got.shape == (4, 256, 4) and np.array_equal(got[..., 3] == 0, ramp == 0)
    assert np.array_equal(got[..., 0][ramp != 0], (ramp >> 8).astype(np.uint8)[ramp != 0])
    # a 32-bit TIFF's I has no declared range: values of 0..255 read as they are (not as the top of 16 bits: black)
    Image.fromarray(ramp.astype(np.int32) >> 8).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    got = imageio.read_image(tmp_path / "i32.tif")
    assert np.array_equal(got[..., 0], (ramp >> 8).astype(np.uint8))


def test_float_tiffs_are_read_as_float_pixel_data(tmp_path):
    # a 32-bit float TIFF (mode F) holds 0.0-1.0: Pillow's convert rounded it to 0 and 1, a picture near black
    ramp = np.arange(256, dtype=np.float32).reshape(1, 256) / 255
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    got = imageio.read_image(tmp_path / "f.tif")
    assert np.array_equal(got[0, :, 0], np.arange(256)) and (got[..., 0] == got[..., 2]).all()
    # a highlight a little past 1 is still 0-1 data; values past 2 are 0-255 already; NaN black, infinities the ends
    Image.fromarray(np.array([[0.0, 0.5, 1.0001, np.inf]], dtype=np.float32), "F").save(tmp_path / "h.tif")
    assert list(imageio.read_image(tmp_path / "h.tif")[0, :, 0]) == [0, 128, 255, 255]
    Image.fromarray(np.array([[0.0, 127.6, 255.0, 300.0, np.nan, -np.inf]], dtype=np.float32), "F").save(
        tmp_path / "w.tif")
    assert list(imageio.read_image(tmp_path / "w.tif")[0, :, 0]) == [0, 128, 255, 255, 0, 0]


def test_an_image_over_the_pixel_limit_is_one_line_not_a_pillow_warning(tmp_path, capsys, recwarn):
    from tests.support.imaging import claimed_png

    # 10000x10000 is between Pillow's warning (89M pixels) and its error (179M): Pillow printed its warning with
    # its own source line, then the image was decoded (or failed as truncated)
    (tmp_path / "big.png").write_bytes(claimed_png(10000, 10000))
    code, _, err = _run(capsys, "convert", str(tmp_path / "big.png"), str(tmp_path / "o.png"), "--pixel-size", "2")
    line = _one_error_line(err)
    assert code == 2 and f"{tmp_path / 'big.png'}: too many pixels to read (10000x10000" in line, line
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_cleanup_with_every_step_off_writes_half_transparent_pixels_as_they_came(tmp_path, capsys):
    # alpha < 128 came out as (0, 0, 0, 0), and the summary said "nothing to clean"
    img = np.empty((8, 8, 4), np.uint8)
    img[...] = (200, 50, 50, 255)
    img[2:6, 2:6, 3] = 100
    Image.fromarray(img).save(tmp_path / "semi.png")
    for extra in (["--merge", "0", "--no-isolated", "--no-jaggies"], []):
        code, out, err = _run(capsys, "cleanup", tmp_path / "semi.png", tmp_path / "o.png", *extra)
        assert code == 0 and out.strip().endswith("nothing to clean"), err
        assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), img), extra


@pytest.mark.parametrize("argv, needle", [
    (["cleanup", "{d}", "{d}/o/cl.png"], "o/cl.png: IN is a folder, so OUT must be a folder, not a .png file"),
    (["convert", "{d}", "{d}/o/cv.jpg", "--pixel-size", "4"], "only OUT.gif takes a folder"),
    (["rgb565", "{d}", "{d}/o/x.bin"], "o/x.bin: IN is a folder"),
    (["snap", "{d}", "{d}/o/s.webp"], "o/s.webp: IN is a folder"),
])
def test_a_folder_into_an_image_name_is_refused(images, capsys, argv, needle):
    # a folder named cl.png was made and filled with PNGs, and nothing said so
    code, _, err = _run(capsys, *(a.replace("{d}", str(images)) for a in argv))
    line = _one_error_line(err)
    assert code == 2 and needle in line, line
    assert not (images / "o").exists()


def test_a_trailing_separator_on_out_names_a_folder(images, capsys):
    # Path() drops it: "o/newdir2/" was written as the file o/newdir2, "o/new.png/" as the file o/new.png, and
    # "o/newdir/" failed with "cannot write a name without a suffix"
    o = images / "o"
    for argv, made in ((["rgb565", images / "a.png", f"{o}/newdir2/", "--size", "8x8"], o / "newdir2" / "a.bin"),
                       (["convert", images / "a.png", f"{o}/new.png/", "--pixel-size", "4"], o / "new.png" / "a.png"),
                       (["convert", images / "a.png", f"{o}/newdir/", "--pixel-size", "4"], o / "newdir" / "a.png"),
                       (["rgb565-preview", o / "newdir2" / "a.bin", f"{o}/pv/", "--size", "8x8"], o / "pv" / "a.png"),
                       (["cleanup", images, f"{o}/cl.png/"], o / "cl.png" / "b.png"),
                       (["convert", images, f"{o}/anim.gif/", "--colors", "4"], o / "anim.gif" / "b.png")):
        code, _, err = _run(capsys, "-q", *argv)
        assert code == 0 and made.is_file(), (argv, err)
    (o / "file").write_bytes(b"")
    for argv, needle in ((["convert", images / "a.png", f"{o}/file/", "--pixel-size", "4"], "file/: not a folder"),
                         (["palette", images / "a.png", "-o", f"{o}/p.gpl/"], "-o names a palette file, not a folder"),
                         (["snap", images / "a.png", o / "s.png", "--json", f"{o}/g.json/"], "names a file to write")):
        code, _, err = _run(capsys, *argv)
        line = _one_error_line(err)
        assert code == 2 and needle in line, line
    assert not (o / "p.gpl").exists() and not (o / "g.json").exists()


def test_outputs_named_after_their_inputs_never_replace_them(images, capsys):
    # "cleanup in/a.png in/" (and a folder into itself) wrote a.png over the input, exit 0
    before = (images / "a.png").read_bytes()
    for argv in (["cleanup", images / "a.png", f"{images}/"], ["cleanup", images, images],
                 ["snap", images / "a.png", images]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "would replace the input" in _one_error_line(err), argv
    assert (images / "a.png").read_bytes() == before
    code, _, _ = _run(capsys, "-q", "cleanup", images / "a.png", images / "a.png")  # asked for by name: in place
    assert code == 0


@pytest.mark.parametrize("argv", [
    ["convert", "{d}/a.png", "{d}/o.png", "--pixel-size", "08"],
    ["convert", "{d}/a.png", "{d}/o.png", "--colors", "08"],
    ["convert", "{d}", "{d}/o.gif", "--colors", "4", "--frame-ms", "0100"],
    ["palettes", "--colors", "04"],
])
def test_integer_options_with_a_leading_zero_are_decimal(images, capsys, argv):
    # int(text, 0) refused "08" ("expected a positive integer") as octal syntax
    code, _, err = _run(capsys, "-q", *(a.replace("{d}", str(images)) for a in argv))
    assert code == 0, err


def test_integer_options_are_plain_decimal_only(images, capsys):
    code, _, err = _run(capsys, "-q", "convert", images / "a.png", images / "o.png", "--pixel-size", "08")
    assert code == 0 and Image.open(images / "o.png").size == (6, 4), err
    for text in ("0x4", "0b11", "0o7", "1_0", "+4", "٤"):  # int(text, 0) took the first four
        with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer"):
            cli._positive_int(text)
    assert cli._int_in(1, 10)("010") == 10 and cli._int_in(0, 5)(" 0 ") == 0
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer 1..10, got '0xa'"):
        cli._int_in(1, 10)("0xa")
    # --seed was int(): "1_0" and "+4" passed, a negative one reached numpy
    for argv in (["convert", images / "a.png", images / "s.png", "--colors", "4"], ["palette", images / "a.png"]):
        code, _, err = _run(capsys, *argv, "--seed", "1_0")
        assert code == 2 and "argument --seed: expected an integer" in _one_error_line(err), (argv, err)


def test_error_lines_name_their_file_once_and_dither_names_ignore_case(images, capsys):
    (images / "garbage.png").write_bytes(b"not an image")
    code, _, err = _run(capsys, "convert", images, images / "o.gif", "--palette", "pico-8")
    line = _one_error_line(err)
    bad = str(images / "garbage.png")
    assert code == 2 and line.startswith(f"pixart convert: error: {bad}: not a readable image"), line
    (images / "garbage.png").unlink()
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(images / "clear.png")
    code, _, err = _run(capsys, "palette", images / "clear.png")
    line = _one_error_line(err)
    assert code == 2 and f"{images / 'clear.png'}: image has no opaque pixels" in line, line
    for dither, name in (("FLOYD-STEINBERG", "upper.png"), ("floyd-steinberg", "lower.png")):
        code, _, err = _run(capsys, "-q", "convert", images / "a.png", images / name, "--palette", "pico-8",
                            "--dither", dither)
        assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(images / "upper.png")), np.asarray(Image.open(images / "lower.png")))
