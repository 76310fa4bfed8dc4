"""The ``pixart`` command given what users actually feed it: outputs that are links, pipes or the input itself,
formats Pillow writes differently from what was asked, animated inputs, odd palette names and files, names that
are not UTF-8. Each test failed before the change it comes with."""
from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixart_nodes.core import palette as pal
from pixart_nodes.core import palette_files
from tests.support.cli import gradient as _gradient, run as _run
from tests.support.imaging import damaged_exif_jpeg

ROOT = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name != "posix", reason="FIFOs, /dev/fd and byte file names are POSIX")


def _error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def png(tmp_path: Path) -> Path:
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    return tmp_path / "a.png"


# --- where the output goes -----------------------------------------------------------------------------------------

def test_a_symlinked_output_is_written_through_and_stays_a_link(tmp_path, png, capsys):
    # the file was written beside the link and moved over it: the link became a plain file, the file it named kept
    # its old contents
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "frame.bin").write_bytes(b"old")
    (tmp_path / "frame.bin").symlink_to(tmp_path / "real" / "frame.bin")
    code, _, err = _run(capsys, "-q", "rgb565", png, tmp_path / "frame.bin", "--size", "2x2")
    assert code == 0, err
    assert (tmp_path / "frame.bin").is_symlink()
    assert len((tmp_path / "real" / "frame.bin").read_bytes()) == 8


@POSIX
def test_a_fifo_output_is_written_to_not_replaced(tmp_path, png, capsys):
    # `pixart rgb565 in.png /dev/stdout | nc pico 80`: the frame went into a plain file put in the pipe's place
    # (as root, /dev/stdout and /dev/null themselves were replaced); without root it failed naming a .part file
    fifo = tmp_path / "lcd.bin"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        code, _, err = _run(capsys, "-q", "rgb565", png, fifo, "--size", "2x2")
        assert code == 0, err
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert len(os.read(reader, 100)) == 8
    finally:
        os.close(reader)


def test_write_errors_name_the_output_not_a_temporary_file(tmp_path, png, capsys):
    # "a.png: [Errno 21] Is a directory: '.../.pal.hex.1234.part' -> '.../pal.hex'": the input was blamed and a
    # file the user never named was shown
    (tmp_path / "pal.hex").mkdir()
    code, _, err = _run(capsys, "palette-file", "pico-8", "-o", tmp_path / "pal.hex")
    line = _error(err)
    assert code == 2 and line == f"pixart palette-file: error: {tmp_path / 'pal.hex'}: cannot write (Is a directory)"
    (tmp_path / "file").write_text("")
    code, _, err = _run(capsys, "rgb565", png, tmp_path / "file" / "x.bin")
    line = _error(err)
    assert code == 2 and line == f"pixart rgb565: error: {tmp_path / 'file' / 'x.bin'}: cannot write (Not a directory)"
    assert not [p for p in tmp_path.rglob("*.part")]


@pytest.mark.parametrize("name", ["o.ico", "o.icns", "o.pdf", "o.eps"])
def test_only_formats_the_command_reads_back_are_written(tmp_path, png, capsys, name):
    # Pillow wrote these: the ICO shrunk to 16x11 (icon sizes), the ICNS scaled up to 1024x1024, the PDF and EPS
    # files no command here reads back
    code, _, err = _run(capsys, "convert", png, tmp_path / name, "--pixel-size", "2")
    line = _error(err)
    assert code == 2 and f"{tmp_path / name}: cannot write" in line, line
    assert not (tmp_path / name).exists()


def test_rgb565_does_not_write_raw_frames_over_an_image(tmp_path, png, capsys):
    # `pixart rgb565 a.png a.png` replaced the picture with 115,200 raw bytes, and `rgb565 a.png b.png` made a
    # ".png" no viewer opens
    before = png.read_bytes()
    code, _, err = _run(capsys, "rgb565", png, png)
    line = _error(err)
    assert code == 2 and str(png) in line and ".bin" in line, line
    assert png.read_bytes() == before
    code, _, err = _run(capsys, "rgb565", png, tmp_path / "b.PNG")
    assert code == 2 and "b.PNG" in _error(err) and not (tmp_path / "b.PNG").exists()
    (tmp_path / "pic").write_bytes(before)  # an image without a suffix, written onto itself
    code, _, err = _run(capsys, "rgb565", tmp_path / "pic", tmp_path / "pic")
    assert code == 2 and "is IN" in _error(err)
    assert (tmp_path / "pic").read_bytes() == before


