"""The ``pixart`` command's gaps closed late: ``-`` for standard input and output, notices for options that have
nothing to do. Each test failed on the code it was written against (the ``./-`` one guards what already worked)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixart_nodes import cli
from tests.support.cli import gradient as _gradient

ROOT = Path(__file__).resolve().parents[1]


def _run(capsysbinary, monkeypatch, *argv: object, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """(exit status, stdout as bytes, stderr) of `pixart ARGV`, with ``stdin`` piped in."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


@pytest.fixture
def sprite(tmp_path: Path) -> Path:
    """A 16x16 picture of four colours with an enlarged 2x2 grid: every command has something to do on it."""
    art = np.random.default_rng(3).integers(0, 4, (8, 8))
    pal = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 77], [41, 173, 255]], np.uint8)
    path = tmp_path / "sprite.png"
    Image.fromarray(np.repeat(np.repeat(pal[art], 2, 0), 2, 1)).save(path)
    return path


# --- `-` as IN and OUT -------------------------------------------------------------------------------------------

# (command, options, suffix of the file it writes)
_SINGLE = [
    ("convert", ["--pixel-size", "2", "--palette", "pico-8"], ".png"),
    ("cleanup", [], ".png"),
    ("snap", [], ".png"),
    ("rgb565", ["--size", "8x8"], ".bin"),
]


@pytest.mark.parametrize("command,options,suffix", _SINGLE, ids=[c for c, _, _ in _SINGLE])
def test_dash_out_writes_the_files_bytes_to_stdout_and_the_summary_to_stderr(sprite, tmp_path, capsysbinary,
                                                                             monkeypatch, command, options, suffix):
    # `-` was taken as a file name: "-: cannot write a name without a suffix", or (rgb565) a file called "-"
    monkeypatch.chdir(tmp_path)
    file_out = tmp_path / f"o{suffix}"
    code, _, err = _run(capsysbinary, monkeypatch, command, sprite, file_out, *options)
    assert code == 0, err
    code, out, err = _run(capsysbinary, monkeypatch, command, sprite, "-", *options)
    assert code == 0, err
    assert out == file_out.read_bytes()  # stdout is the image alone
    assert err.startswith("standard output: "), err  # the summary line, where it does not join the image
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("command,options,suffix", _SINGLE, ids=[c for c, _, _ in _SINGLE])
def test_dash_in_reads_the_image_from_stdin(sprite, tmp_path, capsysbinary, monkeypatch, command, options, suffix):
    # "-: no such file or folder"
    code, _, err = _run(capsysbinary, monkeypatch, command, sprite, tmp_path / f"file{suffix}", *options)
    assert code == 0, err
    code, out, err = _run(capsysbinary, monkeypatch, command, "-", tmp_path / f"piped{suffix}", *options,
                          stdin=sprite.read_bytes())
    assert code == 0, err
    assert (tmp_path / f"piped{suffix}").read_bytes() == (tmp_path / f"file{suffix}").read_bytes()
    assert out.decode().startswith(str(tmp_path / f"piped{suffix}"))  # no image on stdout: the summary is there


def test_rgb565_preview_and_palette_read_stdin(sprite, tmp_path, capsysbinary, monkeypatch):
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "rgb565", sprite, tmp_path / "f.bin", "--size", "8x8")
    assert code == 0, err
    frame = (tmp_path / "f.bin").read_bytes()
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "rgb565-preview", tmp_path / "f.bin", tmp_path / "f.png",
                        "--size", "8x8")
    assert code == 0, err
    code, out, err = _run(capsysbinary, monkeypatch, "-q", "rgb565-preview", "-", "-", "--size", "8x8", stdin=frame)
    assert code == 0 and out == (tmp_path / "f.png").read_bytes(), err
    # a frame of the wrong size is worded as the file's is
    code, _, err = _run(capsysbinary, monkeypatch, "rgb565-preview", "-", "-", "--size", "4x4", stdin=frame)
    assert code == 2 and "standard input: data: expected 32 bytes for 4x4 RGB565, got more" in err, err
    code, want, _ = _run(capsysbinary, monkeypatch, "palette", sprite, "--colors", "4")
    code, out, err = _run(capsysbinary, monkeypatch, "palette", "-", "--colors", "4", stdin=sprite.read_bytes())
    assert code == 0 and out == want, err


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("jpg", b"\xff\xd8"), ("webp", b"RIFF"),
                                       ("gif", b"GIF8"), ("bmp", b"BM")])