def test_a_palette_is_not_written_over_the_image_it_came_from(tmp_path, png, capsys):
    before = png.read_bytes()
    code, _, err = _run(capsys, "palette", png, "-o", png)
    assert code == 2 and "is IMAGE" in _error(err)
    assert png.read_bytes() == before


def test_empty_paths_are_refused_not_read_as_the_current_folder(tmp_path, png, capsys, monkeypatch):
    # Path("") is ".": an empty OUT (an unset "$OUT") wrote a.png into the working folder, an empty IN converted
    # every image there
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    Image.fromarray(_gradient()).save(cwd / "keep.png")
    monkeypatch.chdir(cwd)
    for argv in (["convert", png, "", "--pixel-size", "2"], ["convert", "", tmp_path / "out", "--pixel-size", "2"],
                 ["snap", png, tmp_path / "s.png", "--json", ""], ["palette", png, "-o", ""],
                 ["rgb565", png, ""], ["cleanup", "", tmp_path / "c.png"]):
        code, _, err = _run(capsys, *argv)
        line = _error(err)
        assert code == 2 and "empty path" in line, (argv, line)
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.png"]
    assert not (tmp_path / "out").exists()


def test_snap_json_report_is_written_like_the_images(tmp_path, png, capsys):
    # the report went through write_text: a missing folder failed after the image was written (images make
    # theirs), and --json IN wrote the report over the input picture
    code, _, err = _run(capsys, "-q", "snap", png, tmp_path / "s.png", "--json", tmp_path / "new" / "grid.json")
    assert code == 0, err
    assert json.loads((tmp_path / "new" / "grid.json").read_text())["detected"] is False
    before = png.read_bytes()
    code, _, err = _run(capsys, "snap", png, tmp_path / "s.png", "--json", png)
    assert code == 2 and "--json" in _error(err)
    assert png.read_bytes() == before


# --- what comes in -------------------------------------------------------------------------------------------------

def _frames() -> list[Image.Image]:
    return [Image.fromarray(np.roll(_gradient(), 7 * i, axis=1)) for i in range(3)]


@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "anim.webp", "pages.tif"])
def test_an_animated_input_says_only_its_first_frame_is_used(tmp_path, capsys, name):
    # every frame after the first was dropped without a word: a 3-frame GIF in, a still GIF out
    first, *rest = _frames()
    first.save(tmp_path / name, save_all=True, append_images=rest, duration=100)
    code, out, err = _run(capsys, "convert", tmp_path / name, tmp_path / "o.png", "--pixel-size", "2")
    assert code == 0 and "o.png: 24x16" in out
    assert _error(err) == f"pixart convert: warning: {tmp_path / name}: 3 frames; only the first is read"
    # a still image says nothing
    first.save(tmp_path / "still.gif")
    code, _, err = _run(capsys, "palette", tmp_path / "still.gif", "--colors", "2")
    assert code == 0 and err == ""


def test_a_gif_of_more_than_256_colours_says_they_were_reduced(tmp_path, capsys):
    # Pillow reduced a picture of thousands of colours to a GIF's 256 by median cut without a word
    rng = np.random.default_rng(3)
    many = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(many).save(tmp_path / "many.png")
    code, out, err = _run(capsys, "convert", tmp_path / "many.png", tmp_path / "o.gif", "--pixel-size", "1")
    colours = len(np.unique(many.reshape(-1, 3), axis=0))
    assert code == 0 and "o.gif: 40x40" in out and colours > 256
    assert _error(err) == (f"pixart convert: warning: {tmp_path / 'o.gif'}: more than 256 colours; a GIF holds "
                           f"256, here chosen by Pillow's median cut (pixart convert --colors 256 extracts them "
                           f"better)")
    # 256 colours or fewer fit: nothing said, and the GIF has them all
    few = np.repeat(np.arange(256, dtype=np.uint8), 3).reshape(16, 16, 3)
    Image.fromarray(few).save(tmp_path / "few.png")
    code, _, err = _run(capsys, "convert", tmp_path / "few.png", tmp_path / "f.gif", "--pixel-size", "1")
    assert code == 0 and err == ""
    assert len(np.unique(np.asarray(Image.open(tmp_path / "f.gif").convert("RGB")).reshape(-1, 3), axis=0)) == 256


def test_snap_cell_size_is_bounded_by_the_image(tmp_path, capsys):
    # --cell-size 2x1e12 sized a smoothing kernel by the cell: a MemoryError traceback (and smaller values took
    # gigabytes); 1000 on a 60-pixel image made one cell of the whole image, 1e300 printed a 300-digit grid
    spr = np.random.default_rng(0).integers(0, 255, (12, 10, 3)).astype(np.uint8)
    Image.fromarray(np.repeat(np.repeat(spr, 6, 0), 6, 1)).save(tmp_path / "art.png")
    for size, field in (("2x1e12", "cell_height"), ("1000", "cell_width"), ("1e300", "cell_width")):
        code, _, err = _run(capsys, "snap", tmp_path / "art.png", tmp_path / "s.png", "--cell-size", size)
        line = _error(err)
        assert code == 2 and f"{field}:" in line and "larger than the image" in line, line
    code, out, err = _run(capsys, "snap", tmp_path / "art.png", tmp_path / "s.png", "--cell-size", "6")
    assert code == 0 and "-> 10x12" in out, err


@pytest.mark.parametrize("name, want", [("pico 8", "pico-8"), ("Sweetie 16", "sweetie-16"),
                                        ("endesga  32", "endesga-32"), ("c64", "commodore64")])
def test_palette_names_with_spaces_are_names(capsys, name, want):
    # a space sent the name to the hex parser: "colour 1 'pico' is not a hex colour"
    code, out, err = _run(capsys, "palette-file", name)
    assert code == 0, err
    assert out.split() == [c[1:] for c in pal.named_palette(want).hex()]


def test_hex_lists_with_spaces_stay_hex_lists_and_bad_names_suggest_names(capsys):
    code, out, _ = _run(capsys, "palette-file", "fab ace 000")
    assert code == 0 and out.split() == ["ffaabb", "aaccee", "000000"]
    code, _, err = _run(capsys, "palette-file", "sweety 16")
    assert code == 2 and "unknown palette 'sweety 16'; did you mean sweetie-16" in _error(err)


def test_a_16_bit_grey_swatch_strip_is_scaled_not_clipped(tmp_path):
    # Pillow's convert clips 16-bit grey to 255: every swatch of such a strip read as white
    Image.fromarray(np.array([[0, 20000, 40000, 65535]], np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    got = palette_files.read_palette(tmp_path / "g16.png")
    assert got.hex() == ["#000000", "#4e4e4e", "#9c9c9c", "#ffffff"]


@pytest.mark.parametrize("line", ["\u0661\u0662 0 0", "1_0 0 0", "+5 0 0", "\uff11 2 3"])
def test_palette_file_numbers_are_ascii_decimals(tmp_path, line):
    # int() took other scripts' digits, signs and underscores: "١٢ 0 0" was #0c0000, "1_0" was 10
    (tmp_path / "p.gpl").write_text(f"GIMP Palette\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected 'R G B"):
        palette_files.read_palette(tmp_path / "p.gpl")
    (tmp_path / "p.pal").write_text(f"JASC-PAL\n0100\n1\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 4: expected 'R G B'"):
        palette_files.read_palette(tmp_path / "p.pal")
    (tmp_path / "n.pal").write_text("JASC-PAL\n0100\n\u0661\n1 2 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: expected the number of colours"):
        palette_files.read_palette(tmp_path / "n.pal")


@POSIX
@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="needs /dev/fd")
def test_a_palette_from_a_pipe(tmp_path, capsys):
    # `--palette <(curl ...)` names /dev/fd/63, a pipe: "no such palette file"
    def pipe(data: bytes) -> str:
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        return f"/dev/fd/{r}"

    code, out, err = _run(capsys, "palette-file", pipe(b"ff0000\n00ff00\n"))
    assert code == 0 and out.split() == ["ff0000", "00ff00"], err
    # a PNG strip through a pipe has no suffix to say it is one: its first bytes do
    Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)).save(tmp_path / "s.png")
    code, out, err = _run(capsys, "palette-file", pipe((tmp_path / "s.png").read_bytes()))
    assert code == 0 and out.split() == ["ff0000", "0000ff"], err
    code, _, err = _run(capsys, "palette-file", tmp_path)
    assert code == 2 and "is a folder" in _error(err)