def test_format_picks_stdouts_format(sprite, tmp_path, capsysbinary, monkeypatch, fmt, magic):
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "convert", sprite, tmp_path / f"o.{fmt}", "--pixel-size", "2")
    assert code == 0, err
    code, out, err = _run(capsysbinary, monkeypatch, "-q", "convert", "-", "-", "--pixel-size", "2", "--format", fmt,
                          stdin=sprite.read_bytes())
    assert code == 0 and err == "", err
    assert out.startswith(magic) and out == (tmp_path / f"o.{fmt}").read_bytes()


def test_indexed_to_stdout_follows_format(sprite, tmp_path, capsysbinary, monkeypatch):
    code, out, err = _run(capsysbinary, monkeypatch, "-q", "convert", sprite, "-", "--colors", "4", "--indexed")
    assert code == 0, err
    assert Image.open(io.BytesIO(out)).mode == "P"
    code, _, err = _run(capsysbinary, monkeypatch, "convert", sprite, "-", "--colors", "4", "--indexed",
                        "--format", "jpg")
    assert code == 2 and "standard output: --indexed writes PNG or GIF (--format png or gif)" in err, err


def test_a_folder_into_stdout_is_one_animated_gif_or_refused(tmp_path, capsysbinary, monkeypatch):
    frames = tmp_path / "walk"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(_gradient(8, 8), i, 1)).save(frames / f"f{i}.png")
    code, out, err = _run(capsysbinary, monkeypatch, "convert", frames, "-", "--format", "gif", "--palette", "pico-8")
    assert code == 0, err
    assert getattr(Image.open(io.BytesIO(out)), "n_frames", 1) == 3
    assert err.startswith("standard output: 3 frames 8x8"), err
    code, out, err = _run(capsysbinary, monkeypatch, "convert", frames, "-", "--palette", "pico-8")
    assert code == 2 and out == b""
    assert f"{frames}: IN is a folder; standard output takes one image (--format gif: one animated GIF)" in err, err
    code, out, err = _run(capsysbinary, monkeypatch, "cleanup", frames, "-")
    assert code == 2 and f"{frames}: IN is a folder; standard output takes one image" in err, err


@pytest.mark.parametrize("out", ["outdir/", "existing"])
def test_stdin_into_a_folder_is_refused(tmp_path, sprite, capsysbinary, monkeypatch, out):
    (tmp_path / "existing").mkdir()
    code, _, err = _run(capsysbinary, monkeypatch, "convert", "-", tmp_path / out if out == "existing" else
                        f"{tmp_path}/{out}", "--pixel-size", "2", stdin=sprite.read_bytes())
    assert code == 2 and "standard input has no name to give a file in the folder" in err, err
    assert not (tmp_path / "outdir").exists()


def test_format_is_refused_where_the_suffix_gives_it(sprite, tmp_path, capsysbinary, monkeypatch):
    code, _, err = _run(capsysbinary, monkeypatch, "convert", sprite, tmp_path / "o.png", "--pixel-size", "2",
                        "--format", "jpg")
    assert code == 2 and "--format: only for OUT - (standard output); a file's format comes from its suffix" in err
    assert not (tmp_path / "o.png").exists()


def test_snap_cannot_put_the_image_and_the_json_both_on_stdout(sprite, capsysbinary, monkeypatch):
    code, out, err = _run(capsysbinary, monkeypatch, "snap", sprite, "-", "--json", "-")
    assert code == 2 and out == b"" and "--json -: standard output carries the image (OUT -)" in err, err