def test_a_params_file_with_a_bom_is_read(tmp_path, capsys):
    # Notepad's UTF-8 starts with a BOM: "not valid JSON (Unexpected UTF-8 BOM ...)"
    code, out, _ = _run(capsys, "aleaart", "--seed", "0x" + "ab" * 32, "--compact")
    params = json.loads(out)["params"]
    (tmp_path / "p.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(params).encode())
    code, out2, err = _run(capsys, "aleaart", "--params", f"@{tmp_path / 'p.json'}", "--compact")
    assert code == 0, err
    assert out2 == out


# --- names that are not UTF-8 --------------------------------------------------------------------------------------

@POSIX
def test_a_palette_named_after_a_non_utf8_file(tmp_path, capsys):
    # the name came from the file's stem with a lone surrogate: "'utf-8' codec can't encode character '\udcff'"
    name = os.fsdecode(b"\xff.png")
    Image.fromarray(_gradient()).save(tmp_path / name)
    code, out, err = _run(capsys, "palette", tmp_path / name, "--colors", "2", "--format", "gpl")
    assert code == 0, err
    assert "Name: \ufffd\n" in out
    code, _, err = _run(capsys, "palette", tmp_path / name, "--colors", "2", "-o", tmp_path / "p.txt")
    assert code == 0, err


@POSIX
def test_non_utf8_file_names_on_a_strict_stdout(tmp_path):
    # a UTF-8 locale whose stdout is strict (not Python's UTF-8 mode): the file was written, then printing its
    # name failed and the command ended with exit 2 and a codec error
    src = os.fsencode(tmp_path) + b"/\xff.png"
    Image.fromarray(_gradient()).save(os.fsdecode(src))
    (tmp_path / "out").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "custom_nodes"), PYTHONIOENCODING="utf-8:strict")
    proc = subprocess.run([sys.executable, "-m", "pixart_nodes", "convert", src, os.fsencode(tmp_path / "out"),
                           "--pixel-size", "2"], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert b"24x16" in proc.stdout
    assert (tmp_path / "out" / os.fsdecode(b"\xff.png")).exists()


def test_webp_output_keeps_the_palette(tmp_path, capsys):
    # Pillow's WebP is lossy unless asked: mapped to PICO-8's 16 colours, the file held 898 colours, none of them
    # PICO-8's (a transparent area kept its alpha, its neighbours did not keep their colours either)
    rgba = np.dstack([_gradient(), np.full((32, 48), 255, np.uint8)])
    rgba[:, :8, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "b.png")
    pico = {tuple(c) for c in pal.named_palette("pico-8").colors.tolist()}
    for name in ("a.png", "b.png"):
        if name == "a.png":
            Image.fromarray(_gradient()).save(tmp_path / name)
        code, _, err = _run(capsys, "-q", "convert", tmp_path / name, tmp_path / "o.webp", "--palette", "pico-8")
        assert code == 0, err
        got = np.asarray(Image.open(tmp_path / "o.webp").convert("RGBA"))
        opaque = got[..., 3] == 255
        assert {tuple(c) for c in got[opaque][:, :3].tolist()} <= pico
        assert np.array_equal(opaque, np.asarray(Image.open(tmp_path / name).convert("RGBA"))[..., 3] == 255)


def test_a_cut_short_animation_still_gives_its_first_frame(tmp_path, capsys):
    # counting the frames of a GIF cut inside its second frame raised IndexError from Pillow: the first frame, which
    # reads, must still come out, with the warning
    first, *rest = _frames()
    first.save(tmp_path / "anim.gif", save_all=True, append_images=rest, duration=100)
    data = (tmp_path / "anim.gif").read_bytes()
    seen = set()
    for cut in range(len(data) // 4, len(data), 7):
        (tmp_path / "cut.gif").write_bytes(data[:cut])
        code, _, err = _run(capsys, "-q", "convert", tmp_path / "cut.gif", tmp_path / "o.png", "--pixel-size", "2")
        line = _error(err)
        assert code in (0, 2), line
        assert ("warning" in line) == (code == 0), line
        seen.add(code)
    assert 0 in seen


def test_a_damaged_later_page_still_gives_the_first(tmp_path, capsys):
    # counting the pages of a TIFF whose second page has no width raised TypeError ("Missing dimensions")
    first, *rest = _frames()
    first.save(tmp_path / "pages.tif", save_all=True, append_images=rest)
    data = bytearray((tmp_path / "pages.tif").read_bytes())
    end = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(end + "I", data, 4)[0]
    ifd = struct.unpack_from(end + "I", data, ifd + 2 + 12 * struct.unpack_from(end + "H", data, ifd)[0])[0]
    for n in range(struct.unpack_from(end + "H", data, ifd)[0]):
        if struct.unpack_from(end + "H", data, ifd + 2 + 12 * n)[0] == 256:  # ImageWidth: renamed away
            struct.pack_into(end + "H", data, ifd + 2 + 12 * n, 65000)
    (tmp_path / "pages.tif").write_bytes(bytes(data))
    code, out, err = _run(capsys, "convert", tmp_path / "pages.tif", tmp_path / "o.png", "--pixel-size", "2")
    assert code == 0 and "o.png: 24x16" in out, err
    assert "only the first is read" in _error(err)


def test_a_damaged_exif_tag_does_not_stop_the_picture(tmp_path, capsys):
    # ImageOps.exif_transpose rewrote the EXIF without its orientation, and a tag holding text where a number
    # belongs made that raise TypeError (struct.error for others): a traceback for a picture that reads
    (tmp_path / "photo.jpg").write_bytes(damaged_exif_jpeg(_gradient()))  # rotated: shown 32 wide, 48 high
    code, out, err = _run(capsys, "convert", tmp_path / "photo.jpg", tmp_path / "o.png", "--pixel-size", "1")
    assert code == 0 and "o.png: 32x48" in out, err


def test_pillows_warnings_are_one_line_naming_the_file(tmp_path, capsys):
    # Pillow's warning about a damaged tag came in Python's two-line format, naming a line of Pillow's source and
    # not the file (in a folder, which of them?); Pillow gives this one three times
    Image.fromarray(_gradient()).save(tmp_path / "t.tif", tiffinfo={270: "a description of forty characters......"})
    data = bytearray((tmp_path / "t.tif").read_bytes())
    end = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(end + "I", data, 4)[0]
    for n in range(struct.unpack_from(end + "H", data, ifd)[0]):
        if struct.unpack_from(end + "H", data, ifd + 2 + 12 * n)[0] == 270:  # its text now past the file's end
            struct.pack_into(end + "I", data, ifd + 2 + 12 * n + 4, len(data) + 1000)
    (tmp_path / "t.tif").write_bytes(bytes(data))
    code, out, err = _run(capsys, "convert", tmp_path / "t.tif", tmp_path / "o.png", "--pixel-size", "2")
    assert code == 0 and "o.png: 24x16" in out, err
    assert _error(err) == f"pixart convert: warning: {tmp_path / 't.tif'}: Tag data larger than file. Skipping tag 270"


@POSIX
@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="needs /dev/fd")
def test_a_frame_streamed_to_standard_output_is_only_the_frame(tmp_path, png):
    # `pixart rgb565 a.png /dev/stdout | nc pico 80`: the frame was written to a file moved over the link (as
    # root; /dev/stdout itself was replaced) or failed naming a .part file; and the summary line followed the data
    env = dict(os.environ, PYTHONPATH=str(ROOT / "custom_nodes"))
    proc = subprocess.run([sys.executable, "-m", "pixart_nodes", "rgb565", str(png), "/dev/fd/1", "--size", "2x2"],
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == 8 and proc.stderr == b""


def test_an_output_name_near_the_length_limit_is_written(tmp_path, png, capsys):
    # the file was first written as ".NAME.PID.part", 12 bytes longer than NAME: a name of 244..255 bytes, which
    # the disk takes (prompt-made names of generated pictures reach it), failed with "File name too long"
    name = "a" * (255 - len(".png")) + ".png"
    code, _, err = _run(capsys, "-q", "convert", png, tmp_path / name, "--pixel-size", "2")
    assert code == 0, err
    assert Image.open(tmp_path / name).size == (24, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", name])


@POSIX
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path):
    # `pixart palettes --json | head`: "pixart palettes: error: [Errno 32] Broken pipe", exit 2
    env = dict(os.environ, PYTHONPATH=str(ROOT / "custom_nodes"))
    proc = subprocess.Popen([sys.executable, "-m", "pixart_nodes", "palettes", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout.read(10) == b'[\n {\n  "na'  # more than a pipe holds follows: the writer is waiting
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == b"", err