def test_snap_json_file_with_stdin_and_stdout(sprite, tmp_path, capsysbinary, monkeypatch):
    code, out, err = _run(capsysbinary, monkeypatch, "-q", "snap", "-", "-", "--json", tmp_path / "g.json",
                          stdin=sprite.read_bytes())
    assert code == 0, err
    assert Image.open(io.BytesIO(out)).size == (8, 8)
    assert '"detected": true' in (tmp_path / "g.json").read_text()


def test_image_bytes_are_not_written_to_a_terminal(sprite, capsysbinary, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = _run(capsysbinary, monkeypatch, "convert", sprite, "-", "--pixel-size", "2")
    assert code == 2 and out == b""
    assert "OUT -: standard output is a terminal; redirect it to a file or a pipe" in err, err


@pytest.mark.parametrize("data,said", [(b"", "standard input: empty (nothing was piped in)"),
                                       (b"not a picture", "standard input: not a readable image")])
def test_unreadable_stdin_names_standard_input_not_a_temporary_file(capsysbinary, monkeypatch, tmp_path, data, said):
    code, _, err = _run(capsysbinary, monkeypatch, "convert", "-", tmp_path / "o.png", "--pixel-size", "2",
                        stdin=data)
    assert code == 2 and said in err and "/tmp" not in err.replace(str(tmp_path), ""), err


def test_stdin_warnings_name_standard_input(tmp_path, capsysbinary, monkeypatch):
    frames = [Image.fromarray(np.roll(_gradient(8, 8), i, 1)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "convert", "-", tmp_path / "o.png", "--pixel-size", "2",
                        stdin=buf.getvalue())
    assert code == 0, err
    assert err.strip() == "pixart convert: warning: standard input: 3 frames; only the first is read", err


def test_dot_slash_dash_still_names_a_file(sprite, tmp_path, capsysbinary, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_bytes(sprite.read_bytes())
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "convert", "./-", "o.png", "--pixel-size", "2")
    assert code == 0 and (tmp_path / "o.png").exists(), err


def test_a_real_pipe(sprite, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "custom_nodes") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "pixart_nodes", "convert", "-", "-", "--pixel-size", "2",
                           "--palette", "pico-8"], input=sprite.read_bytes(), capture_output=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(io.BytesIO(proc.stdout)).size == (8, 8)
    assert proc.stderr.decode().startswith("standard output: 8x8"), proc.stderr
    assert list(tmp_path.iterdir()) == [sprite]


# --- options with nothing to do ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,notice", [
    (["--palette", "pico-8", "--upscale"], "--upscale: nothing is pixelated (no --pixel-size or --size); ignored"),
    (["--colors", "4", "--shared-palette"], "--shared-palette: IN is one image, not a folder; ignored"),
    (["--palette", "pico-8", "--pixel-size", "2", "--no-shared-palette"],
     "--no-shared-palette: only with --colors, whose extracted palette it shares; ignored"),
])
def test_an_option_with_nothing_to_do_is_named_on_stderr(sprite, tmp_path, capsysbinary, monkeypatch, options,
                                                         notice):
    code, out, err = _run(capsysbinary, monkeypatch, "-q", "convert", sprite, tmp_path / "o.png", *options)
    assert code == 0 and (tmp_path / "o.png").exists(), err
    assert err.strip() == f"pixart convert: warning: {notice}", err


def test_a_shared_palette_on_a_folder_says_nothing(tmp_path, capsysbinary, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(_gradient(8, 8), i, 0)).save(src / f"{i}.png")
    code, _, err = _run(capsysbinary, monkeypatch, "-q", "convert", src, tmp_path / "out", "--colors", "4",
                        "--shared-palette", "--pixel-size", "2", "--upscale")
    assert code == 0 and err == "", err


def test_a_reader_that_leaves_stops_the_command_quietly(sprite, capsysbinary, monkeypatch):
    # `pixart convert a.png - | head -c 8`: the broken pipe was caught as a failed write of the image, "error:
    # standard output: [Errno 32] Broken pipe" and exit 2, where the other commands stop quietly with 141
    class Gone(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(Gone())))
    code, _, err = _run(capsysbinary, monkeypatch, "convert", sprite, "-", "--pixel-size", "2")
    assert code == 141 and err == "", err
